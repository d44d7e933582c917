"""Shared config pieces (imported by configs/*.py): defaults every recipe starts from, size presets.

Every recipe's `get_config()` calls `base_config()` and changes what it needs, so all recipes have
the same keys (`--config.train.num_steps=...` works everywhere).
"""

import ml_collections

# (width, depth, num_heads) of the SSAST / SSAMBA encoder sizes.
VIT_SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12)}
MAMBA_SIZES = {"tiny": (192, 24), "small": (384, 24), "base": (768, 24)}


def base_config() -> ml_collections.ConfigDict:
    """The full set of keys, with defaults for a small SSAST on synth_av."""
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.dataset = "synth_av"  # synth_av | audio_folder | manifest
    c.data.source = ""  # folder or manifest file for audio_folder / manifest
    c.data.data_dir = ""  # '' -> TFDS_DATA_DIR or ~/tensorflow_datasets
    c.data.pretrain_split = "unlabeled"
    c.data.sample_rate = 16000
    c.data.num_frames = 256  # log-mel frames per example (10 ms hop): 256 = 2.56 s
    c.data.num_mel_bins = 128
    c.data.with_video = False
    c.data.video_frames = 4  # frames per clip fed to the visual stream
    c.data.video_size = 32  # square frame side in pixels after resizing
    c.data.synth = ml_collections.ConfigDict()  # synth_av builder options (sizes, seed)
    c.data.synth.num_unlabeled = 1536
    c.data.synth.num_train = 768
    c.data.synth.num_validation = 256
    c.data.synth.num_test = 512
    c.data.synth.clip_seconds = 2.0
    c.data.synth.seed = 0
    c.data.window = "povey"  # fbank window: povey (Kaldi default) | hanning (AST/SSAST recipes)
    c.data.num_workers = 0  # grain worker processes (0 = in-process)
    c.data.prefetch = 2

    c.model = ml_collections.ConfigDict()
    c.model.name = "ssast"  # ssast | audiomae | cavmae | hicmae (jaxav.models.registry)
    c.model.encoder = "vit"  # vit | mamba
    c.model.width = 192
    c.model.depth = 12
    c.model.num_heads = 3
    c.model.mlp_ratio = 4.0
    c.model.patch_size = (16, 16)  # (freq, time) in mel bins x frames
    c.model.patch_stride = (16, 16)  # smaller than patch_size = overlapping patches (AST)
    c.model.num_cls_tokens = 1  # 0, 1 or 2 (AST's cls + distillation token)
    c.model.dropout = 0.0
    c.model.decoder_width = 128  # Audio-MAE / AV decoders
    c.model.decoder_depth = 2
    c.model.decoder_heads = 4
    c.model.recon_weight = 10.0  # SSAST: 10x MSE + InfoNCE
    c.model.contrastive_weight = 1.0
    c.model.norm_pix_loss = True
    c.model.dtype = "float32"  # compute dtype: float32 | bfloat16 (params stay float32)
    c.model.mamba = ml_collections.ConfigDict()
    c.model.mamba.d_state = 16
    c.model.mamba.expand = 2
    c.model.mamba.d_conv = 4
    c.model.mamba.dt_rank = 0  # 0 -> ceil(width / 16)
    c.model.mamba.scan_impl = "auto"  # sequential | associative | chunked | pallas | auto
    c.model.mamba.cls_position = "middle"  # middle | end
    # Audio-visual models (cavmae, hicmae: jaxav/models/av.py, hicmae.py). Audio patches, mask
    # kind/ratio, width, heads, decoder sizes and loss weights come from model.* and mask.*.
    c.model.av = ml_collections.ConfigDict()
    c.model.av.modality_depth = 11  # audio / visual layers before the joint (fusion) layers
    c.model.av.joint_depth = 1  # CAV-MAE shared joint layers | HiCMAE cross-modal fusion layers
    c.model.av.video_patch_size = (16, 16)  # (height, width) pixels
    c.model.av.tubelet = 1  # frames per visual token: 1 = image patches, 2 = tubelets
    c.model.av.video_mask_ratio = 0.75
    c.model.av.pos_embed = "sincos"  # sincos | learned (audio and video positions)
    c.model.av.video_recon_weight = 1.0  # times the audio MSE, inside recon_weight
    c.model.av.temperature = 0.05  # InfoNCE temperature (initial value when learned)
    c.model.av.learn_temperature = False  # log-parameterised, clipped to the range below
    c.model.av.min_temperature = 0.01
    c.model.av.max_temperature = 1.0
    c.model.av.contrastive_layers = (4, 7, 10)  # HiCMAE: encoder layers (1-based) with InfoNCE
    c.model.av.contrastive_layer_weights = (1.0, 1.0, 1.0)
    c.model.av.skip_layers = (3, 6, 9, 10)  # HiCMAE: encoder layer feeding decoder block k

    c.mask = ml_collections.ConfigDict()
    c.mask.kind = "random"  # random | cluster | time_freq | inverse_block
    c.mask.ratio = 0.75  # fraction of patches masked

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 1000
    c.train.batch_size = 32  # global batch
    c.train.grad_accum_steps = 1
    c.train.log_every = 10
    c.train.max_nonfinite_in_a_row = 5
    c.train.progress_bar = True

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 1e-3
    c.optim.min_lr_ratio = 0.01
    c.optim.warmup_steps = 100
    c.optim.weight_decay = 0.05
    c.optim.b1 = 0.9
    c.optim.b2 = 0.95
    c.optim.clip_norm = 1.0

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 200
    c.checkpoint.keep = 3
    c.checkpoint.async_save = True

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # -1: all devices left over
    c.mesh.fsdp = 1
    c.mesh.model = 1

    c.probe = ml_collections.ConfigDict()
    c.probe.batch_size = 64
    c.probe.l2_grid = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
    c.probe.steps = 300
    c.probe.knn_k = 10
    return c


def set_vit_size(c: ml_collections.ConfigDict, size: str) -> None:
    """Sets model.width/depth/num_heads to an SSAST size preset (tiny/small/base)."""
    c.model.width, c.model.depth, c.model.num_heads = VIT_SIZES[size]


def set_mamba_size(c: ml_collections.ConfigDict, size: str) -> None:
    """Sets model.width/depth to an SSAMBA size preset and switches the encoder to Mamba."""
    c.model.encoder = "mamba"
    c.model.width, c.model.depth = MAMBA_SIZES[size]
