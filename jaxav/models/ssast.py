"""SSAST: joint discriminative and generative masked spectrogram patch modelling (Gong et al. 2022).

The encoder sees every patch, the masked ones replaced by a learned mask embedding (before the
positions are added, as SSAST does). On the masked positions' outputs two MLP heads predict:
- generative: the patch values (MSE against the, optionally normalised, patch);
- discriminative: a vector that must pick its own patch among the masked patches of the same clip
  (InfoNCE with logits pred_i . target_j, temperature `temperature`; SSAST uses 1).
loss = contrastive_weight * nce + recon_weight * mse (SSAST: 1 and 10).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxav import losses
from jaxav.models.mae import MaskedAudioModel, MlpHead, common_kwargs, gather_tokens


class SSAST(MaskedAudioModel):
    """SSAST pretraining objective; see the module docstring and `MaskedAudioModel`.

    Params: `patch_embed`, `pos_embed` (learned: `table`), `cls_token`, `mask_embed`, `encoder`,
    `gen_head`, `disc_head`.
    """

    recon_weight: float = 10.0
    contrastive_weight: float = 1.0
    temperature: float = 1.0

    def setup(self) -> None:
        super().setup()
        self.mask_embed = self.param(
            "mask_embed",
            nn.with_logical_partitioning(nn.initializers.xavier_normal(), (None, None, "embed")),
            (1, 1, self.width),
        )
        self.gen_head = MlpHead(self.width, self.patch_dim, self.dtype)
        self.disc_head = MlpHead(self.width, self.patch_dim, self.dtype)

    def __call__(
        self, batch: dict[str, jax.Array], *, train: bool
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Pretraining loss for `batch["audio"]: float32[B, T, F]`.

        Needs the "mask" rng (and "dropout" when model.dropout > 0 and train).

        Returns:
            (loss float32 scalar, metrics {loss, nce, mse, acc} float32 scalars); acc = fraction
            of masked patches whose discriminative prediction picks the right patch.
        """
        audio = batch["audio"]
        x, pos, grid = self.embed_patches(audio)  # [B, N, D]
        mask, _, masked_idx = self.sample_mask(x.shape[0], grid)  # bool[B, N], int[B, M]
        x = jnp.where(mask[..., None], self.mask_embed.astype(x.dtype), x)
        tokens, _, _ = self.run_encoder(x + pos.astype(x.dtype), train=train)
        selected = gather_tokens(tokens, masked_idx)  # [B, M, D]
        target = gather_tokens(self.targets(audio), masked_idx)  # float32[B, M, P]
        gen = self.gen_head(selected).astype(jnp.float32)
        disc = self.disc_head(selected).astype(jnp.float32)
        mse = losses.masked_mse(gen, target)
        nce, acc = losses.info_nce(disc, target, self.temperature)
        loss = self.contrastive_weight * nce + self.recon_weight * mse
        return loss, {"loss": loss, "nce": nce, "mse": mse, "acc": acc}


def from_config(config: ml_collections.ConfigDict) -> SSAST:
    """SSAST from a full config (model, mask, data); positions default to learned (as SSAST)."""
    from jaxav.models.registry import build_encoder  # (registry imports us)

    return SSAST(
        encoder=build_encoder(config.model),
        recon_weight=float(config.model.recon_weight),
        contrastive_weight=float(config.model.contrastive_weight),
        **common_kwargs(config, default_pos_embed="learned"),
    )
