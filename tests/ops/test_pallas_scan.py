"""Pallas selective-scan kernel vs the float64 references of `test_scan.py`.

`TestPallasScan` (INTERPRET = False) runs the compiled kernel and is skipped without a GPU/TPU;
`TestPallasScanInterpret` reruns every case with INTERPRET = True, which executes the same kernel
code in Pallas interpret mode on CPU.
"""

import jax
import jax.numpy as jnp
import pytest

try:
    from test_scan import BF16_TOL, check_impl
except ImportError:  # tests/ imported as a package
    from tests.ops.test_scan import BF16_TOL, check_impl

from jaxav.ops.pallas_scan import ScanKernelConfig

# (length, chunk, block_d, sequence_in_grid): lengths no multiple of the chunk, channel padding
# (d = 6 with block_d 4), both drivers (grid over chunks with a scratch carry / in-kernel loop).
CASES = [
    (203, 64, 128, True),
    (203, 16, 4, False),
    (17, 8, 4, True),
    (1, 64, 128, False),
]


class TestPallasScan:
    INTERPRET = False

    def setup_method(self):
        if not self.INTERPRET and jax.default_backend() not in ("gpu", "tpu"):
            pytest.skip("compiled Pallas kernel needs a GPU or TPU")

    def config(self, chunk: int, block_d: int, in_grid: bool) -> ScanKernelConfig:
        if not self.INTERPRET and in_grid and jax.default_backend() == "gpu":
            pytest.skip("Triton has no scratch memory: GPU uses the in-kernel loop driver")
        return ScanKernelConfig(block_d, chunk, interpret=self.INTERPRET, sequence_in_grid=in_grid)

    @pytest.mark.parametrize("reverse", [False, True])
    @pytest.mark.parametrize("L,chunk,block_d,in_grid", CASES)
    def test_fp32_matches_reference(self, L, chunk, block_d, in_grid, reverse):
        check_impl("pallas", L, reverse, config=self.config(chunk, block_d, in_grid))

    def test_bf16_within_bound(self):
        cfg = self.config(16, 4, True)
        check_impl("pallas", 67, True, dtype=jnp.bfloat16, tol=BF16_TOL, config=cfg)

    def test_config_is_frozen_and_resolves(self):
        cfg = ScanKernelConfig()
        with pytest.raises(AttributeError):
            cfg.chunk = 8  # type: ignore[misc]
        resolved = cfg.resolved()
        assert resolved.interpret == (jax.default_backend() == "cpu")
        assert resolved.sequence_in_grid == (jax.default_backend() != "gpu")


class TestPallasScanInterpret(TestPallasScan):
    INTERPRET = True
