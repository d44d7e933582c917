"""HiCMAE base (Sun et al. 2024): HiCMAE-B-like sizes for audio-visual pretraining on video data.

    jaxav prepare manifest --source /data/voxceleb2.csv
    jaxav train --config configs/hicmae_base.py --workdir runs/hicmae_base \
        --config.data.dataset=manifest --config.data.source=/data/voxceleb2.csv

512 wide (8 heads): 10 audio + 10 visual encoder layers and 2 cross-modal fusion layers;
2.56 s of 128-bin log-mel in 16 x 16 patches and 16 frames of 160 x 160 in 2 x 16 x 16 tubelets;
80 % of the audio and 90 % of the visual tokens masked; InfoNCE at encoder layers 4, 7 and 10
(equal weights); 4-layer, 384-wide decoders per modality with skip connections from encoder
layers 3, 6, 9 and 10.
"""

from jaxav.config_defaults import base_config


def get_config():
    c = base_config()
    c.data.with_video = True
    c.data.num_frames = 256
    c.data.num_mel_bins = 128
    c.data.video_frames = 16
    c.data.video_size = 160
    c.model.name = "hicmae"
    c.model.width, c.model.num_heads, c.model.mlp_ratio = 512, 8, 4.0
    c.model.patch_size = c.model.patch_stride = (16, 16)
    c.model.decoder_width, c.model.decoder_depth, c.model.decoder_heads = 384, 4, 6
    c.model.recon_weight = 1.0
    c.model.contrastive_weight = 0.01
    c.model.av.modality_depth = 10
    c.model.av.joint_depth = 2
    c.model.av.video_patch_size = (16, 16)
    c.model.av.tubelet = 2
    c.model.av.video_mask_ratio = 0.9
    c.model.av.pos_embed = "sincos"
    c.model.av.temperature = 0.07
    c.model.av.learn_temperature = True
    c.model.av.contrastive_layers = (4, 7, 10)
    c.model.av.contrastive_layer_weights = (1.0, 1.0, 1.0)
    c.model.av.skip_layers = (3, 6, 9, 10)
    c.mask.kind = "random"
    c.mask.ratio = 0.8
    c.train.num_steps = 100_000
    c.train.batch_size = 256
    c.optim.lr = 3e-4
    c.optim.warmup_steps = 2000
    c.checkpoint.every_steps = 2000
    c.checkpoint.keep = 3
    return c
