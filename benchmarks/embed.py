"""Feature-extraction speed: clips per second of `encode` for 10-second clips (1024 frames).

    python benchmarks/embed.py [--sizes tiny,base] [--batch 8] [--repeats 3]

Randomly initialised SSAST ViT encoders (tiny: 192 wide, 12 deep; base: 768 wide, 12 deep),
16x16 patches over 1024 frames x 128 mel bins (512 patches), float32, every device of this
machine (data parallel, as `jaxav probe` runs). Times `Encoder.encode` (host batch in, pooled
per-layer features back on the host) after one warm-up call, and prints clips/s per size.
"""

import argparse
import time

import numpy as np

from jaxav.config_defaults import base_config, set_vit_size
from jaxav.evaluate.run_probe import random_encoder

NUM_FRAMES = 1024  # 10.24 s at a 10 ms hop


def clips_per_second(size: str, batch: int, repeats: int) -> float:
    """Clips/s of pooled per-layer features for one ViT size (random init)."""
    config = base_config()
    set_vit_size(config, size)
    config.data.num_frames = NUM_FRAMES
    encoder = random_encoder(config)
    batch = max(batch, encoder.batch_devices)
    x = np.random.default_rng(0).normal(size=(batch, NUM_FRAMES, 128)).astype(np.float32)
    encoder.encode(x)  # compile
    start = time.perf_counter()
    for _ in range(repeats):
        encoder.encode(x)
    return repeats * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,base")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import jax

    print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}, clip: 1024 frames")
    for size in args.sizes.split(","):
        rate = clips_per_second(size, args.batch, args.repeats)
        print(f"{size:>5}: {rate:8.2f} clips/s ({1000.0 / rate:.1f} ms/clip)", flush=True)


if __name__ == "__main__":
    main()
