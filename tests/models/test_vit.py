"""ViT encoder: interface, hidden states, logical axes, exact GELU, bf16 compute."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxav.models.vit import ViTEncoder

B, N, D, DEPTH = 2, 10, 32, 2


@pytest.fixture(scope="module")
def setup():
    enc = ViTEncoder(width=D, depth=DEPTH, num_heads=4, mlp_ratio=2.0)
    x = jax.random.normal(jax.random.key(0), (B, N, D))
    variables = enc.init(jax.random.key(1), x, train=False)
    return enc, x, variables


def test_returns_final_and_every_layer(setup):
    enc, x, variables = setup
    final, hidden = enc.apply(variables, x, train=False)
    assert final.shape == (B, N, D) and final.dtype == jnp.float32
    assert len(hidden) == DEPTH and all(h.shape == (B, N, D) for h in hidden)
    # final = LayerNorm(last hidden)
    ln = nn.LayerNorm(epsilon=1e-6)
    norm_params = {"params": nn.unbox(variables["params"]["norm"])}
    np.testing.assert_allclose(final, ln.apply(norm_params, hidden[-1]), atol=1e-5)
    assert set(variables["params"]) == {"block_0", "block_1", "norm"}


def test_logical_axes(setup):
    _, _, variables = setup
    p = variables["params"]["block_0"]
    assert p["attn"]["query"]["kernel"].names == ("embed", "heads", "kv")
    assert p["attn"]["out"]["kernel"].names == ("heads", "kv", "embed")
    assert p["mlp"]["fc1"]["kernel"].names == ("embed", "mlp")
    assert p["mlp"]["fc2"]["kernel"].names == ("mlp", "embed")
    spec = nn.get_partition_spec(variables)
    assert spec["params"]["block_0"]["mlp"]["fc1"]["kernel"] == jax.sharding.PartitionSpec(
        "embed", "mlp"
    )


def test_dropout_only_in_training(setup):
    _, x, variables = setup
    enc = ViTEncoder(width=D, depth=DEPTH, num_heads=4, mlp_ratio=2.0, dropout=0.5)
    a, _ = enc.apply(variables, x, train=False)
    b, _ = enc.apply(variables, x, train=False)
    np.testing.assert_array_equal(a, b)
    c, _ = enc.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(a, c)


def test_exact_gelu_default(setup):
    """Default uses erf GELU; the tanh approximation gives (slightly) different outputs."""
    enc, x, variables = setup
    exact, _ = enc.apply(variables, x, train=False)
    approx, _ = ViTEncoder(D, DEPTH, 4, 2.0, approximate_gelu=True).apply(variables, x, train=False)
    assert not np.allclose(exact, approx, atol=1e-7)


def test_bf16_compute_fp32_params(setup):
    _, x, variables = setup
    enc = ViTEncoder(D, DEPTH, 4, 2.0, dtype=jnp.bfloat16)
    params = enc.init(jax.random.key(1), x, train=False)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(nn.unbox(params)))
    final, hidden = enc.apply(variables, x, train=False)
    assert final.dtype == jnp.bfloat16 and hidden[0].dtype == jnp.bfloat16
    ref, _ = setup[0].apply(variables, x, train=False)
    np.testing.assert_allclose(final.astype(jnp.float32), ref, atol=0.15)


def test_remat_same_values_and_grads(setup):
    enc, x, variables = setup
    remat = ViTEncoder(D, DEPTH, 4, 2.0, remat=True)

    def loss(model, v):
        return jnp.sum(model.apply(v, x, train=False)[0] ** 2)

    g1 = jax.grad(lambda v: loss(enc, v))(variables)
    g2 = jax.grad(lambda v: loss(remat, v))(variables)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
