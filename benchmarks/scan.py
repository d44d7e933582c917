"""Selective-scan implementations side by side: forward+backward time and peak memory.

    python benchmarks/scan.py                  # full sweep, lengths 512 ... 16384
    python benchmarks/scan.py --quick          # lengths 512 and 2048
    python benchmarks/scan.py --lengths 1024,4096 --impls chunked,sequential

Shape (batch 8, channels 384, state 16) by default. For each (impl, length) the jitted
forward+backward (values and the gradients of all six inputs, given a cotangent) is compiled once,
its peak memory read from ``compile().memory_analysis()`` (temp + argument + output bytes), and
timed (median of repeats). The byte floor is what must be read and written once: inputs and the
cotangent, the output, the gradients; ``x floor`` = time / (floor bytes / bandwidth), with the
bandwidth measured in this run by a large array copy (on CPU) or taken as nominal (GPU/TPU).
Combinations predicted to exceed the memory or time budget are printed as ``skipped (reason)``;
Pallas runs in interpret mode on CPU and is timed only at the smallest length there.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from host import available_bytes  # benchmarks/host.py

from jaxav.ops.scan import IMPLS, selective_scan
from jaxav.xla_flags import apply_cpu_flags

NOMINAL_BW = {"gpu": 3.35e12, "tpu": 1.6e12}  # bytes/s (H100 SXM HBM3, TPU v5p)


def _time(fn, *args, min_total: float = 0.5, max_reps: int = 10) -> float:
    """Median wall time (s) of ``fn(*args)`` after one warm-up call (repeats up to min_total)."""
    jax.block_until_ready(fn(*args))
    times: list[float] = []
    while not times or (sum(times) < min_total and len(times) < max_reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_bandwidth(nbytes: int = 1 << 28) -> float:
    """Device memory bandwidth in bytes/s from a large elementwise copy (read + write)."""
    backend = jax.default_backend()
    if backend in NOMINAL_BW:
        return NOMINAL_BW[backend]
    x = jnp.ones((nbytes // 4,), jnp.float32)
    copy = jax.jit(lambda v: v * 1.0001)
    return 2 * nbytes / _time(copy, x)


def make_inputs(b: int, L: int, d: int, n: int, seed: int = 0) -> list[jax.Array]:
    """float32 (x, dt, A, B, C, D, dy) with realistic ranges."""
    r = np.random.default_rng(seed)
    arrs = [
        r.standard_normal((b, L, d)),
        np.log1p(np.exp(r.standard_normal((b, L, d)) - 2.0)),
        -np.exp(0.5 * r.standard_normal((d, n))),
        r.standard_normal((b, L, n)),
        r.standard_normal((b, L, n)),
        r.standard_normal(d),
        r.standard_normal((b, L, d)),
    ]
    return [jnp.asarray(a, jnp.float32) for a in arrs]


def fwd_bwd(impl: str):
    """(x, dt, A, B, C, D, dy) -> (y, (dx, ddt, dA, dB, dC, dD))."""

    def f(x, dt, A, B, C, D, dy):
        y, vjp = jax.vjp(lambda *a: selective_scan(*a, impl=impl), x, dt, A, B, C, D)
        return y, vjp(dy)

    return jax.jit(f)


def floor_bytes(args: list[jax.Array]) -> int:
    """Bytes read and written once: inputs + cotangent, output y, and the six gradients."""
    inputs = sum(a.nbytes for a in args[:6])
    return inputs + args[6].nbytes + args[0].nbytes + inputs


def run(lengths, impls, b, d, n, time_budget, mem_fraction) -> list[dict]:
    """Benchmark every (length, impl); returns rows with time, memory and skip reasons."""
    cpu = jax.default_backend() == "cpu"
    bandwidth = measure_bandwidth()
    mem_budget = mem_fraction * available_bytes(8 << 30)
    print(f"backend {jax.default_backend()}, {os.cpu_count()} cpus, b={b} d={d} n={n}")
    print(f"bandwidth {bandwidth / 1e9:.1f} GB/s ({'measured' if cpu else 'nominal'})")
    rows, last_time = [], {}
    for L in lengths:
        args = make_inputs(b, L, d, n)
        floor = floor_bytes(args)
        for impl in impls:
            row = dict(L=L, impl=impl, floor=floor)
            rows.append(row)
            if impl == "pallas" and cpu and L != min(lengths):
                row["skip"] = "interpret mode on CPU: smallest length only"
                continue
            if impl in last_time:
                prev_L, prev_t = last_time[impl]
                est = prev_t * L / prev_L
                if est > time_budget:
                    row["skip"] = f"estimated {est:.0f} s per call > budget {time_budget:.0f} s"
                    continue
            fn = fwd_bwd(impl)
            mem = fn.lower(*args).compile().memory_analysis()
            peak = None
            if mem is not None:
                peak = mem.temp_size_in_bytes + mem.argument_size_in_bytes
                peak += mem.output_size_in_bytes
                row["peak"] = peak
            if peak is not None and peak > mem_budget:
                row["skip"] = f"peak {peak / 2**30:.1f} GiB > budget {mem_budget / 2**30:.1f} GiB"
                continue
            t = _time(fn, *args)
            row["time"] = t
            last_time[impl] = (L, t)
            print(f"  L={L:6d} {impl:12s} {t * 1e3:10.1f} ms", flush=True)
        del args
    for row in rows:
        row["bw"] = bandwidth
    return rows


def print_table(rows: list[dict]) -> None:
    """One line per (length, impl): time, x floor, peak memory, and ratios vs associative."""
    print()
    cols = ("ms", "x floor", "peak MiB", "t/assoc", "m/assoc")
    hdr = f"{'L':>6} {'impl':12} " + " ".join(f"{c:>{w}}" for c, w in zip(cols, (10, 9, 9, 8, 8)))
    print(hdr)
    print("-" * len(hdr))
    ref = {r["L"]: r for r in rows if r["impl"] == "associative"}
    for r in rows:
        if "skip" in r:
            print(f"{r['L']:>6} {r['impl']:12} skipped ({r['skip']})")
            continue
        floor_s = r["floor"] / r["bw"]
        a = ref.get(r["L"], {})
        t_ratio = f"{r['time'] / a['time']:.2f}" if "time" in a else "-"
        m_ratio = f"{r['peak'] / a['peak']:.2f}" if "peak" in a and "peak" in r else "-"
        peak = f"{r['peak'] / 2**20:.0f}" if "peak" in r else "-"
        print(
            f"{r['L']:>6} {r['impl']:12} {r['time'] * 1e3:10.1f} {r['time'] / floor_s:9.0f} "
            f"{peak:>9} {t_ratio:>8} {m_ratio:>8}"
        )
    timed = [r for r in rows if "time" in r]
    if timed:
        L = max(r["L"] for r in timed)
        best = min((r for r in timed if r["L"] == L), key=lambda r: r["time"])
        print(f"fastest fwd+bwd at L={L}: {best['impl']} ({best['time'] * 1e3:.1f} ms)")


def main(argv: list[str] | None = None) -> None:
    """Parse flags, run the sweep, print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--lengths", default="512,1024,2048,4096,8192,16384")
    p.add_argument("--quick", action="store_true", help="lengths 512,2048")
    p.add_argument("--impls", default=",".join(IMPLS))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--channels", type=int, default=384)
    p.add_argument("--state", type=int, default=16)
    p.add_argument("--time-budget", type=float, default=10.0, help="max seconds per call")
    p.add_argument("--mem-fraction", type=float, default=0.5, help="of available host memory")
    p.add_argument("--no-cpu-flags", action="store_true", help="XLA's default CPU flags")
    a = p.parse_args(argv)
    if not a.no_cpu_flags:
        apply_cpu_flags()  # before the first computation starts JAX's backend
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    lengths = [512, 2048] if a.quick else [int(v) for v in a.lengths.split(",")]
    impls = a.impls.split(",")
    rows = run(sorted(lengths), impls, a.batch, a.channels, a.state, a.time_budget, a.mem_fraction)
    print_table(rows)


if __name__ == "__main__":
    main()
