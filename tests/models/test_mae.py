"""SSAST and Audio-MAE objectives: loss terms, gradients, training steps, encode, bf16."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxav.config_defaults import base_config
from jaxav.models.audiomae import AudioMAE
from jaxav.models.mae import MaskedAudioModel
from jaxav.models.registry import build_model
from jaxav.models.ssast import SSAST

FRAMES, BINS, WIDTH, DEPTH = 64, 64, 32, 2  # 16 x 16 patches: grid (4, 4), 16 patches


def tiny_config(name: str, **model):
    c = base_config()
    c.data.num_frames, c.data.num_mel_bins = FRAMES, BINS
    c.model.name = name
    c.model.width, c.model.depth, c.model.num_heads, c.model.mlp_ratio = WIDTH, DEPTH, 4, 2.0
    c.model.decoder_width, c.model.decoder_depth, c.model.decoder_heads = 32, 1, 2
    c.mask.kind, c.mask.ratio = "random", 0.5
    for k, v in model.items():
        c.model[k] = v
    return c


def fixed_batch(b=2, t=FRAMES, f=BINS):
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((b, 1, f)) + np.sin(np.arange(t) / 3.0)[None, :, None]
    return {"audio": jnp.asarray(audio, jnp.float32)}


class Setup:
    """A model, its params, a fixed batch and ONE jitted Adam step (compiled once per model)."""

    tx = optax.adam(3e-3)

    def __init__(self, config):
        self.model = build_model(config)
        self.batch = fixed_batch()
        rngs = {"params": jax.random.key(0), "mask": jax.random.key(1)}
        init = jax.jit(lambda r, b: self.model.init(r, b, train=False)["params"])
        self.params = nn.unbox(init(rngs, self.batch))
        self.encode = jax.jit(lambda p, a: self.model.apply({"params": p}, a, method="encode"))

        def loss_fn(params, batch, key):
            return self.model.apply({"params": params}, batch, train=True, rngs={"mask": key})

        self.grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        @jax.jit
        def step(params, opt_state, key):
            (loss, metrics), grads = self.grad_fn(params, self.batch, key)
            updates, opt_state = self.tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss, metrics, grads

        self.step = step
        self.opt_state = self.tx.init(self.params)

    def loss_and_grads(self, key):
        _, _, loss, metrics, grads = self.step(self.params, self.opt_state, key)
        return (loss, metrics), grads


@pytest.fixture(scope="module")
def ssast():
    return Setup(tiny_config("ssast", num_cls_tokens=2))


@pytest.fixture(scope="module")
def audiomae():
    return Setup(tiny_config("audiomae", num_cls_tokens=1))


@pytest.fixture(params=["ssast", "audiomae"])
def setup(request):
    return request.getfixturevalue(request.param)


def test_param_tree(ssast, audiomae):
    assert isinstance(ssast.model, SSAST) and isinstance(audiomae.model, AudioMAE)
    assert set(ssast.params) == {
        "patch_embed", "pos_embed", "cls_token", "mask_embed", "encoder", "gen_head", "disc_head"
    }  # fmt: skip
    assert ssast.params["cls_token"].shape == (1, 2, WIDTH)
    assert ssast.params["pos_embed"]["table"].shape == (4, 4, WIDTH)  # learned (SSAST default)
    assert set(audiomae.params) == {
        "patch_embed",
        "cls_token",
        "encoder",
        "decoder_embed",
        "mask_token",
        "decoder",
        "decoder_pred",
    }  # fmt: skip  (sin-cos positions: no params)


def test_loss_terms_finite(ssast, audiomae):
    (loss, m), _ = ssast.loss_and_grads(jax.random.key(3))
    assert set(m) == {"loss", "nce", "mse", "acc"}
    assert all(v.dtype == jnp.float32 and v.shape == () for v in m.values())
    assert np.isfinite(float(loss)) and float(m["nce"]) > 0 and float(m["mse"]) > 0
    np.testing.assert_allclose(loss, 1.0 * m["nce"] + 10.0 * m["mse"], rtol=1e-6)
    assert 0.0 <= float(m["acc"]) <= 1.0
    # 8 masked patches of 16: chance-level InfoNCE is about log(8)
    assert 0.5 * np.log(8) < float(m["nce"]) < 20.0
    (loss, m), _ = audiomae.loss_and_grads(jax.random.key(3))
    assert set(m) == {"loss", "mse"} and np.isfinite(float(loss))


def test_every_param_gets_gradient(setup):
    _, grads = setup.loss_and_grads(jax.random.key(4))
    norms = {jax.tree_util.keystr(p): float(jnp.linalg.norm(g)) for p, g in
             jax.tree_util.tree_leaves_with_path(grads)}  # fmt: skip
    zero = [k for k, v in norms.items() if not (np.isfinite(v) and v > 0)]
    assert not zero, zero


def test_adam_steps_lower_loss(setup):
    key = jax.random.key(5)  # same mask every step: a fixed problem
    params, opt_state = setup.params, setup.opt_state
    losses = []
    for _ in range(9):
        params, opt_state, loss, _, _ = setup.step(params, opt_state, key)
        losses.append(float(loss))
    assert losses[-1] < 0.9 * losses[0], losses


def test_audiomae_encoder_sees_only_visible_tokens(audiomae):
    @jax.jit
    def run(params, batch):
        return audiomae.model.apply(
            {"params": params},
            batch,
            train=True,
            rngs={"mask": jax.random.key(6)},
            capture_intermediates=lambda mdl, method: mdl.name == "encoder",
        )[1]

    state = run(audiomae.params, audiomae.batch)
    (final, hidden) = state["intermediates"]["encoder"]["__call__"][0]
    # 16 patches, 8 masked -> 8 visible + 1 cls token
    assert final.shape == (2, 8 + 1, WIDTH)
    assert len(hidden) == DEPTH


@pytest.mark.parametrize("frames", [FRAMES, 32, 128])
def test_encode_keys_shapes_other_lengths(ssast, audiomae, frames):
    audio = fixed_batch(t=frames)["audio"]
    n = (BINS // 16) * (frames // 16)
    for s, cls in [(ssast, True), (audiomae, True)]:
        out = s.encode(s.params, audio)
        expected = {f"layer_{i}" for i in (1, 2)} | ({f"cls_{i}" for i in (1, 2)} if cls else set())
        assert set(out) == expected
        assert out["layer_1"].shape == (2, n, WIDTH) and out["layer_1"].dtype == jnp.float32
        assert out["cls_2"].shape == (2, WIDTH)
        assert all(bool(jnp.all(jnp.isfinite(v))) for v in out.values())


class _Identity(nn.Module):
    """Encoder stand-in: returns its input as final and only hidden state."""

    @nn.compact
    def __call__(self, x, *, train):
        return x, (x,)


@pytest.mark.parametrize("position", ["start", "middle"])
def test_cls_tokens_inserted_and_removed(position):
    model = MaskedAudioModel(
        encoder=_Identity(), width=8, ref_grid=(2, 3), num_cls_tokens=2, cls_position=position,
        pos_embed_kind="sincos",
    )  # fmt: skip
    audio = jax.random.normal(jax.random.key(0), (1, 48, 32))
    params = model.init(jax.random.key(1), audio, method="encode")["params"]
    out = model.apply({"params": params}, audio, method="encode")

    def tokens(mdl, a):
        x, pos, _ = mdl.embed_patches(a)
        return x + pos

    expected = model.apply({"params": params}, audio, method=tokens)
    np.testing.assert_allclose(out["layer_1"], expected, atol=1e-6)
    np.testing.assert_allclose(out["cls_1"][0], nn.unbox(params["cls_token"])[0].mean(0), atol=1e-6)


def test_bf16_compute_fp32_params():
    model = build_model(tiny_config("audiomae", dtype="bfloat16"))
    batch = fixed_batch()
    rngs = {"params": jax.random.key(0), "mask": jax.random.key(1)}
    variables = jax.jit(lambda r, b: model.init(r, b, train=False))(rngs, batch)
    params = nn.unbox(variables["params"])
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))

    def loss_fn(p):
        return model.apply({"params": p}, batch, train=True, rngs={"mask": jax.random.key(7)})[0]

    # The bf16 graph really runs in bf16 (the captured encoder output), loss comes out fp32.
    _, state = jax.jit(
        lambda p: model.apply(
            {"params": p}, batch, train=True, rngs={"mask": jax.random.key(7)},
            capture_intermediates=lambda mdl, method: mdl.name == "encoder",
        )
    )(params)  # fmt: skip
    assert state["intermediates"]["encoder"]["__call__"][0][0].dtype == jnp.bfloat16
    loss = jax.jit(loss_fn)(params)
    assert loss.dtype == jnp.float32 and np.isfinite(float(loss))
    grads = jax.eval_shape(jax.grad(loss_fn), params)  # traced, not compiled
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))


@pytest.mark.parametrize(
    "name,kind,size,stride",
    [
        ("ssast", "cluster", (16, 16), (16, 16)),
        ("ssast", "time_freq", (16, 16), (10, 10)),  # AST-style overlapping patches
        ("ssast", "random", (64, 2), (64, 2)),  # SSAST frame patches (all bins x 2 frames)
        ("audiomae", "inverse_block", (16, 16), (16, 16)),
        ("audiomae", "time_freq", (16, 16), (8, 8)),
    ],
)
def test_mask_kinds_and_patch_shapes_trace(name, kind, size, stride):
    """Every mask kind and patch geometry gives a scalar float32 loss (traced, not compiled)."""
    c = tiny_config(name, patch_size=size, patch_stride=stride)
    c.mask.kind, c.mask.ratio = kind, 0.75
    model = build_model(c)
    batch = fixed_batch()
    rngs = {"params": jax.random.key(0), "mask": jax.random.key(1)}

    def loss(b):
        variables = model.init(rngs, b, train=False)
        return model.apply(variables, b, train=True, rngs={"mask": jax.random.key(2)})

    loss_shape, metrics = jax.eval_shape(loss, batch)
    assert loss_shape.shape == () and loss_shape.dtype == jnp.float32
    assert all(m.shape == () for m in metrics.values())
