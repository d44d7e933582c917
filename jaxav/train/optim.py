"""The optax optimizer from `config.optim`: AdamW, warm-up + cosine schedule, clipping."""

from __future__ import annotations

import jax
import optax


def learning_rate_schedule(optim_config, num_steps: int) -> optax.Schedule:
    """Linear warm-up to `lr` over `warmup_steps` (from lr / (warmup_steps + 1), so the first
    update already moves), then cosine decay to `lr * min_lr_ratio` at `num_steps`."""
    warmup = min(int(optim_config.warmup_steps), max(num_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=optim_config.lr / (warmup + 1),
        peak_value=optim_config.lr,
        warmup_steps=warmup,
        decay_steps=max(num_steps, warmup + 1),
        end_value=optim_config.lr * optim_config.min_lr_ratio,
    )


def decay_mask(params):
    """Weight decay on matrices only (not on biases, norms, tokens or positional tables)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, p: p.ndim >= 2 and not any("pos" in str(k) or "token" in str(k) for k in path),
        params,
    )


def make_optimizer(optim_config, num_steps: int) -> optax.GradientTransformation:
    """clip_by_global_norm -> AdamW(schedule) with decoupled weight decay on matrices."""
    schedule = learning_rate_schedule(optim_config, num_steps)
    parts = []
    if optim_config.clip_norm and optim_config.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(optim_config.clip_norm))
    parts.append(
        optax.adamw(
            schedule,
            b1=optim_config.b1,
            b2=optim_config.b2,
            weight_decay=optim_config.weight_decay,
            mask=decay_mask,
        )
    )
    return optax.chain(*parts)
