"""SSAST-base: ViT 768-d / 12 layers / 12 heads; patch (default) or frame variant.

    jaxav train --config configs/ssast_base.py --workdir runs/ssast_base
    jaxav train --config configs/ssast_base.py:frame --workdir runs/ssast_base_frame

The same recipe as configs/ssast_tiny.py at base size (the SSAST paper's main model).
"""

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location(
    "ssast_tiny_recipe", pathlib.Path(__file__).with_name("ssast_tiny.py")
)
_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tiny)


def get_config(variant: str | None = None):
    return _tiny.ssast_config("base", variant)
