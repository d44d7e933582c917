"""Shared fixtures of the trainer tests: one tiny synth_av dataset and a tiny config builder.

The dataset is prepared once per test session in a temporary TFDS dir; every config built here
points at it (`data.data_dir`), so neither in-process `train()` calls nor `jaxav train`
subprocesses ever prepare it again. The same tiny recipe exists as a config file (for the CLI)
and as a ConfigDict (for `train()`), built from one text so the two cannot drift apart.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# The tiny recipe: a 2-layer, 32-wide ViT on 64 x 32 log-mel patches of a 128-clip synth_av.
TINY_CONFIG_PY = '''\
"""Tiny SSAST on a tiny synth_av, for the trainer tests."""

from jaxav.config_defaults import base_config


def get_config():
    c = base_config()
    c.data.data_dir = {data_dir!r}
    c.data.num_frames = 64
    c.data.num_mel_bins = 32
    c.data.synth.num_unlabeled = 64
    c.data.synth.num_train = 32
    c.data.synth.num_validation = 16
    c.data.synth.num_test = 16
    c.data.synth.clip_seconds = 1.0
    c.model.width, c.model.depth, c.model.num_heads = 32, 2, 2
    c.model.decoder_width, c.model.decoder_depth, c.model.decoder_heads = 32, 1, 2
    c.model.patch_size = c.model.patch_stride = (16, 16)
    c.mask.ratio = 0.5
    c.train.num_steps = 6
    c.train.batch_size = 8
    c.train.log_every = 1
    c.train.progress_bar = False
    c.optim.lr = 3e-3
    c.optim.warmup_steps = 2
    c.checkpoint.every_steps = 3
    c.checkpoint.keep = 10
    return c
'''


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """A persistent XLA cache for this session: every `train()` call and `jaxav train` subprocess
    builds a new jit of the same step, which then compiles once per mesh instead of once per call.
    """
    import jax

    cache = tmp_path_factory.mktemp("xla_cache")
    old = {k: getattr(jax.config, k) for k in _CACHE_FLAGS}
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    yield cache
    for k, v in old.items():
        jax.config.update(k, v)


_CACHE_FLAGS = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
)


@pytest.fixture(scope="session")
def tiny_env(tmp_path_factory):
    """Prepares the tiny synth_av once; returns (config file path, TFDS data dir)."""
    root = tmp_path_factory.mktemp("trainer_data")
    data_dir = root / "tfds"
    config_file = root / "tiny_config.py"
    config_file.write_text(TINY_CONFIG_PY.format(data_dir=str(data_dir)))

    from jaxav.config import get_config
    from jaxav.train.trainer import open_dataset

    dataset = open_dataset(get_config(str(config_file)).data)
    assert dataset.splits["unlabeled"] == 64
    return config_file, data_dir


@pytest.fixture(scope="session")
def tiny_config(tiny_env):
    """`tiny_config(**overrides)` -> a fresh locked ConfigDict of the tiny recipe.

    Overrides use dotted keys with `__` for dots: `tiny_config(train__num_steps=4)`.
    """
    from jaxav.config import get_config

    config_file, _ = tiny_env

    def build(**overrides):
        config = get_config(str(config_file))
        for key, value in overrides.items():
            *groups, leaf = key.split("__")
            node = config
            for g in groups:
                node = node[g]
            setattr(node, leaf, value)
        return config

    return build


@pytest.fixture(scope="session")
def cli(tiny_env, compilation_cache):
    """Runs or starts `python -m jaxav.cli train` on the tiny recipe in a subprocess.

    `cli.start(workdir, *overrides)` -> Popen (stdout/stderr piped to files in the workdir's
    parent); `cli.run(workdir, *overrides)` -> CompletedProcess. One simulated CPU device.
    """
    config_file, _ = tiny_env
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONUNBUFFERED"] = "1"
    env["JAX_COMPILATION_CACHE_DIR"] = str(compilation_cache)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

    def args(workdir, overrides):
        return [
            sys.executable,
            "-m",
            "jaxav.cli",
            "train",
            "--config",
            str(config_file),
            "--workdir",
            str(workdir),
            *(f"--config.{o}" for o in overrides),
        ]

    class Cli:
        @staticmethod
        def start(workdir, *overrides, log_name="run"):
            log_dir = Path(workdir).parent
            out = open(log_dir / f"{log_name}.out", "w")
            err = open(log_dir / f"{log_name}.err", "w")
            return subprocess.Popen(
                args(workdir, overrides), cwd=REPO, env=env, stdout=out, stderr=err
            )

        @staticmethod
        def run(workdir, *overrides, timeout=240):
            return subprocess.run(
                args(workdir, overrides),
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )

    return Cli()
