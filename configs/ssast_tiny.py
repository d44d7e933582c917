"""SSAST-tiny: joint discriminative + generative masked patch modelling (Gong et al. 2022).

    jaxav train --config configs/ssast_tiny.py --workdir runs/ssast_tiny           # 16x16 patches
    jaxav train --config configs/ssast_tiny.py:frame --workdir runs/ssast_tiny_f   # 128x2 frames

ViT 192-d / 12 layers / 3 heads, 2 cls tokens (cls + dist as AST), 1024-frame (10.24 s) inputs
with 128 mel bins, 400 of 512 patches masked with patch clusters (patch variant) or 400 frame
patches masked at random (frame variant), loss = InfoNCE + 10 x MSE, AdamW 1e-4 with warm-up.
"""

from jaxav.config_defaults import base_config, set_vit_size


def ssast_config(size: str, variant: str | None):
    """The SSAST recipe at a size (tiny/small/base), patch (default) or frame variant."""
    c = base_config()
    set_vit_size(c, size)
    c.data.num_frames = 1024
    c.data.window = "hanning"  # the SSAST/AST recipes' window
    c.model.name = "ssast"
    c.model.num_cls_tokens = 2
    if variant in (None, "", "patch"):
        c.model.patch_size = c.model.patch_stride = (16, 16)  # 8 x 64 = 512 patches
        c.mask.kind = "cluster"
    elif variant == "frame":
        c.model.patch_size = c.model.patch_stride = (128, 2)  # 1 x 512 frame patches
        c.mask.kind = "random"
    else:
        raise ValueError(f"unknown variant {variant!r}: use patch or frame")
    c.mask.ratio = 400 / 512
    c.train.num_steps = 150_000
    c.train.batch_size = 96
    c.optim.lr = 1e-4
    c.optim.warmup_steps = 1000
    c.optim.weight_decay = 0.05
    c.checkpoint.every_steps = 2000
    c.checkpoint.keep = 3
    return c


def get_config(variant: str | None = None):
    return ssast_config("tiny", variant)
