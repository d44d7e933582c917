"""Patch embedding of log-mel spectrograms and 2-D positional embeddings.

A spectrogram `audio: float32[B, T, F]` (T frames of 10 ms, F mel bins) is cut into patches of
`patch_size = (p_f, p_t)` (mel bins x frames) every `patch_stride = (s_f, s_t)`; a stride smaller
than the size gives AST's overlapping patches, `(128, 2)` gives SSAST's frame patches. Tokens are
in freq-major order, index = f * T_patches + t, the order of `jaxav.data.masking`'s grid
`(F_patches, T_patches)`.

Positional embeddings: `"sincos"` (fixed 2-D sin-cos, MAE style, computed for any grid, no
parameters) or `"learned"` (AST/SSAST style, stored for a reference grid and resized bilinearly
to the input's grid, so a model pretrained on 10 s clips also embeds 3 s or 30 s clips).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

POS_EMBED_KINDS = ("sincos", "learned")


def grid_shape(
    num_frames: int,
    num_mel_bins: int,
    patch_size: tuple[int, int],
    patch_stride: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """Number of patches along frequency and time for a VALID strided cut.

    Args:
        num_frames: T, spectrogram frames.
        num_mel_bins: F, mel bins.
        patch_size: (p_f, p_t) in mel bins x frames.
        patch_stride: (s_f, s_t); None = patch_size (no overlap).

    Returns:
        (F_patches, T_patches), e.g. (12, 101) for 1024 x 128 with size 16 and stride 10.
    """
    p_f, p_t = patch_size
    s_f, s_t = patch_stride or patch_size
    if num_mel_bins < p_f or num_frames < p_t:
        raise ValueError(
            f"spectrogram of {num_frames} frames x {num_mel_bins} bins is smaller than one "
            f"patch {tuple(patch_size)} (freq x time)"
        )
    return (num_mel_bins - p_f) // s_f + 1, (num_frames - p_t) // s_t + 1


def patchify(
    audio: jax.Array, patch_size: tuple[int, int], patch_stride: tuple[int, int] | None = None
) -> jax.Array:
    """Cuts a spectrogram into flattened patches (reconstruction targets).

    Args:
        audio: float[B, T, F].
        patch_size: (p_f, p_t).
        patch_stride: (s_f, s_t); None = patch_size. Leftover frames/bins are dropped.

    Returns:
        float[B, N, p_f * p_t] with N = F_patches * T_patches in freq-major order; each patch
        is flattened freq-major (value (i, j) = bin i, frame j of the patch at index i * p_t + j).
    """
    p_f, p_t = patch_size
    stride = tuple(patch_stride or patch_size)
    b, t, f = audio.shape
    n_f, n_t = grid_shape(t, f, patch_size, stride)
    x = jnp.swapaxes(audio, 1, 2)  # [B, F, T]
    if stride == tuple(patch_size):
        x = x[:, : n_f * p_f, : n_t * p_t].reshape(b, n_f, p_f, n_t, p_t)
        return x.transpose(0, 1, 3, 2, 4).reshape(b, n_f * n_t, p_f * p_t)
    f_idx = (np.arange(n_f) * stride[0])[:, None] + np.arange(p_f)  # [n_f, p_f]
    t_idx = (np.arange(n_t) * stride[1])[:, None] + np.arange(p_t)  # [n_t, p_t]
    x = x[:, f_idx[:, None, :, None], t_idx[None, :, None, :]]  # [B, n_f, n_t, p_f, p_t]
    return x.reshape(b, n_f * n_t, p_f * p_t)


def unpatchify(patches: jax.Array, grid: tuple[int, int], patch_size: tuple[int, int]) -> jax.Array:
    """Inverse of `patchify` for non-overlapping patches.

    Args:
        patches: float[B, N, p_f * p_t], N = grid[0] * grid[1].
        grid: (F_patches, T_patches).
        patch_size: (p_f, p_t).

    Returns:
        float[B, T_patches * p_t, F_patches * p_f] spectrogram.
    """
    n_f, n_t = grid
    p_f, p_t = patch_size
    b = patches.shape[0]
    x = patches.reshape(b, n_f, n_t, p_f, p_t).transpose(0, 1, 3, 2, 4)
    return jnp.swapaxes(x.reshape(b, n_f * p_f, n_t * p_t), 1, 2)


class PatchEmbed(nn.Module):
    """Linear patch embedding as a strided convolution over the (F, T) plane.

    Attributes:
        width: D, output channels.
        patch_size: (p_f, p_t); patch_stride: (s_f, s_t).
        dtype: compute dtype (params stay float32).
    """

    width: int
    patch_size: tuple[int, int] = (16, 16)
    patch_stride: tuple[int, int] = (16, 16)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, audio: jax.Array) -> jax.Array:
        """audio: float[B, T, F] -> tokens dtype[B, F_patches * T_patches, D] (freq-major)."""
        x = jnp.swapaxes(audio, 1, 2)[..., None]  # [B, F, T, 1]
        x = nn.Conv(
            self.width,
            kernel_size=tuple(self.patch_size),
            strides=tuple(self.patch_stride),
            padding="VALID",
            dtype=self.dtype,
            kernel_init=nn.with_logical_partitioning(
                nn.initializers.lecun_normal(), (None, None, None, "embed")
            ),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
            name="proj",
        )(x)  # [B, F_patches, T_patches, D]
        b, n_f, n_t, d = x.shape
        return x.reshape(b, n_f * n_t, d)


def sincos_1d(positions: np.ndarray, dim: int) -> np.ndarray:
    """Sin-cos embedding of positions: float[L] -> float32[L, dim] ([sin | cos], dim even)."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.asarray(positions, np.float64)[:, None] * omega[None, :]
    return np.concatenate([np.sin(out), np.cos(out)], axis=1).astype(np.float32)


def sincos_2d(grid: tuple[int, int], dim: int) -> np.ndarray:
    """Fixed 2-D sin-cos embeddings (MAE style) for a (F_patches, T_patches) grid.

    Returns:
        float32[F_patches * T_patches, dim], freq-major; the first dim/2 channels encode the
        frequency index, the rest the time index. `dim` must be a multiple of 4.
    """
    if dim % 4:
        raise ValueError(f"sin-cos positional embeddings need a width divisible by 4, got {dim}")
    n_f, n_t = grid
    emb_f = sincos_1d(np.arange(n_f), dim // 2)  # [n_f, dim/2]
    emb_t = sincos_1d(np.arange(n_t), dim // 2)  # [n_t, dim/2]
    emb = np.concatenate(
        [
            np.broadcast_to(emb_f[:, None, :], (n_f, n_t, dim // 2)),
            np.broadcast_to(emb_t[None, :, :], (n_f, n_t, dim // 2)),
        ],
        axis=-1,
    )
    return emb.reshape(n_f * n_t, dim)


def resize_grid_embeddings(table: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """Bilinearly resizes a [F0, T0, D] table to [grid[0], grid[1], D] (half-pixel centres, no
    antialiasing: torch `F.interpolate(mode="bilinear", align_corners=False)`); identity when the
    grid is unchanged."""
    if tuple(table.shape[:2]) == tuple(grid):
        return table
    return jax.image.resize(table, (*grid, table.shape[-1]), method="linear", antialias=False)


class PosEmbed(nn.Module):
    """Positional embeddings for a patch grid, usable at any number of time (or freq) patches.

    Attributes:
        width: D.
        ref_grid: (F_patches, T_patches) the learned table is stored for (the training grid).
        kind: "sincos" (fixed, no params) or "learned" (param `table`: float32[F0, T0, D],
            bilinearly resized to the input grid).
    """

    width: int
    ref_grid: tuple[int, int]
    kind: str = "learned"

    @nn.compact
    def __call__(self, grid: tuple[int, int]) -> jax.Array:
        """grid: (F_patches, T_patches) of the input -> float32[1, F_patches * T_patches, D]."""
        n = grid[0] * grid[1]
        if self.kind == "sincos":
            return jnp.asarray(sincos_2d(grid, self.width))[None]
        if self.kind != "learned":
            raise ValueError(f"unknown positional embedding kind {self.kind!r}: {POS_EMBED_KINDS}")
        table = self.param(
            "table",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, None, "embed")),
            (*self.ref_grid, self.width),
        )
        return resize_grid_embeddings(table, grid).reshape(1, n, self.width)
