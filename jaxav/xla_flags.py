"""XLA flags for the host CPU, chosen once per process before JAX starts.

XLA's CPU compiler emits 256-bit vector code by default even where the CPU has AVX-512. Loops
that are pure vector arithmetic on data in cache gain from 512-bit vectors: the selective scan's
recurrence (an exp and two multiply-adds per state entry and step) runs ~1.8x faster with
``--xla_cpu_prefer_vector_width=512`` (``benchmarks/scan.py``); matrix products (oneDNN /
Eigen kernels) are unaffected. The `jaxav` command and the benchmarks apply these flags; a value
the user set in ``XLA_FLAGS`` always wins.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

VECTOR_WIDTH_FLAG = "--xla_cpu_prefer_vector_width"


def cpu_has_avx512(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """True when the host CPU reports AVX-512 foundation (``avx512f``); False if unknown."""
    try:
        with open(cpuinfo_path) as f:
            for line in f:
                if line.startswith("flags"):
                    return "avx512f" in line.split()
    except OSError:
        pass
    return False


def with_cpu_flags(xla_flags: str, *, avx512: bool | None = None) -> str:
    """Returns ``xla_flags`` plus the CPU flags this host gains from, unless already set.

    Args:
        xla_flags: the current ``XLA_FLAGS`` string (space-separated ``--name=value`` flags).
        avx512: whether the CPU has AVX-512; None reads ``/proc/cpuinfo``.
    """
    if avx512 is None:
        avx512 = cpu_has_avx512()
    if not avx512 or VECTOR_WIDTH_FLAG in xla_flags:
        return xla_flags
    return f"{xla_flags} {VECTOR_WIDTH_FLAG}=512".strip()


def apply_cpu_flags(environ: MutableMapping[str, str] | None = None) -> str:
    """Sets ``XLA_FLAGS`` in ``environ`` (default ``os.environ``) to `with_cpu_flags` of it.

    Takes effect only in a process that has not initialised a JAX backend yet (call it before the
    first computation, or pass a child process's environment). Returns the new value.
    """
    environ = os.environ if environ is None else environ
    environ["XLA_FLAGS"] = with_cpu_flags(environ.get("XLA_FLAGS", ""))
    return environ["XLA_FLAGS"]
