"""Registry: names -> models/encoders, clear ConfigErrors."""

import importlib

import pytest

from jaxav.config_defaults import base_config
from jaxav.errors import ConfigError
from jaxav.models import registry
from jaxav.models.audiomae import AudioMAE
from jaxav.models.ssast import SSAST
from jaxav.models.vit import ViTEncoder


def test_builds_known_models():
    c = base_config()
    c.model.name = "ssast"
    model = registry.build_model(c)
    assert isinstance(model, SSAST) and isinstance(model.encoder, ViTEncoder)
    assert model.ref_grid == (8, 16)  # 128 bins x 256 frames, 16 x 16 patches
    assert model.pos_embed_kind == "learned" and model.recon_weight == 10.0
    c.model.name = "audiomae"
    c.mask.ratio = 0.8
    model = registry.build_model(c)
    assert isinstance(model, AudioMAE) and model.pos_embed_kind == "sincos"
    assert model.mask_ratio == 0.8
    assert {"ssast", "audiomae"} <= set(registry.model_names())


def test_unknown_model_lists_known_ones():
    c = base_config()
    c.model.name = "nope"
    with pytest.raises(ConfigError, match="nope.*audiomae.*ssast"):
        registry.build_model(c)


def test_needs_full_config():
    with pytest.raises(ConfigError, match="full config"):
        registry.build_model(base_config().model)


def test_unknown_encoder_and_dtype():
    c = base_config()
    c.model.encoder = "lstm"
    with pytest.raises(ConfigError, match="lstm.*mamba.*vit"):
        registry.build_encoder(c.model)
    c = base_config()
    c.model.dtype = "float16"
    with pytest.raises(ConfigError, match="float16"):
        registry.build_model(c)


def test_bad_patch_grid_is_config_error():
    c = base_config()
    c.data.num_frames = 8
    with pytest.raises(ConfigError, match="patch"):
        registry.build_model(c)


def test_mamba_encoder_when_available():
    mamba = importlib.import_module("jaxav.models.mamba")
    c = base_config()
    c.model.encoder = "mamba"
    assert isinstance(registry.build_encoder(c.model), mamba.MambaEncoder)
    model = registry.build_model(c)
    assert model.cls_position == c.model.mamba.cls_position


def test_bad_mask_settings_are_config_errors():
    c = base_config()
    c.mask.kind = "stripes"
    with pytest.raises(ConfigError, match="stripes"):
        registry.build_model(c)
    c = base_config()
    c.mask.ratio = 1.0
    with pytest.raises(ConfigError, match="ratio"):
        registry.build_model(c)
