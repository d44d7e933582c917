"""Export of jaxav encoders to PyTorch and Hugging Face (`jaxav export`).

`load_torch(folder)` loads a `--format torch` folder as a `torch.nn.Module` (see
`jaxav.export.torch_modules`); `jaxav.export.to_torch.export` writes one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_torch(path: str | Path, device: Any = "cpu") -> Any:
    """Loads `config.json` + `model.safetensors` from a `jaxav export --format torch` folder.

    Returns:
        `jaxav.export.torch_modules.AudioEncoder` (eval mode, float32): `model(audio)` with
        `audio: float32[B, T, F]` normalised log-mel gives {layer_i, cls_i, final, final_cls}.
    """
    from jaxav.export.torch_modules import load_torch as _load

    return _load(path, device)


__all__ = ["load_torch"]
