"""jaxav (jit) vs its exported PyTorch model (eager and torch.compile), side by side in one process.

    python benchmarks/vs_torch.py                       # vit_tiny, vit_base, mamba_tiny
    python benchmarks/vs_torch.py --quick               # vit_tiny only, small batch, no compile
    python benchmarks/vs_torch.py --models vit_base --batch 8 --frames 1024 --no-compile
    python benchmarks/vs_torch.py --torch-threads 1       # on a shared, oversubscribed CPU

The same encoder (random init, converted with `jaxav.export.to_torch`) runs on the same
normalised log-mel input float32[batch, frames, 128] (16 x 16 patches): "fwd" = all per-layer
features, "fwd+bwd" = the gradient of the mean of the final tokens w.r.t. all encoder params.
Times are medians (seconds) after warm-up; ratios are torch time / jaxav time (> 1: jaxav faster).
The last line summarises the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch

from jaxav.config_defaults import MAMBA_SIZES, VIT_SIZES, base_config
from jaxav.export import to_torch
from jaxav.export.torch_modules import AudioEncoder
from jaxav.models import registry

MODELS = ("vit_tiny", "vit_base", "mamba_tiny")


def make_config(name: str, frames: int):
    """Full config of an SSAST model `vit_<size>` or `mamba_<size>` on frames x 128 inputs."""
    kind, size = name.split("_")
    c = base_config()
    c.data.num_frames = frames
    if kind == "vit":
        c.model.width, c.model.depth, c.model.num_heads = VIT_SIZES[size]
    else:
        c.model.encoder = "mamba"
        c.model.width, c.model.depth = MAMBA_SIZES[size]
    return c


def median_time(fn: Callable[[], object], min_total: float = 1.0, max_reps: int = 10) -> float:
    """Median wall time (s) of `fn()` after one warm-up call."""
    fn()
    times: list[float] = []
    while not times or (sum(times) < min_total and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def jax_fns(config, params, audio):
    """Jitted jaxav forward (features) and forward+backward (grads of the final tokens' mean)."""
    model = registry.build_model(config)

    def final(m, x):
        tokens, pos, _ = m.embed_patches(x)
        return m.run_encoder(tokens + pos, train=False)[0]

    fwd = jax.jit(lambda p, x: model.apply({"params": p}, x, method="encode"))
    grad = jax.jit(jax.grad(lambda p, x: model.apply({"params": p}, x, method=final).mean()))
    x = jnp.asarray(audio)
    return (
        lambda: jax.block_until_ready(fwd(params, x)),
        lambda: jax.block_until_ready(grad(params, x)),
    )


def torch_fns(model: torch.nn.Module, audio: np.ndarray):
    """Torch forward (no grad) and forward+backward of the final tokens' mean."""
    x = torch.from_numpy(audio)

    def fwd():
        with torch.no_grad():
            return model(x)

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        model(x)["final"].mean().backward()

    return fwd, fwd_bwd


def bench(name: str, batch: int, frames: int, compile_: bool) -> dict[str, float]:
    """Times one model; returns {"<impl> <pass>": seconds}."""
    config = make_config(name, frames)
    model = registry.build_model(config)
    audio = np.random.default_rng(0).standard_normal((batch, frames, 128)).astype(np.float32)
    params = model.init(jax.random.key(0), audio[:1], method="encode")["params"]
    params = jax.tree.map(jnp.asarray, __import__("flax").linen.meta.unbox(params))
    cfg = to_torch.encoder_config(config)
    tmodel = AudioEncoder(cfg)
    state = to_torch.to_torch_state(params, cfg)
    tmodel.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    tmodel.eval()

    out: dict[str, float] = {}
    jf, jg = jax_fns(config, params, audio)
    out["jaxav fwd"], out["jaxav fwd+bwd"] = median_time(jf), median_time(jg)
    tf, tg = torch_fns(tmodel, audio)
    out["torch fwd"], out["torch fwd+bwd"] = median_time(tf), median_time(tg)
    if compile_:
        try:
            cf, cg = torch_fns(torch.compile(tmodel), audio)
            out["compiled fwd"], out["compiled fwd+bwd"] = median_time(cf), median_time(cg)
        except Exception as e:  # noqa: BLE001 - inductor needs a C++ toolchain; report and go on
            print(f"  torch.compile unavailable here: {type(e).__name__}: {str(e)[:120]}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--frames", type=int, default=256)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--torch-threads", type=int, default=0, help="0: torch's default")
    p.add_argument("--quick", action="store_true", help="vit_tiny, batch 2, no torch.compile")
    a = p.parse_args()
    models, batch, compile_ = a.models.split(","), a.batch, not a.no_compile
    if a.quick:
        models, batch, compile_ = ["vit_tiny"], 2, False
    if a.torch_threads:  # OpenMP spinning is ruinous on an oversubscribed machine
        torch.set_num_threads(a.torch_threads)
    print(
        f"jax {jax.__version__} ({jax.default_backend()}, {jax.device_count()} devices), "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads); "
        f"batch {batch}, {a.frames} frames x 128 mel bins"
    )
    summary = []
    for name in models:
        t = bench(name, batch, a.frames, compile_)
        for pass_ in ("fwd", "fwd+bwd"):
            j = t[f"jaxav {pass_}"]
            row = f"{name:11s} {pass_:8s} jaxav {j * 1e3:9.1f} ms"
            for impl in ("torch", "compiled"):
                if f"{impl} {pass_}" in t:
                    r = t[f"{impl} {pass_}"] / j
                    row += f" | {impl} {t[f'{impl} {pass_}'] * 1e3:9.1f} ms ({r:5.2f}x)"
                    summary.append(f"{name} {pass_} {impl}/jaxav {r:.2f}x")
            print(row, flush=True)
    print("ratios (torch time / jaxav time): " + "; ".join(summary))


if __name__ == "__main__":
    main()
