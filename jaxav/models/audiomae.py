"""Audio-MAE (Huang et al. 2022): masked autoencoder on spectrogram patches.

The encoder sees ONLY the visible patches (with their positions; fixed sin-cos by default, as
MAE). A lighter Transformer decoder gets the encoded visible tokens projected to the decoder width,
with a learned mask token at every masked position (tokens back in positional order), plus fixed
sin-cos decoder positions, and predicts each patch's values; loss = MSE on the masked patches of
the (per-patch normalised when norm_pix_loss) targets.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxav import losses
from jaxav.models.mae import MaskedAudioModel, common_kwargs, gather_tokens
from jaxav.models.patch import sincos_2d
from jaxav.models.vit import ViTEncoder


class AudioMAE(MaskedAudioModel):
    """Audio-MAE objective; see the module docstring and `MaskedAudioModel`.

    Params: `patch_embed`, `pos_embed` (only when learned), `cls_token`, `encoder`,
    `decoder_embed`, `mask_token`, `decoder`, `decoder_pred`.
    """

    decoder_width: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    mlp_ratio: float = 4.0

    def setup(self) -> None:
        super().setup()
        init = nn.initializers.xavier_uniform()
        self.decoder_embed = nn.Dense(
            self.decoder_width,
            dtype=self.dtype,
            kernel_init=nn.with_logical_partitioning(init, ("embed", "mlp")),
        )
        self.mask_token = self.param(
            "mask_token",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, None, "embed")),
            (1, 1, self.decoder_width),
        )
        self.decoder = ViTEncoder(
            self.decoder_width,
            self.decoder_depth,
            self.decoder_heads,
            self.mlp_ratio,
            dtype=self.dtype,
        )
        self.decoder_pred = nn.Dense(
            self.patch_dim,
            dtype=self.dtype,
            kernel_init=nn.with_logical_partitioning(init, ("embed", "patch")),
        )

    def __call__(
        self, batch: dict[str, jax.Array], *, train: bool
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Pretraining loss for `batch["audio"]: float32[B, T, F]`.

        Needs the "mask" rng (and "dropout" when model.dropout > 0 and train).

        Returns:
            (loss float32 scalar, metrics {loss, mse} float32 scalars).
        """
        pred, mask = self.reconstruct(batch["audio"], train=train)
        mse = losses.masked_mse(pred, self.targets(batch["audio"]), mask)
        return mse, {"loss": mse, "mse": mse}

    def reconstruct(self, audio: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array]:
        """Masks, encodes the visible patches and decodes every patch.

        Args:
            audio: float32[B, T, F].

        Returns:
            (pred float32[B, N, p_f * p_t] in target space, mask bool[B, N] True = masked).
        """
        x, pos, grid = self.embed_patches(audio)
        b, n, _ = x.shape
        mask, visible_idx, _ = self.sample_mask(b, grid)  # visible_idx: [B, V]
        visible = gather_tokens(x + pos.astype(x.dtype), visible_idx)  # [B, V, D]
        tokens, cls, _ = self.run_encoder(visible, train=train)

        y = self.decoder_embed(tokens)  # [B, V, Dd]
        full = jnp.broadcast_to(self.mask_token.astype(y.dtype), (b, n, self.decoder_width))
        full = full.at[jnp.arange(b)[:, None], visible_idx].set(y)  # positional order
        full = full + jnp.asarray(sincos_2d(grid, self.decoder_width), y.dtype)[None]
        if cls is not None:
            full = jnp.concatenate([self.decoder_embed(cls), full], axis=1)
        decoded, _ = self.decoder(full, train=train)
        pred = self.decoder_pred(decoded[:, decoded.shape[1] - n :])
        return pred.astype(jnp.float32), mask


def from_config(config: ml_collections.ConfigDict) -> AudioMAE:
    """Audio-MAE from a full config (model, mask, data); positions default to fixed sin-cos."""
    from jaxav.models.registry import build_encoder  # (registry imports us)

    m = config.model
    kwargs: dict[str, Any] = common_kwargs(config, default_pos_embed="sincos")
    return AudioMAE(
        encoder=build_encoder(m),
        decoder_width=int(m.decoder_width),
        decoder_depth=int(m.decoder_depth),
        decoder_heads=int(m.decoder_heads),
        mlp_ratio=float(m.mlp_ratio),
        **kwargs,
    )
