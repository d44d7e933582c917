"""Name -> constructor for encoders (`model.encoder`) and pretraining models (`model.name`).

Explicit dicts, no string-to-attribute lookups: adding a model is one line in `_MODELS` (a
function taking the full config and returning the flax Module).
"""

from collections.abc import Callable

import flax.linen as nn
import ml_collections

from jaxav.errors import ConfigError
from jaxav.models import audiomae, av, hicmae, ssast
from jaxav.models.mae import compute_dtype
from jaxav.models.vit import ViTEncoder

ModelBuilder = Callable[[ml_collections.ConfigDict], nn.Module]

_MODELS: dict[str, ModelBuilder] = {
    "ssast": ssast.from_config,
    "audiomae": audiomae.from_config,
    "cavmae": av.from_config,
    "hicmae": hicmae.from_config,
}


def _vit(m: ml_collections.ConfigDict) -> nn.Module:
    return ViTEncoder(
        width=int(m.width),
        depth=int(m.depth),
        num_heads=int(m.num_heads),
        mlp_ratio=float(m.mlp_ratio),
        dropout=float(m.dropout),
        dtype=compute_dtype(m.dtype),
        remat=bool(m.get("remat", False)),
    )


def _mamba(m: ml_collections.ConfigDict) -> nn.Module:
    from jaxav.models.mamba import MambaEncoder  # (optional until built)

    return MambaEncoder(
        width=int(m.width),
        depth=int(m.depth),
        d_state=int(m.mamba.d_state),
        expand=int(m.mamba.expand),
        d_conv=int(m.mamba.d_conv),
        dt_rank=int(m.mamba.dt_rank),
        scan_impl=str(m.mamba.scan_impl),
        dtype=compute_dtype(m.dtype),
    )


_ENCODERS: dict[str, Callable[[ml_collections.ConfigDict], nn.Module]] = {
    "vit": _vit,
    "mamba": _mamba,
}


def model_names() -> list[str]:
    """The registered `model.name` values."""
    return sorted(_MODELS)


def build_encoder(model_config: ml_collections.ConfigDict) -> nn.Module:
    """Token encoder from `config.model` by `model.encoder` ("vit" | "mamba").

    The result maps `x: float32[B, N, width]` (train=...) to `(final, hidden)` (docs/contracts.md).
    Raises ConfigError for an unknown encoder or dtype.
    """
    name = model_config.encoder
    if name not in _ENCODERS:
        raise ConfigError(
            f"unknown model.encoder {name!r}; known encoders: {', '.join(sorted(_ENCODERS))}"
        )
    return _ENCODERS[name](model_config)


def build_model(config: ml_collections.ConfigDict) -> nn.Module:
    """Pretraining model from the FULL config by `config.model.name`.

    Models read `config.model`, `config.mask` (kind, ratio) and `config.data` (num_frames,
    num_mel_bins: the grid learned positions are stored for). The module's
    `apply({"params": p}, batch, train=..., rngs={"mask": k, "dropout": k2})` gives
    `(loss, metrics)` and `apply({"params": p}, audio, method="encode")` per-layer features.
    Raises ConfigError for an unknown name (listing the known ones) or a bad setting.
    """
    if "model" not in config or "mask" not in config or "data" not in config:
        raise ConfigError(
            "build_model takes the full config (with model, mask and data sections), "
            "not config.model alone"
        )
    name = config.model.name
    if name not in _MODELS:
        raise ConfigError(f"unknown model.name {name!r}; known models: {', '.join(model_names())}")
    return _MODELS[name](config)
