"""HiCMAE (Sun et al. 2024): hierarchical contrastive masked autoencoder for audio-visual clips.

Audio patches and visual tubelets (`jaxav.models.av.AVBase`: positions, modality embeddings,
independent masks) go through their own `modality_depth`-layer encoders over the VISIBLE tokens.
Three ideas on top of a two-stream MAE:

1. Hierarchical contrastive learning: a symmetric InfoNCE between the mean-pooled audio and
   visual tokens at several encoder layers (`model.av.contrastive_layers`, 1-based, with
   `contrastive_layer_weights`; paper: three), `losses.hierarchical_contrastive`.
2. Cross-modal fusion: `joint_depth` layers where each stream cross-attends to the other, then
   an MLP (a clip without frames gets no update from its visual tokens).
3. Hierarchical skip connections: each modality's decoder adds, before its block k, a projection
   of encoder layer `skip_layers[k]` at the visible positions (zero at the masked ones).

Reconstruction: normalised-patch MSE on the masked patches of each modality.
loss = recon_weight * (mse_audio + video_recon_weight * mse_video)
       + contrastive_weight * sum_l w_l * nce_l.

For probing, `encode` also returns hierarchical feature fusions `audio_hier` / `video_hier`:
softmax(`layer_logits_a/v`)-weighted sums of every encoder layer's tokens (uniform until a
downstream task trains the logits). Clips without frames are excluded from every visual term as
in CAV-MAE (`jaxav.models.av`), and negatives come from the global batch.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxav import losses
from jaxav.errors import ConfigError
from jaxav.models.av import (
    AVBase,
    MaskedAttention,
    MaskedBlock,
    MaskedStack,
    _dense,
    _param,
    av_kwargs,
    scatter_with_mask_token,
)
from jaxav.models.mae import gather_tokens
from jaxav.models.patch import sincos_2d
from jaxav.models.video_patch import sincos_3d
from jaxav.models.vit import Mlp, layer_norm


def hierarchical_fusion(hidden: tuple[jax.Array, ...], logits: jax.Array) -> jax.Array:
    """softmax(logits)-weighted sum of layers: L x float[B, N, D], logits float[L] -> [B, N, D]."""
    w = jax.nn.softmax(logits.astype(jnp.float32))
    return sum(w[i] * h.astype(jnp.float32) for i, h in enumerate(hidden))


class CrossFusionBlock(nn.Module):
    """a += XAttn(a -> v) (only where has_video), v += XAttn(v -> a); then an MLP on each.

    `__call__(a [B, Na, D], v [B, Nv, D], has bool[B], *, train)` -> (a, v) same shapes.
    """

    num_heads: int
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, a, v, has, *, train: bool = False):
        ln = lambda name: layer_norm(self.dtype, name)
        drop = lambda y: nn.Dropout(self.dropout)(y, deterministic=not train)
        an, vn = ln("norm_a")(a), ln("norm_v")(v)
        ya = MaskedAttention(self.num_heads, self.dtype, name="attn_a")(an, kv=vn)
        yv = MaskedAttention(self.num_heads, self.dtype, name="attn_v")(vn, kv=an)
        a = a + drop(jnp.where(has[:, None, None], ya, 0.0))
        v = v + drop(yv)
        mlp = lambda name: Mlp(self.mlp_ratio, self.dropout, dtype=self.dtype, name=name)
        a = a + drop(mlp("mlp_a")(ln("norm2_a")(a), train))
        v = v + drop(mlp("mlp_v")(ln("norm2_v")(v), train))
        return a, v


class SkipDecoder(nn.Module):
    """MAE decoder for one modality with hierarchical skip connections from the encoder.

    `__call__(tokens [B, V, D], vis_idx int[B, V], pos float32[N, Dd], skips: list of
    [B, V, D], *, train)` -> predictions float32[B, N, patch_dim]; skip k is projected and added
    at the visible positions before decoder block k.
    """

    width: int
    depth: int
    num_heads: int
    patch_dim: int
    mlp_ratio: float = 4.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens, vis_idx, pos, skips, *, train: bool = False):
        n = pos.shape[0]
        mask_token = _param(self, "mask_token", (1, 1, self.width))
        y = _dense(self.width, ("embed", "mlp"), self.dtype, "embed")(tokens)
        x = scatter_with_mask_token(y, vis_idx, n, mask_token) + pos.astype(y.dtype)
        for k in range(self.depth):
            if k < len(skips):
                s = layer_norm(self.dtype, f"skip_norm_{k}")(skips[k])
                s = _dense(self.width, ("embed", "mlp"), self.dtype, f"skip_{k}")(s)
                x = x + scatter_with_mask_token(s, vis_idx, n, jnp.zeros((1, 1, self.width)))
            x = MaskedBlock(self.num_heads, self.mlp_ratio, 0.0, self.dtype, name=f"block_{k}")(
                x, train=train
            )
        x = layer_norm(self.dtype, "norm")(x)
        return _dense(self.patch_dim, ("embed", "patch"), self.dtype, "pred")(x).astype(jnp.float32)


class HiCMAE(AVBase):
    """HiCMAE; see the module docstring. Params: `audio_patch`, `video_patch`, `modality_a/v`,
    `audio_encoder`, `video_encoder`, `fusion_j`, `norm_a/v`, `decoder_a/v`, `layer_logits_a/v`
    (and `log_temperature` when learned).

    Attributes (besides `AVBase`'s):
        contrastive_layers: 1-based encoder layers with an InfoNCE term.
        contrastive_layer_weights: their weights.
        skip_layers: 1-based encoder layer feeding decoder block k (at most decoder_depth).
    """

    contrastive_layers: tuple[int, ...] = (4, 7, 10)
    contrastive_layer_weights: tuple[float, ...] = (1.0, 1.0, 1.0)
    skip_layers: tuple[int, ...] = (3, 6, 9, 10)

    def setup(self) -> None:
        self.setup_inputs()
        stack = lambda d: MaskedStack(d, self.num_heads, self.mlp_ratio, self.dropout, self.dtype)
        self.audio_encoder = stack(self.modality_depth)
        self.video_encoder = stack(self.modality_depth)
        self.fusion = [
            CrossFusionBlock(self.num_heads, self.mlp_ratio, self.dropout, self.dtype)
            for _ in range(self.joint_depth)
        ]
        self.norm_a, self.norm_v = layer_norm(self.dtype), layer_norm(self.dtype)
        p_a = self.patch_size[0] * self.patch_size[1]
        p_v = self.tubelet * self.video_patch_size[0] * self.video_patch_size[1] * 3
        dec = lambda p: SkipDecoder(
            self.decoder_width, self.decoder_depth, self.decoder_heads, p, self.mlp_ratio,
            self.dtype,
        )  # fmt: skip
        self.decoder_a, self.decoder_v = dec(p_a), dec(p_v)
        zeros = lambda _, n: jnp.zeros((n,), jnp.float32)
        self.layer_logits_a = self.param("layer_logits_a", zeros, self.modality_depth)
        self.layer_logits_v = self.param("layer_logits_v", zeros, self.modality_depth)

    def fuse(self, a, v, has, *, train: bool):
        """Runs the fusion layers: returns (a, v, tuple of concatenated [a | v] per layer)."""
        fused = []
        for blk in self.fusion:
            a, v = blk(a, v, has, train=train)
            fused.append(jnp.concatenate([a, v], axis=1))
        return a, v, tuple(fused)

    def __call__(self, batch: dict[str, jax.Array], *, train: bool):
        """Pretraining loss of `batch` {audio f32[B,T,F], video f32[B,Tv,H,W,3], has_video}.

        Needs the "mask" rng ("dropout" too when model.dropout > 0 and train).

        Returns:
            (loss, metrics {loss, mse_audio, mse_video, nce, nce_l<i>, acc_l<i>, temperature})
            float32 scalars; nce = the weighted sum over levels, i = encoder layer.
        """
        audio = batch["audio"]
        video, has = self.video_inputs(batch)
        xa, grid_a = self.embed_audio(audio)
        xv, grid_v = self.embed_video(video)
        b = xa.shape[0]
        mask_a, vis_a, _ = self.sample_mask(b, grid_a, self.mask_ratio, self.mask_kind)
        mask_v, vis_v, _ = self.sample_mask(b, grid_v, self.video_mask_ratio, "random")
        ha, hid_a = self.audio_encoder(gather_tokens(xa, vis_a), train=train)
        hv, hid_v = self.video_encoder(gather_tokens(xv, vis_v), train=train)
        nce, levels = losses.hierarchical_contrastive(
            [hid_a[i - 1] for i in self.contrastive_layers],
            [hid_v[i - 1] for i in self.contrastive_layers],
            self.contrastive_layer_weights,
            self.temp(),
            has,
        )
        metrics = {}
        for k, layer in enumerate(self.contrastive_layers, start=1):
            metrics[f"nce_l{layer}"] = levels[f"nce_{k}"]
            metrics[f"acc_l{layer}"] = levels[f"acc_{k}"]
        a, v, _ = self.fuse(ha, hv, has, train=train)
        skips_a = [hid_a[i - 1] for i in self.skip_layers]
        skips_v = [hid_v[i - 1] for i in self.skip_layers]
        pos_a = jnp.asarray(sincos_2d(grid_a, self.decoder_width))
        pos_v = jnp.asarray(sincos_3d(grid_v, self.decoder_width))
        pred_a = self.decoder_a(self.norm_a(a), vis_a, pos_a, skips_a, train=train)
        pred_v = self.decoder_v(self.norm_v(v), vis_v, pos_v, skips_v, train=train)
        mse_a = losses.masked_mse(pred_a, self.audio_targets(audio), mask_a)
        mse_v = losses.masked_mse(pred_v, self.video_targets(video), mask_v & has[:, None])
        recon = mse_a + self.video_recon_weight * mse_v
        loss = self.recon_weight * recon + self.contrastive_weight * nce
        metrics.update(loss=loss, mse_audio=mse_a, mse_video=mse_v, nce=nce)
        return loss, {**metrics, "temperature": self.temp()}

    def encode(self, audio: jax.Array, video: jax.Array, has_video: jax.Array | None = None):
        """Per-layer features of unmasked clips (eval mode, no rngs).

        Args:
            audio: float32[B, T, F]; video: float32[B, Tv, H, W, 3]; has_video: bool[B] or None.

        Returns:
            dict of float32 [B, N, D]: `audio_layer_i`, `video_layer_i` (unimodal encoder
            layers, i = 1 .. modality_depth), `fused_layer_i` ([audio | video] tokens after
            fusion layer i - modality_depth, i > modality_depth), `audio_hier` / `video_hier`
            (hierarchical feature fusion of the encoder layers).
        """
        video, has = self.video_inputs({"video": video, "has_video": has_video})
        ha, hid_a = self.audio_encoder(self.embed_audio(audio)[0])
        hv, hid_v = self.video_encoder(self.embed_video(video)[0])
        out = {}
        for i, (a, v) in enumerate(zip(hid_a, hid_v), start=1):
            out[f"audio_layer_{i}"] = a.astype(jnp.float32)
            out[f"video_layer_{i}"] = v.astype(jnp.float32)
        _, _, fused = self.fuse(ha, hv, has, train=False)
        for j, f in enumerate(fused, start=self.modality_depth + 1):
            out[f"fused_layer_{j}"] = f.astype(jnp.float32)
        out["audio_hier"] = hierarchical_fusion(hid_a, self.layer_logits_a)
        out["video_hier"] = hierarchical_fusion(hid_v, self.layer_logits_v)
        return out


def from_config(config: ml_collections.ConfigDict) -> HiCMAE:
    """HiCMAE from a full config (`model.name = "hicmae"`); checks the layer lists."""
    av = config.model.av
    kwargs = av_kwargs(config)
    depth = kwargs["modality_depth"]
    layers = tuple(int(i) for i in av.contrastive_layers)
    weights = tuple(float(w) for w in av.contrastive_layer_weights)
    skips = tuple(int(i) for i in av.skip_layers)
    if len(layers) != len(weights) or not layers:
        raise ConfigError(
            f"model.av.contrastive_layers {layers} and contrastive_layer_weights {weights} must "
            "be non-empty and of the same length"
        )
    for name, ls in (("contrastive_layers", layers), ("skip_layers", skips)):
        if any(not 1 <= i <= depth for i in ls):
            raise ConfigError(f"model.av.{name} {ls} must lie in 1 .. modality_depth={depth}")
    if len(skips) > int(config.model.decoder_depth):
        raise ConfigError(
            f"model.av.skip_layers {skips} has more entries than model.decoder_depth "
            f"{config.model.decoder_depth}"
        )
    return HiCMAE(
        contrastive_layers=layers, contrastive_layer_weights=weights, skip_layers=skips, **kwargs
    )
