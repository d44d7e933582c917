"""CAV-MAE base (Gong et al. 2023): the paper's sizes, for AudioSet / VGGSound-scale data.

    jaxav prepare manifest --source /data/vggsound.csv
    jaxav train --config configs/cavmae_base.py --workdir runs/cavmae_base \
        --config.data.dataset=manifest --config.data.source=/data/vggsound.csv

ViT-B width (768, 12 heads): 11 audio + 11 visual layers and 1 shared joint layer; 10.24 s of
128-bin log-mel in 16 x 16 patches (512 tokens) and one 224 x 224 frame in 16 x 16 patches
(196 tokens); 75 % of each modality masked; an 8-layer, 512-wide joint decoder; loss =
MSE_audio + MSE_visual + 0.01 x InfoNCE at temperature 0.05 (fixed). Fine-tuned or probed, the
paper's CAV-MAE reaches about 42 mAP (audio-visual) on AudioSet-20K; this recipe is not tuned
to reproduce that here (no pretrained ImageNet/AudioSet initialisation).
"""

from jaxav.config_defaults import base_config


def get_config():
    c = base_config()
    c.data.with_video = True
    c.data.num_frames = 1024
    c.data.num_mel_bins = 128
    c.data.video_frames = 1
    c.data.video_size = 224
    c.data.window = "hanning"
    c.model.name = "cavmae"
    c.model.width, c.model.num_heads, c.model.mlp_ratio = 768, 12, 4.0
    c.model.patch_size = c.model.patch_stride = (16, 16)
    c.model.decoder_width, c.model.decoder_depth, c.model.decoder_heads = 512, 8, 16
    c.model.recon_weight = 1.0
    c.model.contrastive_weight = 0.01
    c.model.norm_pix_loss = True
    c.model.av.modality_depth = 11
    c.model.av.joint_depth = 1
    c.model.av.video_patch_size = (16, 16)
    c.model.av.tubelet = 1
    c.model.av.video_mask_ratio = 0.75
    c.model.av.pos_embed = "sincos"
    c.model.av.temperature = 0.05
    c.model.av.learn_temperature = False
    c.mask.kind = "random"
    c.mask.ratio = 0.75
    c.train.num_steps = 100_000
    c.train.batch_size = 256
    c.optim.lr = 1e-4
    c.optim.warmup_steps = 2000
    c.checkpoint.every_steps = 2000
    c.checkpoint.keep = 3
    return c
