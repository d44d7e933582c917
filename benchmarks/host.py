"""Host facts the benchmarks size their runs by (imported by the scripts beside it)."""

from __future__ import annotations


def available_bytes(default: int) -> int:
    """Free host memory in bytes (Linux ``MemAvailable``), or ``default`` where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return default
