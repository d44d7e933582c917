"""The pure train step and sharded state initialisation.

`make_train_step` returns `train_step(state, batch) -> (state, metrics)`: a pure function, jitted
once by `jit_train_step` with in/out shardings and the state donated. Non-finite losses or
gradients skip the update (params and optimizer state unchanged) and are counted in the state.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxav.train import sharding as shd
from jaxav.train.state import TrainState


def dummy_batch(spec, batch_size: int) -> dict:
    """A batch of zeros with the shapes the pipeline produces for `spec` (for init by shape)."""
    batch = {
        "audio": np.zeros((batch_size, spec.num_frames, spec.num_mel_bins), np.float32),
        "label": np.zeros((batch_size,), np.int32),
    }
    if spec.with_video:
        batch["video"] = np.zeros(
            (batch_size, spec.video_frames, spec.video_size, spec.video_size, 3), np.float32
        )
        batch["has_video"] = np.ones((batch_size,), bool)
    return batch


def init_state(
    model: nn.Module, tx: optax.GradientTransformation, mesh, init_batch: dict, seed: int
) -> tuple[TrainState, TrainState]:
    """Initialises the state already sharded: shapes first, then a jitted init with out_shardings.

    Parameter shardings come from their logical axis names; optimizer moments inherit them (optax
    maps over the logically-partitioned boxes). No device ever holds the unsharded model.

    Returns:
      (state, state_shardings).
    """

    def init_boxed(rng):
        k_params, k_mask, k_drop, k_state = jax.random.split(rng, 4)
        variables = model.init(
            {"params": k_params, "mask": k_mask, "dropout": k_drop}, init_batch, train=False
        )
        params = variables["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            rng=k_state,
            nonfinite_total=jnp.zeros((), jnp.int32),
            nonfinite_run=jnp.zeros((), jnp.int32),
        )

    rng = jax.random.PRNGKey(seed)
    abstract_boxed = jax.eval_shape(init_boxed, rng)
    state_shardings = shd.logical_shardings(abstract_boxed, mesh)
    init_fn = lambda r: nn.unbox(init_boxed(r))
    state = jax.jit(init_fn, out_shardings=state_shardings)(rng)
    return state, state_shardings


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    *,
    grad_accum_steps: int = 1,
    learning_rate_fn=None,
):
    """Builds the pure `train_step(state, batch) -> (state, metrics)`.

    Args:
      model: a module whose `apply(..., batch, train=True, rngs=...)` returns (loss, metrics).
      tx: the optimizer.
      grad_accum_steps: split the batch into this many micro-batches, summing gradients.
      learning_rate_fn: schedule, only to report `lr` in the metrics.
    """

    def loss_fn(params, batch, rng):
        k_mask, k_drop = jax.random.split(rng)
        loss, metrics = model.apply(
            {"params": params}, batch, train=True, rngs={"mask": k_mask, "dropout": k_drop}
        )
        return loss, metrics

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def compute_grads(params, batch, rng):
        if grad_accum_steps == 1:
            return grad_fn(params, batch, rng)
        micro = jax.tree.map(
            lambda x: x.reshape((grad_accum_steps, x.shape[0] // grad_accum_steps) + x.shape[1:]),
            batch,
        )

        def body(carry, inputs):
            mb, i = inputs
            (loss, metrics), grads = grad_fn(params, mb, jax.random.fold_in(rng, i))
            acc = jax.tree.map(jnp.add, carry, (loss, metrics, grads))
            return acc, None

        zeros = jax.tree.map(
            jnp.zeros_like,
            jax.eval_shape(lambda: grad_fn(params, jax.tree.map(lambda x: x[0], micro), rng)),
        )
        (loss, metrics, grads), _ = jax.lax.scan(
            body, (zeros[0][0], zeros[0][1], zeros[1]), (micro, jnp.arange(grad_accum_steps))
        )
        scale = 1.0 / grad_accum_steps
        return (loss * scale, jax.tree.map(lambda m: m * scale, metrics)), jax.tree.map(
            lambda g: g * scale, grads
        )

    def train_step(state: TrainState, batch: dict):
        rng = jax.random.fold_in(state.rng, state.step)
        (loss, metrics), grads = compute_grads(state.params, batch, rng)
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
        run = jnp.where(finite, 0, state.nonfinite_run + 1)
        new_state = state.replace(
            step=state.step + 1,
            params=keep(new_params, state.params),
            opt_state=keep(new_opt_state, state.opt_state),
            nonfinite_total=state.nonfinite_total + (~finite).astype(jnp.int32),
            nonfinite_run=run,
        )
        metrics = dict(metrics)
        metrics.update(
            loss=loss, grad_norm=grad_norm, finite=finite.astype(jnp.float32), nonfinite_run=run
        )
        if learning_rate_fn is not None:
            metrics["lr"] = learning_rate_fn(state.step)
        return new_state, metrics

    return train_step


def jit_train_step(train_step, state_shardings, mesh):
    """jit once with in/out shardings; the state's buffers are donated."""
    batch_shard = shd.batch_sharding(mesh)
    return jax.jit(
        train_step,
        in_shardings=(state_shardings, batch_shard),
        out_shardings=(state_shardings, shd.replicated(mesh)),
        donate_argnums=(0,),
    )
