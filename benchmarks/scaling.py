"""SSAMBA-tiny vs SSAST-tiny (ViT) batch inference as the token count grows, side by side.

    python benchmarks/scaling.py                      # 512 ... 22016 tokens
    python benchmarks/scaling.py --tokens 512,2048 --batch 2

Both encoders take the same token sequences `float32[batch, tokens, 192]` (the patch embedding,
identical for both, is left out): SSAST-tiny is a 12-layer 3-head ViT, SSAMBA-tiny a 24-layer
bidirectional Mamba (d_state 16, expand 2) on the selective scan `--scan_impl` ("auto": the
chunked scan on CPU, the Pallas kernel on GPU/TPU). Each token count runs in a fresh child
process (so one count's freed memory cannot crowd out the next), holding both encoders: time is
the median of `--repeats` jitted forward passes after a warm-up (the ViT: 1 above 8192 tokens,
where one pass takes minutes), the two encoders run in turns on the same input; memory is XLA's
peak estimate for the compiled program (arguments + outputs + temporaries,
`compiled.memory_analysis()`), the same accounting for both.
Both run under the same XLA flags, those `jaxav.xla_flags` picks for this CPU (512-bit vectors on
AVX-512 hosts; `--no_cpu_flags` for XLA's defaults). A count whose ViT would not fit in the
available memory is skipped, saying so. Prints a table, then as its last line:

    ssamba_vs_vit tokens=<N> speed_ratio=<x> memory_ratio=<y>

for the largest token count measured (ratios ViT / Mamba). SSAMBA reports about 13.7x and 21.7x
at ~22k tokens on GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
from host import available_bytes  # benchmarks/host.py

from jaxav.models.mamba import MambaEncoder
from jaxav.models.vit import ViTEncoder
from jaxav.xla_flags import apply_cpu_flags

WIDTH = 192


def build(kind: str, scan_impl: str):
    """(module, params) for SSAST-tiny's ViT or SSAMBA-tiny's bidirectional Mamba."""
    if kind == "vit":
        module = ViTEncoder(width=WIDTH, depth=12, num_heads=3)
    else:
        module = MambaEncoder(
            width=WIDTH, depth=24, d_state=16, expand=2, d_conv=4, scan_impl=scan_impl
        )
    x = jnp.zeros((1, 16, WIDTH), jnp.float32)
    params = jax.jit(lambda k: module.init(k, x, train=False))(jax.random.PRNGKey(0))
    return module, params


def compile_forward(module, params, batch: int, tokens: int):
    """(compiled jitted forward, its input, XLA's peak bytes) for one batch of `tokens` tokens.

    The input is the same `float32[batch, tokens, 192]` for both encoders (PRNGKey(1)); the peak
    is arguments + outputs + temporaries of the compiled program (`memory_analysis`).
    """
    fwd = jax.jit(lambda p, x: module.apply(p, x, train=False)[0])
    x = jax.random.normal(jax.random.PRNGKey(1), (batch, tokens, WIDTH), jnp.float32)
    compiled = fwd.lower(params, x).compile()
    mem = compiled.memory_analysis()
    peak = int(mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes)
    return compiled, x, peak


# Resident growth over XLA's estimate for the ViT (YNNPACK fusions' own scratch): measured 1.32
# at 8192 tokens, 1.55 at 20000.
RSS_OVER_ESTIMATE = 1.55


def measure(models: dict, batch: int, tokens: int, repeats: dict) -> dict:
    """{kind: (median seconds per forward, peak bytes)}, the encoders timed in turns.

    Both are compiled and warmed up first; then each round runs every encoder that still owes
    repeats (``repeats[kind]``) once, so a change in the (shared) machine's load affects both.
    """
    runs = {k: compile_forward(*models[k], batch, tokens) for k in models}
    available = available_bytes(1 << 62)
    for k, (_, _, peak) in runs.items():
        # XLA's estimate undercounts what the CPU runtime really holds (RSS_OVER_ESTIMATE):
        # refuse a run that would be OOM-killed, and say so, rather than die without a table.
        if peak * RSS_OVER_ESTIMATE > available:
            raise MemoryError(
                f"{k} at {tokens} tokens needs ~{peak * RSS_OVER_ESTIMATE / 2**30:.1f}"
                f" GiB, {available / 2**30:.1f} GiB available"
            )
    for k, (compiled, x, _) in runs.items():
        compiled(models[k][1], x).block_until_ready()  # warm-up
    times = {k: [] for k in runs}
    for _ in range(max(repeats.values())):
        for k, (compiled, x, _) in runs.items():
            if len(times[k]) >= repeats[k]:
                continue
            t0 = time.perf_counter()
            compiled(models[k][1], x).block_until_ready()
            times[k].append(time.perf_counter() - t0)
    return {k: (statistics.median(times[k]), runs[k][2]) for k in runs}


def run_one(tokens: int, batch: int, repeats: dict, scan_impl: str) -> dict:
    """Both encoders at one token count in this process: {"vit"|"mamba": [seconds, bytes]}."""
    models = {k: build(k, scan_impl) for k in ("vit", "mamba")}
    try:
        result = measure(models, batch, tokens, repeats)
        return {"backend": jax.default_backend(), "result": result}
    except MemoryError as e:
        return {"skipped": str(e)}


def run_child(tokens: int, args, env: dict) -> dict:
    """`run_one` in a fresh Python process with `env`; its JSON answer (last stdout line)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--_one", str(tokens)]
    cmd += ["--batch", str(args.batch), "--repeats", str(args.repeats)]
    cmd += ["--scan_impl", args.scan_impl]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return {"skipped": f"child process exited {proc.returncode}: {tail[0]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="512,1024,2048,4096,8192,16384,20000,22016")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scan_impl", default="auto")
    parser.add_argument("--no_cpu_flags", action="store_true", help="XLA's default CPU flags")
    parser.add_argument("--_one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._one is not None:  # child: one token count, answer as JSON
        repeats = {"vit": args.repeats if args._one <= 8192 else 1, "mamba": args.repeats}
        print(json.dumps(run_one(args._one, args.batch, repeats, args.scan_impl)))
        return

    env = dict(os.environ)
    if not args.no_cpu_flags:
        apply_cpu_flags(env)
    counts = [int(t) for t in args.tokens.split(",")]
    print(f"batch {args.batch}, XLA_FLAGS={env.get('XLA_FLAGS', '')!r}, a process per count")
    print(
        f"{'tokens':>7} {'vit s':>9} {'mamba s':>9} {'vit MiB':>10} {'mamba MiB':>10} "
        f"{'speed x':>8} {'memory x':>9}",
        flush=True,
    )
    last = None
    for n in counts:
        answer = run_child(n, args, env)
        if "skipped" in answer:
            print(f"{n:>7} skipped: {answer['skipped']}", flush=True)
            continue
        backend = answer["backend"]
        (tv, mv), (tm, mm) = answer["result"]["vit"], answer["result"]["mamba"]
        last = (n, tv / tm, mv / mm)
        print(
            f"{n:>7} {tv:>9.3f} {tm:>9.3f} {mv / 2**20:>10.1f} {mm / 2**20:>10.1f} "
            f"{tv / tm:>8.2f} {mv / mm:>9.2f}",
            flush=True,
        )
    if last is None:
        raise SystemExit("no token count fitted in memory")
    n, speed, memory = last
    print(f"backend {backend}")
    print(f"ssamba_vs_vit tokens={n} speed_ratio={speed:.2f} memory_ratio={memory:.2f}")


if __name__ == "__main__":
    main()
