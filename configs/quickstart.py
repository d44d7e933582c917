"""Quickstart: a small SSAST (ViT) pretrained on the embedded synth_av dataset in minutes on CPU.

    jaxav train --config configs/quickstart.py --workdir runs/quickstart
    jaxav probe --workdir runs/quickstart --dataset synth_av

Pretrains a 4-layer, 128-wide ViT with SSAST's joint objective (masked-patch InfoNCE + 10x MSE)
on 2.56 s clips; the probe on synth_av should clearly beat the same encoder at random init and
the MFCC baseline (README, "Results").
"""

from jaxav.config_defaults import base_config


def get_config():
    c = base_config()
    c.data.num_frames = 192
    c.model.name = "ssast"
    c.model.width = 128
    c.model.depth = 4
    c.model.num_heads = 4
    c.model.num_cls_tokens = 2
    c.model.patch_size = (16, 16)
    c.model.patch_stride = (16, 16)
    c.mask.kind = "random"
    c.mask.ratio = 0.5
    c.train.num_steps = 300
    c.train.batch_size = 32
    c.train.log_every = 5
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 30
    c.checkpoint.every_steps = 50
    c.checkpoint.keep = 2
    return c
