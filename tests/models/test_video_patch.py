"""Video patch / tubelet embedding, patchify round trip and space-time positional embeddings."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxav.models.video_patch import (
    VideoPatchEmbed,
    VideoPosEmbed,
    sincos_3d,
    video_grid,
    video_patchify,
    video_unpatchify,
)


def test_grid_and_errors():
    assert video_grid(4, 16, 16, 2, (8, 8)) == (2, 2, 2)
    assert video_grid(8, 224, 224, 1, (16, 16)) == (8, 14, 14)
    assert video_grid(5, 33, 40, 2, (8, 8)) == (2, 4, 5)  # leftovers dropped
    with pytest.raises(ValueError, match="smaller than one tubelet"):
        video_grid(1, 16, 16, 2, (8, 8))


@pytest.mark.parametrize("tubelet", [1, 2])
def test_patchify_round_trip_and_order(tubelet):
    rng = np.random.default_rng(0)
    video = rng.standard_normal((2, 4, 16, 24, 3)).astype(np.float32)
    patches = video_patchify(jnp.asarray(video), tubelet, (8, 8))
    grid = video_grid(4, 16, 24, tubelet, (8, 8))
    assert patches.shape == (2, np.prod(grid), tubelet * 8 * 8 * 3)
    np.testing.assert_array_equal(video_unpatchify(patches, grid, tubelet, (8, 8)), video)
    # Token (t, h, w), index (t * H_p + h) * W_p + w: frames t * tubelet.., pixels (h * 8, w * 8)..
    t, h, w = grid[0] - 1, 1, 2
    idx = (t * grid[1] + h) * grid[2] + w
    block = video[0, t * tubelet : (t + 1) * tubelet, h * 8 : h * 8 + 8, w * 8 : w * 8 + 8]
    np.testing.assert_array_equal(patches[0, idx], block.reshape(-1))


@pytest.mark.parametrize("tubelet", [1, 2])
def test_embed_is_a_linear_map_of_each_tubelet(tubelet):
    rng = np.random.default_rng(1)
    video = jnp.asarray(rng.standard_normal((2, 4, 16, 16, 3)), jnp.float32)
    module = VideoPatchEmbed(32, tubelet, (8, 8))
    params = nn.unbox(module.init(jax.random.key(0), video))["params"]
    tokens = module.apply({"params": params}, video)
    n = (4 // tubelet) * 4
    assert tokens.shape == (2, n, 32)
    kernel = params["proj"]["kernel"].reshape(-1, 32)  # (t, y, x, c) flattened, as patchify
    expected = video_patchify(video, tubelet, (8, 8)) @ kernel + params["proj"]["bias"]
    np.testing.assert_allclose(tokens, expected, atol=1e-4)


def test_sincos_3d_separable_and_distinct():
    emb = sincos_3d((2, 3, 4), 32)
    assert emb.shape == (24, 32)
    grid = emb.reshape(2, 3, 4, 32)
    # time channels depend on t only; height channels on h only; width channels on w only.
    np.testing.assert_array_equal(
        grid[:, :1, :1, :8], np.broadcast_to(grid[:, :1, :1, :8], (2, 1, 1, 8))
    )
    np.testing.assert_array_equal(
        grid[0, :, :, :8], np.broadcast_to(grid[0, :1, :1, :8], (3, 4, 8))
    )
    np.testing.assert_array_equal(
        grid[:, 0, :, 8:20], np.broadcast_to(grid[:1, 0, :1, 8:20], (2, 4, 12))
    )
    assert len({tuple(np.round(r, 5)) for r in emb}) == 24  # every position distinct


@pytest.mark.parametrize("kind", ["sincos", "learned"])
def test_pos_embed_any_grid(kind):
    module = VideoPosEmbed(32, (2, 4, 4), kind)
    variables = module.init(jax.random.key(0), (2, 4, 4))
    ref = module.apply(variables, (2, 4, 4))
    assert ref.shape == (1, 32, 32)
    other = module.apply(variables, (4, 2, 3))  # more frames, smaller frames
    assert other.shape == (1, 24, 32)
    assert np.all(np.isfinite(other))
    if kind == "learned":
        p = nn.unbox(variables)["params"]
        assert p["space"].shape == (4, 4, 32) and p["time"].shape == (2, 32)
        expected = p["time"][:, None, None] + p["space"][None]
        np.testing.assert_allclose(ref[0], expected.reshape(32, 32), atol=1e-6)
