"""Tests for jaxav.data.masking: exact counts, determinism, structure of each kind, indices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxav.data import masking as mk

KINDS = mk.MASK_KINDS
BATCH = 32
# (grid, ratio): a square-ish grid, Audio-MAE's 8 x 64 at 0.8, frame patches (F = 1), the edges.
# Every test draws from these (any key), so each kind compiles once per case.
CASES = [((16, 32), 0.5), ((8, 64), 0.8), ((1, 50), 0.5), ((5, 7), 0.0), ((5, 7), 1.0)]


def _masks(kind, grid, ratio, seed=0, **kw):
    """bool[BATCH, F, T] masks for one of CASES."""
    n = grid[0] * grid[1]
    m = mk.make_mask(jax.random.key(seed), kind, BATCH, grid, mk.mask_count(n, ratio), **kw)
    return np.asarray(m).reshape(BATCH, *grid)


def _same_neighbours(sel: np.ndarray) -> float:
    """Mean number of selected 4-neighbours of a selected patch; sel: bool[B, F, T]."""
    pad = np.pad(sel, ((0, 0), (1, 1), (1, 1)))
    count = pad[:, :-2, 1:-1] * 1 + pad[:, 2:, 1:-1] + pad[:, 1:-1, :-2] + pad[:, 1:-1, 2:]
    return float(count[sel].mean())


def _in_full_square(sel: np.ndarray) -> float:
    """Fraction of selected patches lying in some fully selected 2 x 2 square."""
    sq = sel[:, :-1, :-1] & sel[:, 1:, :-1] & sel[:, :-1, 1:] & sel[:, 1:, 1:]
    cover = np.zeros_like(sel)
    for df in (0, 1):
        for dt in (0, 1):
            cover[:, df : df + sq.shape[1], dt : dt + sq.shape[2]] |= sq
    return float(cover[sel].mean())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("grid,ratio", CASES)
def test_exact_count_shape_dtype(kind, grid, ratio):
    n = grid[0] * grid[1]
    m = mk.make_mask(jax.random.key(1), kind, BATCH, grid, mk.mask_count(n, ratio))
    assert m.shape == (BATCH, n) and m.dtype == jnp.bool_
    assert (np.asarray(m).sum(axis=1) == mk.mask_count(n, ratio)).all()


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_and_rng_dependent(kind):
    grid, ratio = CASES[0]
    a, b, c = (
        _masks(kind, grid, ratio, 3),
        _masks(kind, grid, ratio, 3),
        _masks(kind, grid, ratio, 4),
    )
    np.testing.assert_array_equal(a, b)
    assert (a != c).any(axis=(1, 2)).all()  # every example changes with the key
    assert len({row.tobytes() for row in a}) == BATCH  # examples differ within a batch


def test_legacy_uint32_key():
    m = mk.make_mask(jax.random.PRNGKey(3), "random", BATCH, (16, 32), 256)
    assert (np.asarray(m).sum(axis=1) == 256).all()


def test_random_is_uniform_over_positions():
    grid, ratio = CASES[0]
    freq = np.mean([_masks("random", grid, ratio, seed).mean(axis=0) for seed in range(40)], 0)
    assert np.abs(freq - 0.5).max() < 5 * np.sqrt(0.25 / (40 * BATCH))


def test_cluster_masks_are_clumped():
    grid, ratio = CASES[0]
    cluster, random = _masks("cluster", grid, ratio), _masks("random", grid, ratio)
    nb_c, nb_r = _same_neighbours(cluster), _same_neighbours(random)
    assert nb_r == pytest.approx(ratio * 3.85, abs=0.2)  # ~ ratio x mean degree
    assert nb_c > nb_r + 1.0, (nb_c, nb_r)
    assert _in_full_square(cluster) > 0.85 > 0.5 > _in_full_square(random)


def test_cluster_factor_sets_block_sides():
    # cluster_factor=1: 3 x 3 blocks only. Nine masked patches form one block whenever the first
    # block lies inside the grid (top-left corner at most 17 of 20 on both axes: ~72 %).
    m = mk.make_mask(jax.random.key(5), "cluster", BATCH, (20, 20), 9, cluster_factor=1)
    m = np.asarray(m).reshape(BATCH, 20, 20)
    spans = [(np.ptp(np.nonzero(r)[0]), np.ptp(np.nonzero(r)[1])) for r in m]
    assert sum(s == (2, 2) for s in spans) >= BATCH // 2


def test_time_freq_masks_whole_rows_and_columns():
    grid, ratio = CASES[1]
    m = _masks("time_freq", grid, ratio)
    count = mk.mask_count(512, ratio)
    kf, kt = mk._time_freq_keep(grid, count)
    assert 0 < kf < 8 and 0 < kt < 64
    full_rows = m.all(axis=2)  # [B, F]
    full_cols = m.all(axis=1)  # [B, T]
    assert (full_rows.sum(axis=1) >= 8 - kf).all()
    assert (full_cols.sum(axis=1) >= 64 - kt).all()
    structured = full_rows[:, :, None] | full_cols[:, None, :]
    in_structure = (m & structured).sum(axis=(1, 2))
    assert (in_structure >= 512 - kf * kt).all()
    assert (in_structure >= 0.9 * count).all()  # dominated by full rows and columns
    assert not _masks("random", grid, ratio).all(axis=2).any()  # random has none


def test_time_freq_frame_patches_mask_time_only():
    grid, ratio = CASES[2]
    m = _masks("time_freq", grid, ratio)
    assert (m.sum(axis=(1, 2)) == 25).all()
    assert len({row.tobytes() for row in m}) > 1


def test_inverse_block_leaves_contiguous_visible_blocks():
    grid, ratio = CASES[0]
    visible = ~_masks("inverse_block", grid, ratio)
    visible_random = ~_masks("random", grid, ratio)
    assert _same_neighbours(visible) > _same_neighbours(visible_random) + 1.2
    assert _in_full_square(visible) > 0.85 > 0.5 > _in_full_square(visible_random)
    # Visible patches touch the grid's edges about as often as elsewhere (overhanging blocks).
    edge = np.concatenate([visible[:, 0], visible[:, -1]], axis=1).mean()
    assert abs(edge - (1 - ratio)) < 0.12


def test_make_mask_and_split_under_jit():
    grid, ratio = CASES[0]
    count = mk.mask_count(512, ratio)

    @jax.jit
    def masks_and_indices(key):
        m = mk.make_mask(key, "cluster", BATCH, grid, count)
        vis, msk = mk.split_indices(m, num_masked=count)
        return m, vis, msk

    m, vis, msk = masks_and_indices(jax.random.key(0))
    assert vis.shape == (BATCH, 512 - count) and msk.shape == (BATCH, count)
    np.testing.assert_array_equal(np.asarray(m).reshape(BATCH, *grid), _masks("cluster", *CASES[0]))
    # the grid may also be given as a list
    list_grid = mk.make_mask(jax.random.key(0), "cluster", BATCH, list(grid), count)
    np.testing.assert_array_equal(list_grid, m)


def test_split_indices_partitions_positions():
    m = _masks("inverse_block", *CASES[2]).reshape(BATCH, 50)
    vis, msk = mk.split_indices(jnp.asarray(m))
    assert vis.shape == (BATCH, 25) and msk.shape == (BATCH, 25)
    assert vis.dtype == jnp.int32 and msk.dtype == jnp.int32
    vis, msk = np.asarray(vis), np.asarray(msk)
    for b in range(BATCH):
        np.testing.assert_array_equal(np.sort(np.concatenate([vis[b], msk[b]])), np.arange(50))
        assert (np.diff(vis[b]) > 0).all() and (np.diff(msk[b]) > 0).all()
        assert m[b, msk[b]].all() and not m[b, vis[b]].any()


def test_split_indices_errors():
    uneven = jnp.array([[True, False, False], [True, True, False]])
    with pytest.raises(ValueError, match="different numbers"):
        mk.split_indices(uneven)
    with pytest.raises(ValueError, match="num_masked"):
        jax.jit(mk.split_indices)(jnp.zeros((2, 3), bool))


def test_mask_count():
    assert mk.mask_count(512, 0.75) == 384
    assert mk.mask_count(512, 0.8) == 410  # Audio-MAE: 512 - int(512 * 0.2)
    assert mk.mask_count(10, 0.25) == 3  # half rounds up
    assert mk.mask_count(7, 0.0) == 0 and mk.mask_count(7, 1.0) == 7
    with pytest.raises(ValueError):
        mk.mask_count(10, 1.5)


def test_make_mask_validation():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="unknown mask kind"):
        mk.make_mask(key, "checkerboard", 2, (4, 4), 3)
    with pytest.raises(ValueError, match="outside"):
        mk.make_mask(key, "random", 2, (4, 4), 17)
    with pytest.raises(ValueError, match="bad mask shape"):
        mk.make_mask(key, "random", 2, (0, 4), 0)
