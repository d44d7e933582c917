"""Quickstart: a small SSAST (ViT) pretrained on the embedded synth_av dataset in minutes on CPU.

    jaxav train --config configs/quickstart.py --workdir runs/quickstart
    jaxav probe --workdir runs/quickstart --dataset synth_av

Pretrains a 4-layer, 128-wide ViT (2 cls tokens, as SSAST/AST) with SSAST's joint objective
(masked-patch InfoNCE + 10x MSE, half the 4 x 12 patches masked) on 1.92 s clips of 64 mel bins,
800 steps of 32 clips (about 2 minutes on 2 CPU cores). Measured on synth_av `label`: 0.754
best-layer linear probe vs 0.629 for the same encoder at random init (README, "Results").
"""

from jaxav.config_defaults import base_config


def get_config():
    c = base_config()
    c.data.num_frames = 192
    c.data.num_mel_bins = 64
    c.model.name = "ssast"
    c.model.width = 128
    c.model.depth = 4
    c.model.num_heads = 4
    c.model.num_cls_tokens = 2
    c.model.patch_size = (16, 16)
    c.model.patch_stride = (16, 16)
    c.mask.kind = "random"
    c.mask.ratio = 0.5
    c.train.num_steps = 800
    c.train.batch_size = 32
    c.train.log_every = 10
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 30
    c.checkpoint.every_steps = 100
    c.checkpoint.keep = 2
    return c
