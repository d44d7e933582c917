"""Patch embedding: grid counts, token order, patchify round trip, positions at other lengths."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxav.models import patch


def test_grid_shape_counts():
    assert patch.grid_shape(1024, 128, (16, 16), (10, 10)) == (12, 101)  # AST overlap
    assert patch.grid_shape(1024, 128, (16, 16)) == (8, 64)  # SSAST patches: 512
    assert patch.grid_shape(1024, 128, (128, 2), (128, 2)) == (1, 512)  # SSAST frames
    with pytest.raises(ValueError):
        patch.grid_shape(8, 128, (16, 16))


@pytest.mark.parametrize(
    "size,stride,frames",
    [((16, 16), (16, 16), 64), ((16, 16), (10, 10), 50), ((128, 2), (128, 2), 8)],
)
def test_embed_token_order_matches_patchify(size, stride, frames):
    """Token n of the conv embedding = the linear map of patchify's patch n (freq-major)."""
    audio = jax.random.normal(jax.random.key(0), (2, frames, 128))
    embed = patch.PatchEmbed(8, size, stride)
    params = embed.init(jax.random.key(1), audio)["params"]
    tokens = embed.apply({"params": params}, audio)
    grid = patch.grid_shape(frames, 128, size, stride)
    assert tokens.shape == (2, grid[0] * grid[1], 8)
    patches = patch.patchify(audio, size, stride)  # [B, N, p_f * p_t]
    kernel = nn.unbox(params["proj"]["kernel"]).reshape(size[0] * size[1], 8)
    expected = patches @ kernel + nn.unbox(params["proj"]["bias"])
    np.testing.assert_allclose(tokens, expected, atol=1e-4)


def test_patchify_order_and_round_trip():
    t, f = 48, 32
    audio = jnp.arange(t * f, dtype=jnp.float32).reshape(1, t, f)
    patches = patch.patchify(audio, (16, 16))
    assert patches.shape == (1, 2 * 3, 256)
    # token index = f_patch * T_patches + t_patch; inside a patch, value (i, j) = bin i, frame j.
    n_t = 3
    for fp, tp in [(0, 0), (0, 2), (1, 0), (1, 2)]:
        block = np.asarray(audio[0, tp * 16 : tp * 16 + 16, fp * 16 : fp * 16 + 16]).T
        np.testing.assert_array_equal(patches[0, fp * n_t + tp], block.reshape(-1))
    np.testing.assert_array_equal(patch.unpatchify(patches, (2, 3), (16, 16)), audio)
    # The general (strided-gather) path agrees with the reshape path when stride = size.
    rnd = jax.random.normal(jax.random.key(0), (2, 40, 24))
    overlap = patch.patchify(rnd, (8, 4), (8, 2))
    assert overlap.shape == (2, 3 * 19, 32)
    np.testing.assert_array_equal(overlap[:, ::2][:, :10], patch.patchify(rnd, (8, 4))[:, :10])


def test_sincos_2d_layout():
    emb = patch.sincos_2d((2, 3), 8)
    assert emb.shape == (6, 8)
    # freq half constant along time, time half constant along freq
    grid = emb.reshape(2, 3, 8)
    np.testing.assert_array_equal(grid[:, 0, :4], grid[:, 2, :4])
    np.testing.assert_array_equal(grid[0, :, 4:], grid[1, :, 4:])
    np.testing.assert_allclose(grid[0, 0], [0, 0, 1, 1, 0, 0, 1, 1], atol=1e-7)


@pytest.mark.parametrize("kind", ["learned", "sincos"])
def test_pos_embed_other_lengths(kind):
    """Set up for 128 frames (8 time patches), embeds 64 and 256 frames with the same params."""
    mod = patch.PosEmbed(16, ref_grid=(8, 8), kind=kind)
    variables = mod.init(jax.random.key(0), (8, 8))
    ref = mod.apply(variables, (8, 8))
    assert ref.shape == (1, 64, 16)
    for frames in (64, 256):
        grid = patch.grid_shape(frames, 128, (16, 16))
        out = mod.apply(variables, grid)
        assert out.shape == (1, grid[0] * grid[1], 16)
        assert bool(jnp.all(jnp.isfinite(out)))
    if kind == "learned":
        table = nn.unbox(variables["params"]["table"])
        np.testing.assert_array_equal(ref[0], table.reshape(64, 16))  # identity at the ref grid
        longer = mod.apply(variables, (8, 16)).reshape(8, 16, 16)
        # linear interpolation stays within the range of the neighbouring stored values
        assert float(longer.max()) <= float(table.max()) + 1e-6
        np.testing.assert_allclose(longer[:, 0], table[:, 0], atol=1e-6)  # edges clamp
    else:
        assert jax.tree.leaves(variables) == []
