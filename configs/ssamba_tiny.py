"""SSAMBA-tiny (Shams et al. 2024): SSAST's objective on a bidirectional Mamba encoder.

    jaxav train --config configs/ssamba_tiny.py --workdir runs/ssamba_tiny
    jaxav train --config configs/ssamba_tiny.py:frame --workdir runs/ssamba_tiny_frame

Bidirectional Mamba (Vim v2 style: separate forward/backward scan parameters), 192-d x 24 layers,
d_state 16, expand 2, d_conv 4, cls token in the middle of the sequence; the selective scan is
`model.mamba.scan_impl` ("auto": the Pallas kernel on GPU/TPU, the chunked scan on CPU).
Joint discriminative + generative masked patch modelling as SSAST, 400 of 512 patches masked.
"""

import importlib.util
import pathlib

from jaxav.config_defaults import set_mamba_size

_spec = importlib.util.spec_from_file_location(
    "ssast_tiny_recipe", pathlib.Path(__file__).with_name("ssast_tiny.py")
)
_ssast = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ssast)


def ssamba_config(size: str, variant: str | None):
    """SSAST's recipe with the encoder switched to a bidirectional Mamba of `size`."""
    c = _ssast.ssast_config("tiny", variant)
    set_mamba_size(c, size)
    c.model.num_cls_tokens = 1
    c.model.mamba.cls_position = "middle"
    c.optim.lr = 5e-4
    return c


def get_config(variant: str | None = None):
    return ssamba_config("tiny", variant)
