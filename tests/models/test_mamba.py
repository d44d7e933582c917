"""Bidirectional Mamba encoder: shapes, causality, scan-impl agreement, grads, logical axes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxav.models.mamba import MambaBlock, MambaEncoder, insert_cls, take_cls

WIDTH, DEPTH, N = 16, 2, 11


@pytest.fixture(scope="module")
def encoder_and_params():
    enc = MambaEncoder(WIDTH, DEPTH, d_state=8, scan_impl="chunked")
    x = jax.random.normal(jax.random.key(0), (2, N, WIDTH))
    return enc, enc.init(jax.random.key(1), x, train=False)["params"], x


def test_shapes(encoder_and_params):
    enc, params, x = encoder_and_params
    final, hidden = enc.apply({"params": params}, x, train=True)
    assert final.shape == (2, N, WIDTH) and final.dtype == jnp.float32
    assert len(hidden) == DEPTH and all(h.shape == (2, N, WIDTH) for h in hidden)
    assert all(h.dtype == jnp.float32 for h in hidden)


def _jacobian(bidirectional: bool) -> np.ndarray:
    """d out[t] / d in[s] summed over channels, [L, L], for one block at random init."""
    block = MambaBlock(WIDTH, d_state=4, bidirectional=bidirectional, scan_impl="sequential")
    x = jax.random.normal(jax.random.key(2), (1, N, WIDTH))
    params = block.init(jax.random.key(3), x)
    # Mixer only (the residual adds the identity on the diagonal).
    f = lambda v: block.apply(params, v[None])[0] - v
    jac = jax.jacobian(f)(x[0])  # [N, W, N, W]
    return np.asarray(jnp.abs(jac).sum(axis=(1, 3)))


def test_forward_block_is_causal():
    jac = _jacobian(False)
    assert np.all(jac[np.triu_indices(N, 1)] == 0.0)  # out[t] does not see in[s > t]
    assert np.all(jac[np.tril_indices(N)] > 0.0)


def test_bidirectional_block_sees_the_future():
    jac = _jacobian(True)
    assert np.all(jac[np.triu_indices(N, 1)] > 0.0)


@pytest.mark.parametrize("impl", ["sequential", "associative", "pallas"])
def test_scan_impls_agree(encoder_and_params, impl):
    enc, params, x = encoder_and_params
    want, _ = enc.apply({"params": params}, x, train=False)
    got, _ = enc.clone(scan_impl=impl).apply({"params": params}, x, train=False)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_gradients_finite_and_bf16(encoder_and_params):
    enc, params, x = encoder_and_params

    def loss(p, v, module):
        final, hidden = module.apply({"params": p}, v, train=True)
        return jnp.mean(final**2) + sum(jnp.mean(h) for h in hidden)

    for module in (enc, enc.clone(dtype=jnp.bfloat16)):
        gp, gx = jax.grad(loss, argnums=(0, 1))(params, x, module)
        leaves = jax.tree.leaves(gp) + [gx]
        assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
        assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(gp))
    full, _ = enc.apply({"params": params}, x, train=False)
    half, _ = enc.clone(dtype=jnp.bfloat16).apply({"params": params}, x, train=False)
    assert half.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(half - full))) < 0.1


def test_logical_axes_and_init():
    enc = MambaEncoder(WIDTH, DEPTH, d_state=8, scan_impl="chunked")
    x = jnp.zeros((1, 5, WIDTH))
    boxed = enc.init(jax.random.key(0), x, train=False)["params"]
    leaves = jax.tree.leaves(boxed, is_leaf=lambda v: isinstance(v, nn.Partitioned))
    assert leaves and all(isinstance(v, nn.Partitioned) for v in leaves)
    assert all(len(v.names) == v.value.ndim for v in leaves)
    names = {a for v in leaves for a in v.names}
    assert {"embed", "mlp", "state", "conv"} <= names
    mixer = nn.unbox(boxed)["layers_0"]["mixer"]
    assert set(mixer) == {"in_proj", "forward", "backward", "out_proj"}
    a_log = mixer["backward"]["A_log"]
    np.testing.assert_allclose(np.exp(a_log), np.broadcast_to(np.arange(1, 9), (2 * WIDTH, 8)))
    dt = jax.nn.softplus(mixer["forward"]["dt_proj"]["bias"])
    assert float(dt.min()) >= 1e-3 * 0.999 and float(dt.max()) <= 1e-1 * 1.001
    np.testing.assert_allclose(mixer["forward"]["D"], 1.0)


@pytest.mark.parametrize("position,index", [("start", 0), ("middle", 3), ("end", 7)])
def test_insert_and_take_cls(position, index):
    tokens = jnp.arange(2 * 7 * 3, dtype=jnp.float32).reshape(2, 7, 3)
    cls = -jnp.ones(3)
    with_cls, got_index = insert_cls(tokens, cls, position)
    assert got_index == index and with_cls.shape == (2, 8, 3)
    c, rest = take_cls(with_cls, got_index)
    np.testing.assert_array_equal(c, -np.ones((2, 3)))
    np.testing.assert_array_equal(rest, tokens)
    with pytest.raises(ValueError):
        insert_cls(tokens, cls, "left")
