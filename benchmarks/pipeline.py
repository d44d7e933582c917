"""Input-pipeline and fbank throughput on this machine, side by side in one process.

    python benchmarks/pipeline.py [--clips 64] [--batches 12]

1. The fbank on `--clips` 10-second clips at 16 kHz (1024 frames x 128 mel bins each):
   jaxav's numpy fbank, jaxav's JAX fbank (jitted, batched) and librosa's log-mel spectrogram
   (same window length, hop, FFT size and mel bins) — clips per second and ratios vs librosa.
2. The whole training pipeline (TFDS ArrayRecord source -> grain shuffle -> random crop ->
   fbank -> normalise -> batch) on a synth_av dataset of 10-second clips, with 1 and 2 grain
   worker processes (and in-process, 0 workers), in clips per second.
3. For scale: the quickstart model's train step in examples per second, so the pipeline's margin
   over the model it feeds can be read off (the pipeline must not be the bottleneck).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax
import numpy as np

from jaxav.data import frontend, pipeline
from jaxav.data.prepare import prepare_dataset

SR = 16000
SECONDS = 10


def make_clips(n: int, seed: int = 0) -> np.ndarray:
    """float32[n, 160000]: tones + noise, 10 s each."""
    rng = np.random.default_rng(seed)
    t = np.arange(SR * SECONDS) / SR
    f0 = rng.uniform(100, 2000, (n, 1))
    return (0.3 * np.sin(2 * np.pi * f0 * t) + 0.05 * rng.standard_normal((n, t.size))).astype(
        np.float32
    )


def time_per_clip(fn, clips, repeats: int = 2) -> float:
    """Best-of-`repeats` clips per second of fn(clips)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(clips)
        best = min(best, time.perf_counter() - t0)
    return len(clips) / best


def fbank_section(n: int) -> None:
    import librosa

    clips = make_clips(n)
    numpy_rate = time_per_clip(lambda cs: [frontend.fbank_numpy(c) for c in cs], clips)

    def librosa_logmel(cs):
        for c in cs:
            m = librosa.feature.melspectrogram(
                y=c,
                sr=SR,
                n_fft=512,
                win_length=400,
                hop_length=160,
                n_mels=128,
                center=False,
                power=2.0,
                htk=True,
            )
            np.log(np.maximum(m, 1.1920929e-07))

    librosa_rate = time_per_clip(librosa_logmel, clips)
    batch = jax.device_put(clips)
    frontend.fbank_jax(batch).block_until_ready()  # compile
    jax_rate = time_per_clip(lambda b: frontend.fbank_jax(b).block_until_ready(), batch)
    print(
        f"fbank on {n} x {SECONDS} s clips (clips/s): numpy {numpy_rate:.1f}, "
        f"jax {jax_rate:.1f}, librosa {librosa_rate:.1f}"
    )
    print(
        f"fbank ratios vs librosa: numpy {numpy_rate / librosa_rate:.2f}x, "
        f"jax {jax_rate / librosa_rate:.2f}x"
    )


def pipeline_section(num_batches: int, batch_size: int) -> float:
    data_dir = tempfile.mkdtemp(prefix="jaxav_bench_")
    t0 = time.perf_counter()
    ds = prepare_dataset(
        "synth_av",
        data_dir=data_dir,
        num_unlabeled=256,
        num_train=16,
        num_validation=16,
        num_test=16,
        clip_seconds=float(SECONDS),
    )
    print(f"prepared synth_av with {SECONDS} s clips in {time.perf_counter() - t0:.1f} s")
    spec = pipeline.ExampleSpec(
        num_frames=1024, num_mel_bins=128, mean=ds.stats["mean"], std=ds.stats["std"]
    )
    best = 0.0
    for workers in (0, 1, 2):
        # Timed from the iterator's creation: read-ahead buffers (grain prefetches in threads
        # and worker processes) would otherwise serve the timed batches for free.
        t0 = time.perf_counter()
        it = iter(
            pipeline.make_train_dataset(
                ds.source("unlabeled"), spec, batch_size=batch_size, seed=0, num_workers=workers
            )
        )
        for _ in range(num_batches):
            next(it)
        rate = num_batches * batch_size / (time.perf_counter() - t0)
        del it
        best = max(best, rate)
        print(
            f"pipeline, {workers} worker(s): {rate:.1f} clips/s (1024 x 128 log-mel per clip, "
            f"{num_batches * batch_size} clips incl. start-up)"
        )
    return best


def model_section() -> None:
    from jaxav.config import get_config
    from jaxav.models.registry import build_model
    from jaxav.train import sharding as shd
    from jaxav.train import step as step_lib
    from jaxav.train.optim import make_optimizer

    config = get_config("configs/quickstart.py")
    model = build_model(config)
    tx = make_optimizer(config.optim, 100)
    mesh = shd.make_mesh(config.mesh)
    spec = pipeline.ExampleSpec(
        num_frames=config.data.num_frames, num_mel_bins=config.data.num_mel_bins
    )
    state, shardings = step_lib.init_state(model, tx, mesh, step_lib.dummy_batch(spec, 1), 0)
    fn = step_lib.jit_train_step(step_lib.make_train_step(model, tx), shardings, mesh)
    b = config.train.batch_size
    batch = {
        "audio": np.random.default_rng(0)
        .standard_normal((b, config.data.num_frames, config.data.num_mel_bins))
        .astype(np.float32),
        "label": np.zeros(b, np.int32),
    }
    state, m = fn(state, batch)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(5):
        state, m = fn(state, batch)
    jax.block_until_ready(m)
    rate = 5 * b / (time.perf_counter() - t0)
    print(f"quickstart train step: {rate:.1f} examples/s ({config.data.num_frames} frames)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=16)
    args = parser.parse_args()
    fbank_section(args.clips)
    pipeline_section(args.batches, args.batch_size)
    model_section()


if __name__ == "__main__":
    main()
