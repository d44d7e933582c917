"""Shared pieces of the masked-spectrogram objectives (SSAST in `ssast.py`, Audio-MAE in
`audiomae.py`): the `MaskedAudioModel` base (patch embedding, positions, cls tokens, encoder,
masks, targets, `encode`) and the config reading both share.

cls tokens sit before the patch tokens (`cls_position="start"`, ViT/AST) or in the middle of the
sequence (`"middle"`, SSAMBA/Vim with a Mamba encoder). Their learned parameter already holds
their position, so they get no positional embedding.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxav import losses
from jaxav.data import masking
from jaxav.errors import ConfigError
from jaxav.models.patch import POS_EMBED_KINDS, PatchEmbed, PosEmbed, grid_shape, patchify

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
CLS_POSITIONS = ("start", "middle")


def compute_dtype(name: str) -> Any:
    """'float32' | 'bfloat16' -> the jnp dtype; anything else raises ConfigError."""
    if name not in DTYPES:
        raise ConfigError(f"model.dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def num_masked_patches(ratio: float, num_patches: int) -> int:
    """`masking.mask_count` (N * ratio rounded half up), kept within [1, N - 1] so the masked and
    visible sets are both non-empty (needs N >= 2)."""
    return min(max(masking.mask_count(num_patches, ratio), 1), num_patches - 1)


def gather_tokens(x: jax.Array, idx: jax.Array) -> jax.Array:
    """x: [B, N, ...], idx: int[B, M] -> x[b, idx[b]]: [B, M, ...]."""
    idx = idx.reshape(idx.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=1)


def common_kwargs(config: ml_collections.ConfigDict, default_pos_embed: str) -> dict[str, Any]:
    """Constructor arguments shared by the masked-audio models, read from a full config.

    Reads model.{width, patch_size, patch_stride, num_cls_tokens, norm_pix_loss, dtype, encoder,
    mamba.cls_position, pos_embed (optional key: 'sincos' | 'learned')}, mask.{kind, ratio},
    data.{num_frames, num_mel_bins} (the reference grid learned positions are stored for).
    """
    m = config.model
    pos_embed = m.get("pos_embed", None) or default_pos_embed
    if pos_embed not in POS_EMBED_KINDS:
        raise ConfigError(f"model.pos_embed must be one of {POS_EMBED_KINDS}, got {pos_embed!r}")
    cls_position = m.mamba.cls_position if m.encoder == "mamba" else "start"
    if cls_position not in CLS_POSITIONS:
        raise ConfigError(
            f"model.mamba.cls_position must be one of {CLS_POSITIONS}, got {cls_position!r}"
        )
    if config.mask.kind not in masking.MASK_KINDS:
        raise ConfigError(
            f"mask.kind must be one of {masking.MASK_KINDS}, got {config.mask.kind!r}"
        )
    if not 0.0 < config.mask.ratio < 1.0:
        raise ConfigError(f"mask.ratio must be in (0, 1), got {config.mask.ratio}")
    patch_size = tuple(int(v) for v in m.patch_size)
    patch_stride = tuple(int(v) for v in m.patch_stride)
    try:
        ref_grid = grid_shape(
            config.data.num_frames, config.data.num_mel_bins, patch_size, patch_stride
        )
    except ValueError as e:
        raise ConfigError(f"data.num_frames/num_mel_bins vs model.patch_size: {e}") from None
    return dict(
        width=int(m.width),
        ref_grid=ref_grid,
        patch_size=patch_size,
        patch_stride=patch_stride,
        num_cls_tokens=int(m.num_cls_tokens),
        cls_position=cls_position,
        pos_embed_kind=pos_embed,
        mask_kind=str(config.mask.kind),
        mask_ratio=float(config.mask.ratio),
        norm_pix_loss=bool(m.norm_pix_loss),
        dtype=compute_dtype(m.dtype),
    )


class MlpHead(nn.Module):
    """Dense(hidden) -> ReLU -> Dense(out), SSAST's prediction layers. x: [..., D] -> [..., out]."""

    hidden: int
    out: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        init = nn.initializers.xavier_uniform()
        x = nn.Dense(
            self.hidden,
            dtype=self.dtype,
            kernel_init=nn.with_logical_partitioning(init, ("embed", "mlp")),
            name="fc1",
        )(x)
        return nn.Dense(
            self.out,
            dtype=self.dtype,
            kernel_init=nn.with_logical_partitioning(init, ("mlp", "patch")),
            name="fc2",
        )(nn.relu(x))


class MaskedAudioModel(nn.Module):
    """Base of the masked-spectrogram models; subclasses define `__call__(batch, *, train)`.

    Attributes:
        encoder: token encoder (`ViTEncoder` or `MambaEncoder`), `(x, train=) -> (final, hidden)`.
        width: D, the encoder width.
        ref_grid: (F_patches, T_patches) of the training clips (learned positions stored for it).
        patch_size, patch_stride: (freq, time) in mel bins x frames.
        num_cls_tokens: 0, 1 or 2 learned cls tokens.
        cls_position: "start" or "middle" of the token sequence.
        pos_embed_kind: "sincos" (fixed) or "learned" (interpolated to the input's grid).
        mask_kind, mask_ratio: `jaxav.data.masking.make_mask` kind and fraction of patches masked.
        norm_pix_loss: targets normalised per patch (`losses.normalize_patches`).
        dtype: compute dtype; params float32, losses float32.
    """

    encoder: nn.Module
    width: int
    ref_grid: tuple[int, int]
    patch_size: tuple[int, int] = (16, 16)
    patch_stride: tuple[int, int] = (16, 16)
    num_cls_tokens: int = 1
    cls_position: str = "start"
    pos_embed_kind: str = "learned"
    mask_kind: str = "random"
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.patch_embed = PatchEmbed(self.width, self.patch_size, self.patch_stride, self.dtype)
        self.pos_embed = PosEmbed(self.width, self.ref_grid, self.pos_embed_kind)
        if self.num_cls_tokens:
            self.cls_token = self.param(
                "cls_token",
                nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, None, "embed")),
                (1, self.num_cls_tokens, self.width),
            )

    @property
    def patch_dim(self) -> int:
        """Values per patch, p_f * p_t."""
        return self.patch_size[0] * self.patch_size[1]

    def embed_patches(self, audio: jax.Array) -> tuple[jax.Array, jax.Array, tuple[int, int]]:
        """audio: float[B, T, F] -> (tokens dtype[B, N, D], positions float32[1, N, D], grid)."""
        grid = grid_shape(audio.shape[1], audio.shape[2], self.patch_size, self.patch_stride)
        return self.patch_embed(audio), self.pos_embed(grid), grid

    def targets(self, audio: jax.Array) -> jax.Array:
        """Reconstruction targets float32[B, N, p_f * p_t] (normalised if norm_pix_loss)."""
        patches = patchify(audio.astype(jnp.float32), self.patch_size, self.patch_stride)
        return losses.normalize_patches(patches) if self.norm_pix_loss else patches

    def sample_mask(
        self, batch_size: int, grid: tuple[int, int]
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Mask from the "mask" rng stream.

        Returns:
            (mask bool[B, N] True = masked, visible_idx int[B, N - M], masked_idx int[B, M]) with
            M = round(mask_ratio * N), indices in positional order (`masking.split_indices`).
        """
        num_masked = num_masked_patches(self.mask_ratio, grid[0] * grid[1])
        mask = masking.make_mask(
            self.make_rng("mask"), self.mask_kind, batch_size, grid, num_masked
        )
        visible_idx, masked_idx = masking.split_indices(mask, num_masked)
        return mask, visible_idx, masked_idx

    def _cls_start(self, num_tokens: int) -> int:
        return num_tokens // 2 if self.cls_position == "middle" else 0

    def run_encoder(
        self, x: jax.Array, *, train: bool
    ) -> tuple[jax.Array, jax.Array | None, tuple[jax.Array, ...]]:
        """Adds the cls tokens and runs the encoder.

        Args:
            x: [B, N, D] patch tokens with positions added.

        Returns:
            (final_tokens [B, N, D], final_cls [B, num_cls, D] or None, hidden) where final is
            after the encoder's last LayerNorm and hidden keeps the cls tokens (see `split_cls`).
        """
        if self.num_cls_tokens:
            s = self._cls_start(x.shape[1])
            cls = jnp.broadcast_to(self.cls_token, (x.shape[0], *self.cls_token.shape[1:]))
            x = jnp.concatenate([x[:, :s], cls.astype(x.dtype), x[:, s:]], axis=1)
        final, hidden = self.encoder(x, train=train)
        tokens, cls = self.split_cls(final)
        return tokens, cls, hidden

    def split_cls(self, seq: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """[B, N + num_cls, D] -> (patch tokens [B, N, D], cls tokens [B, num_cls, D] or None)."""
        c = self.num_cls_tokens
        if not c:
            return seq, None
        s = self._cls_start(seq.shape[1] - c)
        return jnp.concatenate([seq[:, :s], seq[:, s + c :]], axis=1), seq[:, s : s + c]

    def encode(self, audio: jax.Array) -> dict[str, jax.Array]:
        """Per-layer features of unmasked audio (eval mode, no rngs needed).

        Args:
            audio: float32[B, T, F] normalised log-mel; T may differ from training.

        Returns:
            dict: `layer_i` float32[B, N, D] (patch tokens of block i, before the final norm,
            cls excluded), and `cls_i` float32[B, D] (mean of the cls tokens) when there are cls
            tokens; i = 1 .. depth.
        """
        x, pos, _ = self.embed_patches(audio)
        _, _, hidden = self.run_encoder(x + pos.astype(x.dtype), train=False)
        out = {}
        for i, h in enumerate(hidden, start=1):
            tokens, cls = self.split_cls(h.astype(jnp.float32))
            out[f"layer_{i}"] = tokens
            if cls is not None:
                out[f"cls_{i}"] = cls.mean(axis=1)
        return out
