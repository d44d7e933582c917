"""Patch masks for masked pretraining, drawn from a JAX rng with static shapes.

A spectrogram of ``grid = (F, T)`` patches (frequency x time) is flattened freq-major: patch
``(f, t)`` has index ``f * T + t``. A mask is ``bool[B, N]`` with ``True`` = masked and exactly
``num_masked`` masked patches in every row, so the models can gather visible and masked tokens
with static shapes (``split_indices``).

Kinds:
- ``random``: a uniform random subset (MAE).
- ``cluster``: SSAST's patch clusters (``gen_maskid_patch``): square blocks of side ``c`` (drawn per
  example from ``[3, 3 + cluster_factor)``) at uniform random top-left corners are added one after
  another until enough patches are covered; the last block is cut at random.
- ``time_freq``: whole time columns and frequency rows (Audio-MAE's time+frequency masking),
  about the same fraction of each, chosen so their union does not exceed ``num_masked``, then
  topped up with random patches.
- ``inverse_block``: inverse block masking (data2vec 2.0 / EAT style): square blocks of side
  ``block_size`` are kept *visible*, added until ``N - num_masked`` patches are visible; the
  rest is masked.

Everything is jit-able with ``kind``, ``batch_size``, ``grid``, ``num_masked`` (and the block
sizes) static.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["MASK_KINDS", "make_mask", "mask_count", "split_indices"]

MASK_KINDS = ("random", "cluster", "time_freq", "inverse_block")


def mask_count(num_patches: int, ratio: float) -> int:
    """Number of masked patches for a mask ratio: ``num_patches * ratio`` rounded (half up).

    Args:
      num_patches: N, patches per example.
      ratio: fraction in [0, 1].

    Returns:
      int in [0, N].
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must be in [0, 1], got {ratio}")
    return min(num_patches, int(math.floor(num_patches * ratio + 0.5)))


def _take_smallest(score: jax.Array, count: int) -> jax.Array:
    """bool[B, N]: True at the ``count`` smallest scores of each row (exactly ``count``)."""
    b, n = score.shape
    if count == 0:
        return jnp.zeros((b, n), bool)
    order = jnp.argsort(score, axis=1)[:, :count]
    return jnp.zeros((b, n), bool).at[jnp.arange(b)[:, None], order].set(True)


def _block_priority(
    rng: jax.Array,
    batch_size: int,
    grid: tuple[int, int],
    num_blocks: int,
    sizes: jax.Array,
    overhang: bool,
) -> jax.Array:
    """float32[B, N] priority: index of the first of ``num_blocks`` random blocks covering a patch
    (``num_blocks`` when none does) plus uniform noise in [0, 1) to order ties at random.

    ``sizes``: int32[B] block side per example; blocks are ``sizes x sizes`` patches, clipped at
    the grid's edges. Top-left corners are uniform over the grid (SSAST), or with ``overhang``
    also over the ``side - 1`` positions before it, so every patch is equally likely covered.
    """
    f_dim, t_dim = grid
    k_f, k_t, k_noise = jax.random.split(rng, 3)
    side = sizes[:, None, None]
    low = 1 - side if overhang else jnp.zeros_like(side)
    top = jax.random.randint(k_f, (batch_size, num_blocks, 1), low, f_dim)
    left = jax.random.randint(k_t, (batch_size, num_blocks, 1), low, t_dim)
    df = jnp.arange(f_dim)[None, None, :] - top  # [B, K, F]
    dt = jnp.arange(t_dim)[None, None, :] - left  # [B, K, T]
    in_f = (df >= 0) & (df < side)
    in_t = (dt >= 0) & (dt < side)
    covered = in_f[:, :, :, None] & in_t[:, :, None, :]  # [B, K, F, T]
    block_id = jnp.arange(num_blocks, dtype=jnp.int32)[None, :, None, None]
    first = jnp.min(jnp.where(covered, block_id, num_blocks), axis=1)  # [B, F, T]
    noise = jax.random.uniform(k_noise, (batch_size, f_dim * t_dim))
    return first.reshape(batch_size, f_dim * t_dim).astype(jnp.float32) + noise


def _num_blocks(count: int, min_area: int, num_patches: int) -> int:
    """Blocks to draw so that random (overlapping, edge-clipped) blocks almost surely cover
    ``count`` patches; any shortfall is filled at random, so this only affects structure."""
    if count == 0:
        return 1
    return max(1, min(4 * num_patches, math.ceil(3 * count / min_area) + 2))


def _time_freq_keep(grid: tuple[int, int], num_masked: int) -> tuple[int, int]:
    """Static numbers of (frequency rows, time columns) left unmasked: about the same kept
    fraction ``sqrt(1 - ratio)`` on both axes, with the masked union ``N - kf * kt`` at most
    ``num_masked``."""
    f_dim, t_dim = grid
    keep = math.sqrt(1.0 - num_masked / (f_dim * t_dim))
    kf, kt = round(f_dim * keep), round(t_dim * keep)
    while f_dim * t_dim - kf * kt > num_masked:
        if kf / f_dim <= kt / t_dim and kf < f_dim:
            kf += 1
        else:
            kt += 1
    return kf, kt


@functools.partial(
    jax.jit,
    static_argnames=("kind", "batch_size", "grid", "num_masked", "cluster_factor", "block_size"),
)
def _make_mask(rng, kind, batch_size, grid, num_masked, cluster_factor, block_size):
    f_dim, t_dim = grid
    n = f_dim * t_dim
    if kind == "random":
        score = jax.random.uniform(rng, (batch_size, n))
        return _take_smallest(score, num_masked)
    if kind == "cluster":
        k_size, k_blocks = jax.random.split(rng)
        sizes = jax.random.randint(k_size, (batch_size,), 3, 3 + cluster_factor)
        blocks = _num_blocks(num_masked, min(3, f_dim) * min(3, t_dim), n)
        score = _block_priority(k_blocks, batch_size, grid, blocks, sizes, overhang=False)
        return _take_smallest(score, num_masked)
    if kind == "inverse_block":
        num_visible = n - num_masked
        sizes = jnp.full((batch_size,), block_size, jnp.int32)
        area = min(block_size, f_dim) * min(block_size, t_dim)
        blocks = _num_blocks(num_visible, area, n)
        score = _block_priority(rng, batch_size, grid, blocks, sizes, overhang=True)
        return ~_take_smallest(score, num_visible)
    # time_freq
    kf, kt = _time_freq_keep(grid, num_masked)
    k_f, k_t, k_noise = jax.random.split(rng, 3)
    row_masked = _take_smallest(jax.random.uniform(k_f, (batch_size, f_dim)), f_dim - kf)
    col_masked = _take_smallest(jax.random.uniform(k_t, (batch_size, t_dim)), t_dim - kt)
    structured = row_masked[:, :, None] | col_masked[:, None, :]  # [B, F, T]
    noise = jax.random.uniform(k_noise, (batch_size, n))
    score = jnp.where(structured.reshape(batch_size, n), 0.0, 1.0) + noise
    return _take_smallest(score, num_masked)


def make_mask(
    rng: jax.Array,
    kind: str,
    batch_size: int,
    grid: tuple[int, int],
    num_masked: int,
    *,
    cluster_factor: int = 3,
    block_size: int = 5,
) -> jax.Array:
    """Draw patch masks.

    Args:
      rng: a JAX PRNG key.
      kind: one of ``MASK_KINDS`` (``random``, ``cluster``, ``time_freq``, ``inverse_block``).
      batch_size: B.
      grid: ``(F_patches, T_patches)``; patches are numbered ``f * T_patches + t``.
      num_masked: M, masked patches per example, in ``[0, N]`` (see ``mask_count``).
      cluster_factor: ``cluster`` block sides are drawn from ``[3, 3 + cluster_factor)``
        (SSAST's ``cluster=3``: 3, 4 or 5 patches).
      block_size: side, in patches, of the visible blocks of ``inverse_block``.

    Returns:
      bool[B, N], True = masked, exactly M True per row. Jit-able: every argument but ``rng`` is
      static.
    """
    if kind not in MASK_KINDS:
        raise ValueError(f"unknown mask kind {kind!r}; expected one of {MASK_KINDS}")
    grid = (int(grid[0]), int(grid[1]))
    if min(grid) < 1 or batch_size < 1:
        raise ValueError(f"bad mask shape: batch_size={batch_size}, grid={grid}")
    if not 0 <= num_masked <= grid[0] * grid[1]:
        raise ValueError(f"num_masked={num_masked} outside [0, {grid[0] * grid[1]}]")
    if cluster_factor < 1 or block_size < 1:
        raise ValueError(f"bad block sizes: cluster_factor={cluster_factor}, block={block_size}")
    return _make_mask(
        rng, kind, int(batch_size), grid, int(num_masked), int(cluster_factor), int(block_size)
    )


def split_indices(mask: jax.Array, num_masked: int | None = None) -> tuple[jax.Array, jax.Array]:
    """Positions of the visible and masked patches, each in ascending order.

    Args:
      mask: bool[B, N], True = masked, the same number M of True in every row.
      num_masked: M; needed under ``jit`` (a traced mask has no concrete count), else read off
        the mask.

    Returns:
      ``(visible_idx int32[B, N - M], masked_idx int32[B, M])``; together each row is a
      permutation of ``0 .. N-1`` (a stable argsort of the mask).
    """
    if num_masked is None:
        try:
            counts = np.asarray(jnp.sum(mask, axis=1))
        except jax.errors.JAXTypeError as e:
            raise ValueError("split_indices under jit needs num_masked=M") from e
        if counts.size and (counts != counts[0]).any():
            raise ValueError(f"rows mask different numbers of patches: {sorted(set(counts))}")
        num_masked = int(counts[0]) if counts.size else 0
    n = mask.shape[1]
    order = jnp.argsort(mask, axis=1, stable=True).astype(jnp.int32)
    return order[:, : n - num_masked], order[:, n - num_masked :]
