"""Audio-visual train steps (CAV-MAE, HiCMAE) side by side: steps/s, peak memory, and the share of
the step spent on HiCMAE's hierarchical contrastive terms.

    python benchmarks/av_step.py                     # base sizes, batch 2 (CPU-friendly)
    python benchmarks/av_step.py --batch 8 --repeats 5
    python benchmarks/av_step.py --configs configs/cavmae_quickstart.py,configs/hicmae_quickstart.py

For each config the full train step (forward, backward, AdamW update: `jaxav.train.step`) is
jitted once on one device; peak memory is `compile().memory_analysis()` (temp + argument + output
bytes); time is the median of `--repeats` steps after a warm-up. For HiCMAE the same step is also
built with the contrastive levels removed (`contrastive_layers=()`: no InfoNCE term is computed,
not just weighted by 0), and the difference is reported as the hierarchical-contrastive share.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from jaxav.config import get_config
from jaxav.models.registry import build_model
from jaxav.train import sharding as shd
from jaxav.train import step as step_lib
from jaxav.train.optim import make_optimizer


class _Spec:
    """The pipeline's ExampleSpec fields `dummy_batch` reads, from a config."""

    def __init__(self, config):
        d = config.data
        self.num_frames, self.num_mel_bins, self.with_video = d.num_frames, d.num_mel_bins, True
        self.video_frames, self.video_size = d.video_frames, d.video_size


def measure(config, model, batch_size: int, repeats: int) -> dict:
    """Compiles and times one train step of `model`; returns seconds/step, steps/s, peak MiB."""
    mesh = shd.make_mesh(config.mesh, jax.devices()[:1])
    tx = make_optimizer(config.optim, config.train.num_steps)
    state, shardings = step_lib.init_state(
        model, tx, mesh, step_lib.dummy_batch(_Spec(config), 1), config.seed
    )
    rng = np.random.default_rng(0)
    batch = {
        k: (rng.standard_normal(v.shape).astype(v.dtype) if v.dtype == np.float32 else v)
        for k, v in step_lib.dummy_batch(_Spec(config), batch_size).items()
    }
    step = step_lib.jit_train_step(step_lib.make_train_step(model, tx), shardings, mesh)
    t0 = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    peak = mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
    state, metrics = compiled(state, batch)  # warm-up
    jax.block_until_ready(metrics)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    params = sum(x.size for x in jax.tree.leaves(state.params))
    return dict(
        sec=sec, steps_per_s=1.0 / sec, peak_mib=peak / 2**20, compile_s=compile_s, params=params
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="configs/cavmae_base.py,configs/hicmae_base.py")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), batch {args.batch}")
    for path in args.configs.split(","):
        config = get_config(path)
        model = build_model(config)
        r = measure(config, model, args.batch, args.repeats)
        print(
            f"{path}: {r['params'] / 1e6:.1f} M params, {r['steps_per_s']:.3f} steps/s "
            f"({r['sec'] * 1e3:.0f} ms/step), peak {r['peak_mib']:.0f} MiB, "
            f"compile {r['compile_s']:.1f} s"
        )
        if config.model.name == "hicmae":
            bare = model.clone(contrastive_layers=(), contrastive_layer_weights=())
            r0 = measure(config, bare, args.batch, args.repeats)
            share = (r["sec"] - r0["sec"]) / r["sec"]
            print(
                f"  without the {len(model.contrastive_layers)} contrastive levels: "
                f"{r0['sec'] * 1e3:.0f} ms/step, peak {r0['peak_mib']:.0f} MiB -> hierarchical "
                f"contrastive terms = {100 * share:.1f} % of the step "
                f"(+{r['peak_mib'] - r0['peak_mib']:.0f} MiB)"
            )


if __name__ == "__main__":
    main()
