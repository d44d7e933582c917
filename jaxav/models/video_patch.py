"""Patch embedding of video clips: image patches per frame and tubelets over frames.

A clip `video: float32[B, T, H, W, 3]` (normalised RGB frames) is cut into tubelets of
`tubelet` frames x `patch_size = (p_h, p_w)` pixels (non-overlapping): `tubelet = 1` gives
image patches of every frame (ViT / CAV-MAE, 16 x 16), `tubelet = 2` VideoMAE / HiCMAE tubelets
(2 x 16 x 16). synth_av frames are 32 x 32, so its recipes use 8 x 8 patches. Tokens are in
time-major order: index = (t * H_patches + h) * W_patches + w, grid = (T_tubes, H_patches,
W_patches). Frames or pixels left over by the tubelet/patch size are dropped.

Positional embeddings add a space and a time part: `"sincos"` (fixed, separable 3-D sin-cos
over (t, h, w), computed for any grid) or `"learned"` (a spatial table [H0, W0, D] resized
bilinearly plus a temporal table [T0, D] resized linearly, so other frame counts/sizes work).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxav.models.patch import POS_EMBED_KINDS, resize_grid_embeddings, sincos_1d

Grid3 = tuple[int, int, int]


def video_grid(
    num_frames: int, height: int, width: int, tubelet: int, patch_size: tuple[int, int]
) -> Grid3:
    """(T_tubes, H_patches, W_patches) for a clip of `num_frames` frames of height x width px.

    Raises ValueError when the clip is smaller than one tubelet.
    """
    p_h, p_w = patch_size
    if num_frames < tubelet or height < p_h or width < p_w:
        raise ValueError(
            f"video of {num_frames} frames x {height} x {width} px is smaller than one tubelet "
            f"{tubelet} x {p_h} x {p_w}"
        )
    return num_frames // tubelet, height // p_h, width // p_w


def video_patchify(video: jax.Array, tubelet: int, patch_size: tuple[int, int]) -> jax.Array:
    """Cuts a clip into flattened tubelets (reconstruction targets).

    Args:
        video: float[B, T, H, W, C].
        tubelet: frames per tubelet (1 = image patches of every frame).
        patch_size: (p_h, p_w) pixels.

    Returns:
        float[B, N, tubelet * p_h * p_w * C], N = T_tubes * H_patches * W_patches in time-major
        order; each tubelet flattened in (frame, row, column, channel) order.
    """
    b, t, h, w, c = video.shape
    p_h, p_w = patch_size
    n_t, n_h, n_w = video_grid(t, h, w, tubelet, patch_size)
    x = video[:, : n_t * tubelet, : n_h * p_h, : n_w * p_w]
    x = x.reshape(b, n_t, tubelet, n_h, p_h, n_w, p_w, c)
    x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)  # [B, n_t, n_h, n_w, tubelet, p_h, p_w, C]
    return x.reshape(b, n_t * n_h * n_w, tubelet * p_h * p_w * c)


def video_unpatchify(
    patches: jax.Array, grid: Grid3, tubelet: int, patch_size: tuple[int, int], channels: int = 3
) -> jax.Array:
    """Inverse of `video_patchify`: float[B, N, P] -> float[B, T_tubes * tubelet, H, W, C]."""
    n_t, n_h, n_w = grid
    p_h, p_w = patch_size
    b = patches.shape[0]
    x = patches.reshape(b, n_t, n_h, n_w, tubelet, p_h, p_w, channels)
    x = x.transpose(0, 1, 4, 2, 5, 3, 6, 7)
    return x.reshape(b, n_t * tubelet, n_h * p_h, n_w * p_w, channels)


class VideoPatchEmbed(nn.Module):
    """Linear tubelet embedding as a strided 3-D convolution.

    Attributes:
        width: D, output channels.
        tubelet: frames per token (1 = per-frame image patches).
        patch_size: (p_h, p_w) pixels.
        dtype: compute dtype (params stay float32).
    """

    width: int
    tubelet: int = 1
    patch_size: tuple[int, int] = (16, 16)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, video: jax.Array) -> jax.Array:
        """video: float[B, T, H, W, C] -> tokens dtype[B, T_tubes * H_p * W_p, D] (time-major)."""
        b, t, h, w, _ = video.shape
        n_t, n_h, n_w = video_grid(t, h, w, self.tubelet, self.patch_size)
        kernel = (self.tubelet, *self.patch_size)
        x = video[:, : n_t * self.tubelet, : n_h * kernel[1], : n_w * kernel[2]]
        x = nn.Conv(
            self.width,
            kernel_size=kernel,
            strides=kernel,
            padding="VALID",
            dtype=self.dtype,
            kernel_init=nn.with_logical_partitioning(
                nn.initializers.lecun_normal(), (None, None, None, None, "embed")
            ),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
            name="proj",
        )(x)  # [B, n_t, n_h, n_w, D]
        return x.reshape(b, n_t * n_h * n_w, self.width)


def _split_dims(dim: int) -> tuple[int, int, int]:
    """Channels for (time, height, width) sin-cos parts: about 1/4, 3/8, 3/8, each even."""
    if dim % 2 or dim < 8:
        raise ValueError(f"3-D sin-cos positional embeddings need an even width >= 8, got {dim}")
    d_t = 2 * (dim // 8)
    d_h = 2 * ((dim - d_t) // 4)
    return d_t, d_h, dim - d_t - d_h


def sincos_3d(grid: Grid3, dim: int) -> np.ndarray:
    """Fixed separable sin-cos embeddings for a (T_tubes, H_patches, W_patches) grid.

    Returns:
        float32[T * H * W, dim] in time-major order; channels [time | height | width].
    """
    n_t, n_h, n_w = grid
    d_t, d_h, d_w = _split_dims(dim)
    e_t = sincos_1d(np.arange(n_t), d_t)[:, None, None, :]
    e_h = sincos_1d(np.arange(n_h), d_h)[None, :, None, :]
    e_w = sincos_1d(np.arange(n_w), d_w)[None, None, :, :]
    shape = (n_t, n_h, n_w)
    emb = np.concatenate(
        [
            np.broadcast_to(e_t, (*shape, d_t)),
            np.broadcast_to(e_h, (*shape, d_h)),
            np.broadcast_to(e_w, (*shape, d_w)),
        ],
        axis=-1,
    )
    return emb.reshape(n_t * n_h * n_w, dim)


class VideoPosEmbed(nn.Module):
    """Space + time positional embeddings for a tubelet grid, usable at any grid.

    Attributes:
        width: D.
        ref_grid: (T_tubes, H_patches, W_patches) the learned tables are stored for.
        kind: "sincos" (fixed, no params) or "learned" (params `space`: float32[H0, W0, D],
            resized bilinearly, and `time`: float32[T0, D], resized linearly; summed).
    """

    width: int
    ref_grid: Grid3
    kind: str = "sincos"

    @nn.compact
    def __call__(self, grid: Grid3) -> jax.Array:
        """grid: (T_tubes, H_patches, W_patches) of the input -> float32[1, T * H * W, D]."""
        n_t, n_h, n_w = grid
        if self.kind == "sincos":
            return jnp.asarray(sincos_3d(grid, self.width))[None]
        if self.kind != "learned":
            raise ValueError(f"unknown positional embedding kind {self.kind!r}: {POS_EMBED_KINDS}")
        init = nn.initializers.normal(0.02)
        space = self.param(
            "space",
            nn.with_logical_partitioning(init, (None, None, "embed")),
            (self.ref_grid[1], self.ref_grid[2], self.width),
        )
        time = self.param(
            "time",
            nn.with_logical_partitioning(init, (None, "embed")),
            (self.ref_grid[0], self.width),
        )
        space = resize_grid_embeddings(space, (n_h, n_w))  # [n_h, n_w, D]
        time = resize_grid_embeddings(time[:, None, :], (n_t, 1))[:, 0]  # [n_t, D]
        emb = time[:, None, None, :] + space[None]
        return emb.reshape(1, n_t * n_h * n_w, self.width)
