"""Train-step speed and memory, and jaxav's encoder against PyTorch's AST, in one process.

    python benchmarks/train_step.py [--batch 4] [--steps 3] [--sizes tiny,base]

1. The SSAST train step (jit, donated state) of `configs/ssast_tiny.py` and
   `configs/ssast_base.py` (1024 frames x 128 mel bins, 16x16 patches): steps/s, examples/s and
   XLA's peak memory estimate of the compiled step.
2. The share of step time spent waiting for data: a short `jaxav train` of the quickstart recipe
   on synth_av, timing `next(iterator)` against the whole loop.
3. The encoder's forward+backward (patch embedding, positions, cls tokens, all blocks; loss =
   sum of the last hidden state; gradients for every parameter), jaxav (jit) against
   `transformers.ASTModel` of the same size on the same input, eager and `torch.compile`,
   printed as ratios (PyTorch time / jaxav time: > 1 means jaxav is faster).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxav.config import get_config
from jaxav.data.pipeline import ExampleSpec
from jaxav.models.registry import build_model
from jaxav.train import sharding as shd
from jaxav.train import step as step_lib
from jaxav.train.optim import make_optimizer


def timed(fn, repeats: int) -> float:
    """Median seconds of fn() over `repeats` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def train_step_section(size: str, batch: int, steps: int) -> None:
    config = get_config(f"configs/ssast_{size}.py", [f"train.batch_size={batch}"])
    model = build_model(config)
    tx = make_optimizer(config.optim, 1000)
    mesh = shd.make_mesh(config.mesh)
    spec = ExampleSpec(num_frames=config.data.num_frames, num_mel_bins=128)
    state, shardings = step_lib.init_state(model, tx, mesh, step_lib.dummy_batch(spec, 1), 0)
    fn = step_lib.jit_train_step(step_lib.make_train_step(model, tx), shardings, mesh)
    data = {
        "audio": np.random.default_rng(0)
        .standard_normal((batch, spec.num_frames, 128))
        .astype(np.float32),
        "label": np.zeros(batch, np.int32),
    }
    mem = fn.lower(state, data).compile().memory_analysis()
    peak = mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
    holder = {"state": state}

    def one():
        holder["state"], m = fn(holder["state"], data)
        jax.block_until_ready(m)

    sec = timed(one, steps)
    print(
        f"ssast_{size} train step (batch {batch}, 1024x128): {1 / sec:.3f} steps/s, "
        f"{batch / sec:.2f} examples/s, peak {peak / 2**30:.2f} GiB",
        flush=True,
    )


def data_wait_section(steps: int) -> None:
    from jaxav.train.trainer import train

    overrides = [
        f"train.num_steps={steps}",
        "train.progress_bar=false",
        "train.log_every=1000",
        f"checkpoint.every_steps={steps}",
        "data.synth.num_unlabeled=256",
        "data.synth.num_train=32",
        "data.synth.num_validation=16",
        "data.synth.num_test=16",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        config = get_config("configs/quickstart.py", overrides + [f"data.data_dir={tmp}/tfds"])
        t0 = time.perf_counter()
        result = train(config, f"{tmp}/w")
        total = time.perf_counter() - t0
    print(
        f"quickstart: {steps} steps in {total:.1f} s (with compile and prepare); "
        f"waiting for data {result['data_wait_s']:.2f} s = "
        f"{100 * result['data_wait_s'] / total:.1f} % of the run",
        flush=True,
    )


def encoder_section(size: str, batch: int, repeats: int) -> None:
    import torch
    import transformers

    config = get_config(f"configs/ssast_{size}.py")
    model = build_model(config)
    audio = np.random.default_rng(0).standard_normal((batch, 1024, 128)).astype(np.float32)
    params = model.init(
        {
            "params": jax.random.PRNGKey(0),
            "mask": jax.random.PRNGKey(1),
            "dropout": jax.random.PRNGKey(2),
        },
        {"audio": audio[:1]},
        train=False,
    )["params"]
    import flax.linen as nn

    params = nn.unbox(params)
    depth = config.model.depth

    def loss(p, a):
        return jnp.sum(model.apply({"params": p}, a, method="encode")[f"layer_{depth}"])

    fwd = jax.jit(lambda p, a: model.apply({"params": p}, a, method="encode")[f"layer_{depth}"])
    grad = jax.jit(jax.grad(loss))
    x = jnp.asarray(audio)
    t_fwd = timed(lambda: fwd(params, x).block_until_ready(), repeats)
    t_bwd = timed(lambda: jax.block_until_ready(grad(params, x)), repeats)

    w, d, h = config.model.width, config.model.depth, config.model.num_heads
    ast_config = transformers.ASTConfig(
        hidden_size=w,
        num_hidden_layers=d,
        num_attention_heads=h,
        intermediate_size=4 * w,
        patch_size=16,
        frequency_stride=16,
        time_stride=16,
        max_length=1024,
        num_mel_bins=128,
        layer_norm_eps=1e-6,
    )
    torch.manual_seed(0)
    ast = transformers.ASTModel(ast_config).eval()
    tx = torch.from_numpy(audio)
    results = {}
    for name in ("eager", "compile"):
        m = ast
        if name == "compile":
            try:
                m = torch.compile(ast)
                with torch.no_grad():
                    m(tx)
            except Exception as e:  # torch.compile needs a C++ toolchain; report, don't fail
                print(f"torch.compile unavailable: {type(e).__name__}: {str(e)[:100]}")
                continue

        def f(m=m):
            with torch.no_grad():
                return m(tx).last_hidden_state

        def fb(m=m):
            m.zero_grad(set_to_none=True)
            m(tx).last_hidden_state.sum().backward()

        results[name] = (timed(f, repeats), timed(fb, repeats))
    print(
        f"encoder ssast_{size} (batch {batch}, 1024x128): jaxav fwd {t_fwd * 1e3:.0f} ms, "
        f"fwd+bwd {t_bwd * 1e3:.0f} ms",
        flush=True,
    )
    for name, (tf, tb) in results.items():
        print(
            f"  torch {name}: fwd {tf * 1e3:.0f} ms, fwd+bwd {tb * 1e3:.0f} ms -> jaxav speed-up "
            f"fwd {tf / t_fwd:.2f}x, fwd+bwd {tb / t_bwd:.2f}x",
            flush=True,
        )
    if results:
        best_fwd = min(r[0] for r in results.values())
        best_bwd = min(r[1] for r in results.values())
        print(
            f"encoder_vs_torch size={size} fwd_ratio={best_fwd / t_fwd:.2f} "
            f"fwd_bwd_ratio={best_bwd / t_bwd:.2f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--sizes", default="tiny,base")
    parser.add_argument("--wait_steps", type=int, default=30)
    args = parser.parse_args()
    for size in args.sizes.split(","):
        train_step_section(size, args.batch, args.steps)
    data_wait_section(args.wait_steps)
    for size in args.sizes.split(","):
        encoder_section(size, args.batch, args.steps)


if __name__ == "__main__":
    main()
