"""SSAMBA-base: bidirectional Mamba 768-d x 24 layers under the SSAST objective.

jaxav train --config configs/ssamba_base.py --workdir runs/ssamba_base
"""

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location(
    "ssamba_tiny_recipe", pathlib.Path(__file__).with_name("ssamba_tiny.py")
)
_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tiny)


def get_config(variant: str | None = None):
    c = _tiny.ssamba_config("base", variant)
    c.optim.lr = 1e-4
    return c
