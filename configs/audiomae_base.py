"""Audio-MAE base (Huang et al. 2022): the encoder sees only the 20 % visible patches.

    jaxav train --config configs/audiomae_base.py --workdir runs/audiomae_base
    jaxav train --config configs/audiomae_base.py:tf --workdir runs/audiomae_tf   # time+freq masks

ViT-B encoder (768-d, 12 layers, 12 heads) on 1024 x 128 log-mel, 16x16 patches, 80 % masked
(random, or time+frequency with `:tf`), a 16-head 512-d 8-layer decoder reconstructing
normalised patches (MSE on masked patches), AdamW 2e-4, batch 512, 32 epochs of AudioSet-2M.
"""

from jaxav.config_defaults import base_config, set_vit_size


def get_config(variant: str | None = None):
    c = base_config()
    set_vit_size(c, "base")
    c.data.num_frames = 1024
    c.data.window = "hanning"
    c.model.name = "audiomae"
    c.model.num_cls_tokens = 1
    c.model.patch_size = c.model.patch_stride = (16, 16)
    c.model.decoder_width = 512
    c.model.decoder_depth = 8
    c.model.decoder_heads = 16
    c.model.norm_pix_loss = True
    c.mask.ratio = 0.8
    if variant in (None, "", "random"):
        c.mask.kind = "random"
    elif variant == "tf":
        c.mask.kind = "time_freq"
    else:
        raise ValueError(f"unknown variant {variant!r}: use random or tf")
    c.train.num_steps = 125_000
    c.train.batch_size = 512
    c.optim.lr = 2e-4
    c.optim.warmup_steps = 3000
    c.optim.weight_decay = 0.0001
    c.checkpoint.every_steps = 2000
    c.checkpoint.keep = 3
    return c
