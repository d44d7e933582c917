"""Audio-visual masked autoencoders: shared pieces and CAV-MAE (Gong et al. 2023).

CAV-MAE: audio patches (log-mel, `model.patch_size`) and visual patches or tubelets
(`jaxav.models.video_patch`) each get positions and a modality embedding, are masked
independently (`mask.ratio`, `model.av.video_mask_ratio`) and go through `modality_depth`
modality-specific Transformer layers over their VISIBLE tokens. `joint_depth` shared joint layers
then run three times, as CAV-MAE does: over the concatenation [audio | video] (feeds the
decoder), and over each modality alone (feeds the contrastive branch), each pass with its own
final LayerNorm. A joint decoder gets the fused tokens with mask tokens at the masked positions,
decoder positions and modality embeddings, and predicts every audio and visual patch;
reconstruction = normalised-patch MSE on the masked patches of each modality. The contrastive
term is a symmetric InfoNCE between the mean-pooled audio-only and video-only joint-layer outputs
(pre-norm, the very features `encode` returns as the last `audio_layer_i` / `video_layer_i`).

loss = recon_weight * (mse_audio + video_recon_weight * mse_video) + contrastive_weight * nce
(paper: 1, 1, 0.01, temperature 0.05).

Clips without frames (`batch["has_video"]` False) are excluded from every visual term: their
video is replaced by zeros before use, their visual tokens are masked out of every attention
(`key_mask`), out of the video MSE and out of the InfoNCE (neither positive nor negative), so
neither the loss nor any gradient depends on them. Negatives come from the global batch: inside
`jit` the batch axis is global, whatever the sharding.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxav import losses
from jaxav.data import masking
from jaxav.errors import ConfigError
from jaxav.models.mae import common_kwargs, gather_tokens, num_masked_patches
from jaxav.models.patch import PatchEmbed, PosEmbed, grid_shape, patchify, sincos_2d
from jaxav.models.video_patch import (
    VideoPatchEmbed,
    VideoPosEmbed,
    sincos_3d,
    video_grid,
    video_patchify,
)
from jaxav.models.vit import Mlp, layer_norm

_NEG = -1e9  # logit of a masked key (finite: a row with no valid key gives no NaN)
_normal02 = nn.initializers.normal(0.02)


def _dense(features, axes, dtype, name=None, axis=-1):
    return nn.DenseGeneral(
        features,
        axis=axis,
        dtype=dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[len(axes) - 1 :]),
        name=name,
    )


class MaskedAttention(nn.Module):
    """Multi-head (cross-)attention with a key mask; params as `vit.Attention`.

    `x: [B, Nq, D]`, `kv: [B, Nk, D]` (default x), `key_mask: bool[B, Nk]` (True = attend) ->
    `[B, Nq, D]`. A query with no valid key attends uniformly (finite, never NaN).
    """

    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, kv=None, key_mask=None):
        kv = x if kv is None else kv
        width = x.shape[-1]
        hd = width // self.num_heads
        proj = lambda n, y: _dense((self.num_heads, hd), ("embed", "heads", "kv"), self.dtype, n)(y)
        q, k, v = proj("query", x), proj("key", kv), proj("value", kv)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / jnp.sqrt(hd)
        if key_mask is not None:
            logits = jnp.where(key_mask[:, None, None, :], logits, _NEG)
        w = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        y = jnp.einsum("bhqk,bkhd->bqhd", w, v)
        return _dense(width, ("heads", "kv", "embed"), self.dtype, "out", axis=(-2, -1))(y)


class MaskedBlock(nn.Module):
    """Pre-norm Transformer block (as `vit.Block`) whose attention takes a key mask."""

    num_heads: int
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, key_mask=None, *, train: bool = False):
        """x: [B, N, D], key_mask: bool[B, N] or None -> [B, N, D]."""
        y = MaskedAttention(self.num_heads, self.dtype, name="attn")(
            layer_norm(self.dtype, "norm1")(x), key_mask=key_mask
        )
        x = x + nn.Dropout(self.dropout)(y, deterministic=not train)
        y = Mlp(self.mlp_ratio, self.dropout, dtype=self.dtype, name="mlp")(
            layer_norm(self.dtype, "norm2")(x), train
        )
        return x + nn.Dropout(self.dropout)(y, deterministic=not train)


class MaskedStack(nn.Module):
    """`depth` MaskedBlocks (params `block_i`), no final norm.

    `__call__(x [B, N, D], key_mask=None, *, train)` -> (last output, tuple of every block's
    output), all dtype[B, N, D].
    """

    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, key_mask=None, *, train: bool = False):
        hidden = []
        x = x.astype(self.dtype)
        for i in range(self.depth):
            x = MaskedBlock(
                self.num_heads, self.mlp_ratio, self.dropout, self.dtype, name=f"block_{i}"
            )(x, key_mask, train=train)
            hidden.append(x)
        return x, tuple(hidden)


def _param(module: nn.Module, name: str, shape: tuple[int, ...]) -> jax.Array:
    axes = (None,) * (len(shape) - 1) + ("embed",)
    return module.param(name, nn.with_logical_partitioning(_normal02, axes), shape)


def pool(tokens: jax.Array) -> jax.Array:
    """Mean over tokens: float[B, N, D] -> float32[B, D]."""
    return tokens.astype(jnp.float32).mean(axis=1)


class AVBase(nn.Module):
    """Shared audio-visual pieces: patch embeddings, positions, modality embeddings, masks,
    targets, temperature. Subclasses (CAV-MAE, HiCMAE) define `__call__` and `encode`.

    Attributes (read from the config by `av_kwargs`):
        width, num_heads, mlp_ratio, dropout, dtype: encoder sizes.
        modality_depth, joint_depth: layers per modality; joint (CAV-MAE) / fusion (HiCMAE).
        audio_ref_grid, patch_size, patch_stride: audio patches (freq x time).
        video_ref_grid, tubelet, video_patch_size: visual tokens (T_tubes, H_p, W_p).
        pos_embed_kind: "sincos" | "learned".
        mask_kind, mask_ratio, video_mask_ratio: audio mask kind/ratio, visual (random) ratio.
        norm_pix_loss: per-patch normalised targets.
        decoder_width, decoder_depth, decoder_heads: decoder sizes.
        recon_weight, video_recon_weight, contrastive_weight: loss weights.
        temperature, learn_temperature, min_temperature, max_temperature: InfoNCE temperature.
    """

    width: int = 768
    num_heads: int = 12
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    dtype: Any = jnp.float32
    modality_depth: int = 11
    joint_depth: int = 1
    audio_ref_grid: tuple[int, int] = (8, 64)
    patch_size: tuple[int, int] = (16, 16)
    patch_stride: tuple[int, int] = (16, 16)
    video_ref_grid: tuple[int, int, int] = (1, 14, 14)
    tubelet: int = 1
    video_patch_size: tuple[int, int] = (16, 16)
    pos_embed_kind: str = "sincos"
    mask_kind: str = "random"
    mask_ratio: float = 0.75
    video_mask_ratio: float = 0.75
    norm_pix_loss: bool = True
    decoder_width: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 16
    recon_weight: float = 1.0
    video_recon_weight: float = 1.0
    contrastive_weight: float = 0.01
    temperature: float = 0.05
    learn_temperature: bool = False
    min_temperature: float = 0.01
    max_temperature: float = 1.0

    def setup_inputs(self) -> None:
        """Creates the patch embeddings, positions, modality embeddings and temperature."""
        self.audio_patch = PatchEmbed(self.width, self.patch_size, self.patch_stride, self.dtype)
        self.audio_pos = PosEmbed(self.width, self.audio_ref_grid, self.pos_embed_kind)
        vps = self.video_patch_size
        self.video_patch = VideoPatchEmbed(self.width, self.tubelet, vps, self.dtype)
        self.video_pos = VideoPosEmbed(self.width, self.video_ref_grid, self.pos_embed_kind)
        self.modality_a = _param(self, "modality_a", (1, 1, self.width))
        self.modality_v = _param(self, "modality_v", (1, 1, self.width))
        if self.learn_temperature:
            init = lambda _: jnp.log(jnp.asarray(self.temperature, jnp.float32))
            self.log_temperature = self.param("log_temperature", init)

    def temp(self) -> jax.Array:
        """The InfoNCE temperature: exp(log_temperature) clipped, or the fixed value."""
        if not self.learn_temperature:
            return jnp.asarray(self.temperature, jnp.float32)
        return jnp.clip(jnp.exp(self.log_temperature), self.min_temperature, self.max_temperature)

    def embed_audio(self, audio: jax.Array) -> tuple[jax.Array, tuple[int, int]]:
        """audio: float[B, T, F] -> (tokens + positions + modality dtype[B, Na, D], grid)."""
        grid = grid_shape(audio.shape[1], audio.shape[2], self.patch_size, self.patch_stride)
        x = self.audio_patch(audio)
        return x + (self.audio_pos(grid) + self.modality_a).astype(x.dtype), grid

    def embed_video(self, video: jax.Array) -> tuple[jax.Array, tuple[int, int, int]]:
        """video: float[B, Tv, H, W, 3] -> (tokens + positions + modality [B, Nv, D], grid)."""
        grid = video_grid(*video.shape[1:4], self.tubelet, self.video_patch_size)
        x = self.video_patch(video)
        return x + (self.video_pos(grid) + self.modality_v).astype(x.dtype), grid

    def audio_targets(self, audio: jax.Array) -> jax.Array:
        """float32[B, Na, p_f * p_t] (normalised when norm_pix_loss)."""
        p = patchify(audio.astype(jnp.float32), self.patch_size, self.patch_stride)
        return losses.normalize_patches(p) if self.norm_pix_loss else p

    def video_targets(self, video: jax.Array) -> jax.Array:
        """float32[B, Nv, tubelet * p_h * p_w * 3] (normalised when norm_pix_loss)."""
        p = video_patchify(video.astype(jnp.float32), self.tubelet, self.video_patch_size)
        return losses.normalize_patches(p) if self.norm_pix_loss else p

    def sample_mask(self, b: int, grid: tuple, ratio: float, kind: str):
        """(mask bool[B, N], visible_idx int[B, N - M], masked_idx int[B, M]) from rng "mask";
        grid: audio (F, T) or video (T, H, W) (flattened: use kind "random")."""
        n = math.prod(grid)
        m = num_masked_patches(ratio, n)
        mask = masking.make_mask(
            self.make_rng("mask"), kind, b, (1, n) if len(grid) == 3 else grid, m
        )
        return (mask, *masking.split_indices(mask, m))

    @staticmethod
    def video_inputs(batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        """(video with clips lacking frames zeroed, has_video bool[B]) from a batch."""
        video, has = batch["video"], batch.get("has_video")
        has = jnp.ones((video.shape[0],), bool) if has is None else has.astype(bool)
        return jnp.where(has[:, None, None, None, None], video, 0.0).astype(jnp.float32), has


def scatter_with_mask_token(y, idx, n, mask_token):
    """Puts `y: [B, V, Dd]` at positions `idx: int[B, V]` of a [B, n, Dd] grid of mask tokens."""
    b = y.shape[0]
    full = jnp.broadcast_to(mask_token.astype(y.dtype), (b, n, y.shape[-1]))
    return full.at[jnp.arange(b)[:, None], idx].set(y)


def joint_key_mask(has: jax.Array, na: int, nv: int) -> jax.Array:
    """bool[B, na + nv] over [audio | video] tokens: audio always, video where has[b]."""
    b = has.shape[0]
    return jnp.concatenate([jnp.ones((b, na), bool), jnp.broadcast_to(has[:, None], (b, nv))], 1)


class CAVMAE(AVBase):
    """CAV-MAE; see the module docstring. Params: `audio_patch`, `video_patch`, positions
    (when learned), `modality_a/v`, `audio_layers`, `video_layers`, `joint`, `norm`,
    `decoder_embed`, `mask_token`, `dec_modality_a/v`, `decoder`, `decoder_norm`,
    `pred_a`, `pred_v` (and `log_temperature` when learned)."""

    def setup(self) -> None:
        self.setup_inputs()
        stack = lambda d: MaskedStack(d, self.num_heads, self.mlp_ratio, self.dropout, self.dtype)
        self.audio_layers = stack(self.modality_depth)
        self.video_layers = stack(self.modality_depth)
        self.joint = stack(self.joint_depth)
        self.norm = layer_norm(self.dtype)
        self.decoder_embed = _dense(self.decoder_width, ("embed", "mlp"), self.dtype)
        self.mask_token = _param(self, "mask_token", (1, 1, self.decoder_width))
        self.dec_modality_a = _param(self, "dec_modality_a", (1, 1, self.decoder_width))
        self.dec_modality_v = _param(self, "dec_modality_v", (1, 1, self.decoder_width))
        self.decoder = MaskedStack(
            self.decoder_depth, self.decoder_heads, self.mlp_ratio, 0.0, self.dtype
        )
        self.decoder_norm = layer_norm(self.dtype)
        p_a = self.patch_size[0] * self.patch_size[1]
        p_v = self.tubelet * self.video_patch_size[0] * self.video_patch_size[1] * 3
        self.pred_a = _dense(p_a, ("embed", "patch"), self.dtype)
        self.pred_v = _dense(p_v, ("embed", "patch"), self.dtype)

    def __call__(self, batch: dict[str, jax.Array], *, train: bool):
        """Pretraining loss of `batch` {audio f32[B,T,F], video f32[B,Tv,H,W,3], has_video}.

        Needs the "mask" rng ("dropout" too when model.dropout > 0 and train).

        Returns:
            (loss, metrics {loss, mse_audio, mse_video, nce, acc, temperature}) float32.
        """
        audio = batch["audio"]
        video, has = self.video_inputs(batch)
        xa, grid_a = self.embed_audio(audio)
        xv, grid_v = self.embed_video(video)
        b, na, nv = xa.shape[0], xa.shape[1], xv.shape[1]
        mask_a, vis_a, _ = self.sample_mask(b, grid_a, self.mask_ratio, self.mask_kind)
        mask_v, vis_v, _ = self.sample_mask(b, grid_v, self.video_mask_ratio, "random")
        ha, _ = self.audio_layers(gather_tokens(xa, vis_a), train=train)
        hv, _ = self.video_layers(gather_tokens(xv, vis_v), train=train)
        key_mask = joint_key_mask(has, ha.shape[1], hv.shape[1])
        fused, _ = self.joint(jnp.concatenate([ha, hv], axis=1), key_mask, train=train)
        ca, _ = self.joint(ha, train=train)
        cv, _ = self.joint(hv, train=train)
        nce, acc = losses.masked_symmetric_info_nce(pool(ca), pool(cv), self.temp(), has)

        y = self.decoder_embed(self.norm(fused))
        va = ha.shape[1]
        ya = scatter_with_mask_token(y[:, :va], vis_a, na, self.mask_token)
        yv = scatter_with_mask_token(y[:, va:], vis_v, nv, self.mask_token)
        ya = ya + (jnp.asarray(sincos_2d(grid_a, self.decoder_width)) + self.dec_modality_a)
        yv = yv + (jnp.asarray(sincos_3d(grid_v, self.decoder_width)) + self.dec_modality_v)
        dec_in = jnp.concatenate([ya, yv], axis=1).astype(self.dtype)
        d, _ = self.decoder(dec_in, joint_key_mask(has, na, nv), train=train)
        d = self.decoder_norm(d)
        pred_a = self.pred_a(d[:, :na]).astype(jnp.float32)
        pred_v = self.pred_v(d[:, na:]).astype(jnp.float32)
        mse_a = losses.masked_mse(pred_a, self.audio_targets(audio), mask_a)
        mse_v = losses.masked_mse(pred_v, self.video_targets(video), mask_v & has[:, None])
        recon = mse_a + self.video_recon_weight * mse_v
        loss = self.recon_weight * recon + self.contrastive_weight * nce
        metrics = dict(loss=loss, mse_audio=mse_a, mse_video=mse_v, nce=nce, acc=acc)
        return loss, {**metrics, "temperature": self.temp()}

    def encode(self, audio: jax.Array, video: jax.Array, has_video: jax.Array | None = None):
        """Per-layer features of unmasked clips (eval mode, no rngs).

        Args:
            audio: float32[B, T, F]; video: float32[B, Tv, H, W, 3]; has_video: bool[B] or None.

        Returns:
            dict of float32 [B, N, D]: `audio_layer_i`, `video_layer_i` for i = 1 .. L
            (L = modality_depth + joint_depth; layers above modality_depth are the
            modality-alone passes through the joint layers, the last one being the contrastive
            features) and `fused_layer_i` for the joint layers (i > modality_depth) over
            [audio | video] tokens (video tokens of clips without frames are left out of the
            attention).
        """
        video, has = self.video_inputs({"video": video, "has_video": has_video})
        xa, _ = self.embed_audio(audio)
        xv, _ = self.embed_video(video)
        ha, hid_a = self.audio_layers(xa)
        hv, hid_v = self.video_layers(xv)
        _, jid_a = self.joint(ha)
        _, jid_v = self.joint(hv)
        key_mask = joint_key_mask(has, ha.shape[1], hv.shape[1])
        _, jid_f = self.joint(jnp.concatenate([ha, hv], axis=1), key_mask)
        out = {}
        for i, (a, v) in enumerate(zip(hid_a + jid_a, hid_v + jid_v), start=1):
            out[f"audio_layer_{i}"] = a.astype(jnp.float32)
            out[f"video_layer_{i}"] = v.astype(jnp.float32)
        for j, f in enumerate(jid_f, start=self.modality_depth + 1):
            out[f"fused_layer_{j}"] = f.astype(jnp.float32)
        return out


_COMMON_KEYS = (
    "width patch_size patch_stride pos_embed_kind mask_kind mask_ratio norm_pix_loss dtype"
)
_MODEL_KEYS = "num_heads mlp_ratio dropout decoder_width decoder_depth decoder_heads recon_weight"
_AV_KEYS = "modality_depth joint_depth tubelet video_mask_ratio video_recon_weight temperature"
_AV_KEYS += " learn_temperature min_temperature max_temperature"


def av_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Constructor arguments of the AV models from a full config (model, model.av, mask, data).

    Raises ConfigError for settings the AV models cannot use.
    """
    m, av, d = config.model, config.model.av, config.data
    if m.encoder != "vit":
        raise ConfigError(f"audio-visual models use ViT layers; model.encoder={m.encoder!r}")
    if not d.with_video:
        raise ConfigError(f"model.name={m.name!r} needs data.with_video=True")
    if not 0.0 < av.video_mask_ratio < 1.0:
        raise ConfigError(f"model.av.video_mask_ratio must be in (0, 1), got {av.video_mask_ratio}")
    common = common_kwargs(config, default_pos_embed=str(av.pos_embed))
    vps = tuple(int(v) for v in av.video_patch_size)
    try:
        vgrid = video_grid(
            int(d.video_frames), int(d.video_size), int(d.video_size), int(av.tubelet), vps
        )
    except ValueError as e:
        raise ConfigError(f"data.video_frames/video_size vs model.av: {e}") from None
    kw = {k: common[k] for k in _COMMON_KEYS.split()}
    kw.update(
        {k: type(getattr(AVBase, k))(m[k]) for k in _MODEL_KEYS.split() + ["contrastive_weight"]}
    )
    kw.update({k: type(getattr(AVBase, k))(av[k]) for k in _AV_KEYS.split()})
    kw.update(audio_ref_grid=common["ref_grid"], video_ref_grid=vgrid, video_patch_size=vps)
    return kw


def from_config(config: ml_collections.ConfigDict) -> CAVMAE:
    """CAV-MAE from a full config (`model.name = "cavmae"`)."""
    return CAVMAE(**av_kwargs(config))
