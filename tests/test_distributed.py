"""jaxav.distributed and real multi-process runs on localhost (CPU collectives, gloo).

The tiny model trains for a few steps as 1 process x 8 devices and as 2 processes x 4 devices
(launch/local/multiprocess.sh); the two must agree, a 2-process checkpoint must resume with 1 and
with 2 processes, and a killed process must bring the job down within a bounded time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxav import distributed
from jaxav.data import pipeline
from jaxav.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
FAILURE_DEADLINE_S = 60  # a killed process ends the job within this (heartbeat timeout 30 s)
TINY = [
    "--config", "configs/quickstart.py",
    "--config.model.width=32", "--config.model.depth=2", "--config.model.num_heads=2",
    "--config.data.num_frames=64", "--config.data.num_mel_bins=32",
    "--config.train.batch_size=8", "--config.train.log_every=1",
    "--config.train.progress_bar=False", "--config.optim.warmup_steps=2",
    "--config.data.synth.num_unlabeled=64", "--config.data.synth.num_train=8",
    "--config.data.synth.num_validation=8", "--config.data.synth.num_test=8",
    "--config.data.synth.clip_seconds=1.0", "--config.checkpoint.every_steps=2",
]  # fmt: skip
CLUSTER_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_JOB_ID",
                "SLURM_NTASKS", "JAXAV_LOCAL_DEVICES", "JAXAV_DISTRIBUTED")  # fmt: skip


# ---------------------------------------------------------------- resolve (no processes)
def test_resolve_explicit_flags_and_env():
    launch = distributed.resolve("localhost:1234", 2, 1, env={})
    assert launch == distributed.Launch("explicit", "localhost:1234", 2, 1)
    env = {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert distributed.resolve(env=env) == distributed.Launch("explicit", "h:1", 4, 3)
    assert distributed.resolve(env={}).mode == "none"
    assert distributed.resolve(env={**env, "JAXAV_DISTRIBUTED": "off"}).mode == "none"


def test_resolve_cluster_detection():
    slurm = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}
    assert distributed.resolve(env=slurm).mode == "slurm"
    assert distributed.resolve(env={"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}).mode == "none"
    assert distributed.resolve(env={"TPU_WORKER_HOSTNAMES": "a,b"}).mode == "tpu"
    assert distributed.resolve(env={"JAXAV_DISTRIBUTED": "auto"}).mode in ("auto", "tpu")


@pytest.mark.parametrize(
    "args, env, match",
    [
        (("h:1", None, None), {}, "--num_processes"),
        (("h:1", 2, 2), {}, "process_id"),
        ((None, 2, 1), {}, "coordinator_address"),
        ((None, None, None), {"JAX_NUM_PROCESSES": "two"}, "integer"),
        ((None, None, None), {"JAXAV_DISTRIBUTED": "maybe"}, "auto or off"),
    ],
)
def test_resolve_errors_name_the_problem(args, env, match):
    with pytest.raises(ConfigError, match=match):
        distributed.resolve(*args, env=env)


def test_timeouts_and_local_devices_from_env():
    t = distributed.Timeouts.from_env({"JAXAV_HEARTBEAT_TIMEOUT_S": "12"})
    assert (t.init, t.heartbeat, t.shutdown) == (300, 12, 60)
    with pytest.raises(ConfigError, match="JAXAV_SHUTDOWN_TIMEOUT_S"):
        distributed.Timeouts.from_env({"JAXAV_SHUTDOWN_TIMEOUT_S": "0"})
    assert distributed.local_device_count(None, {"JAXAV_LOCAL_DEVICES": "4"}) == 4
    assert distributed.local_device_count(2, {"JAXAV_LOCAL_DEVICES": "4"}) == 2
    assert distributed.local_device_count(None, {}) is None


def test_single_process_is_primary():
    assert distributed.is_primary()
    t = distributed.topology()
    assert t["process_count"] == 1 and t["global_devices"] == t["local_devices"] == 8


# ---------------------------------------------------------------- pipeline process shares
def test_process_shares_are_disjoint_blocks_of_the_global_batches():
    src = [{"audio": np.full(400, i, np.int16), "label": np.int64(i)} for i in range(24)]
    spec = pipeline.ExampleSpec(num_frames=8, num_mel_bins=8)

    def labels(p, count, n):
        it = iter(
            pipeline.make_train_dataset(
                src, spec, batch_size=8 // count, seed=3, process_index=p, process_count=count
            )
        )
        return [next(it)["label"] for _ in range(n)]

    one = labels(0, 1, 6)  # 6 global batches of 8 = two epochs of 24
    shares = [labels(p, 2, 6) for p in range(2)]
    epoch = [np.concatenate([shares[0][k], shares[1][k]]) for k in range(3)]
    first, second = (set(np.concatenate(shares[p][:3]).tolist()) for p in range(2))
    assert not first & second  # one epoch: the two processes' shares are disjoint
    assert sorted(np.concatenate(epoch).tolist()) == list(range(24))  # together: the epoch
    for k in range(6):  # global batch k is the same at any process count
        np.testing.assert_array_equal(np.concatenate([shares[0][k], shares[1][k]]), one[k])
    it = iter(
        pipeline.make_train_dataset(
            src, spec, batch_size=4, seed=3, process_index=1, process_count=2
        )
    )
    pipeline.seek_train_iterator(it, 4)  # a resume at step 4 with 2 processes
    np.testing.assert_array_equal(next(it)["label"], shares[1][4])


# ---------------------------------------------------------------- real multi-process runs
def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in CLUSTER_VARS}
    env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", **extra)
    return env


def _train_cmd(workdir, data_dir, steps) -> list[str]:
    return [
        sys.executable,
        "-m",
        "jaxav.cli",
        "train",
        *TINY,
        f"--workdir={workdir}",
        f"--config.data.data_dir={data_dir}",
        f"--config.train.num_steps={steps}",
    ]


def _run(cmd, env, timeout=300) -> str:
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    return out


def _run_1(workdir, data_dir, steps) -> str:
    env = _env(XLA_FLAGS="--xla_force_host_platform_device_count=8")
    return _run(_train_cmd(workdir, data_dir, steps), env)


def _run_2(workdir, data_dir, steps) -> str:
    cmd = ["bash", "launch/local/multiprocess.sh", "2", "--devices", "8", "--",
           *_train_cmd(workdir, data_dir, steps)]  # fmt: skip
    return _run(cmd, _env())


def _metrics(workdir) -> dict[int, dict]:
    rows = [json.loads(x) for x in (Path(workdir) / "metrics.jsonl").read_text().splitlines() if x]
    return {r["step"]: r for r in rows}


def _assert_same_curve(a: dict, b: dict, steps) -> None:
    for s in steps:
        keys = [k for k in ("loss", "mse", "nce", "grad_norm") if k in a[s]]  # nce: SSAST only
        assert {"loss", "mse", "grad_norm"} <= set(keys) and set(keys) <= set(b[s])
        for k in keys:
            np.testing.assert_allclose(a[s][k], b[s][k], rtol=2e-4, err_msg=f"step {s} {k}")


def _prepared(d: Path) -> Path:
    """Prepares the tiny synth_av (the TINY config's options) into `d`; returns `d`."""
    from jaxav.config import get_config, split_config_args
    from jaxav.data.prepare import prepare_dataset
    from jaxav.train.trainer import dataset_options

    config = get_config(str(REPO / "configs/quickstart.py"), split_config_args(TINY[2:])[1])
    prepare_dataset("synth_av", data_dir=str(d), **dataset_options(config.data))
    return d


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """The tiny synth_av, prepared once before any process starts."""
    return _prepared(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory) -> dict[str, Path]:
    """4 steps as 1 process x 8 devices and as 2 processes x 4 devices."""
    root = tmp_path_factory.mktemp("runs")
    _run_1(root / "one", data_dir, 4)
    out = _run_2(root / "two", data_dir, 4)
    assert "[p0] jaxav: distributed (explicit): 2 processes, 4 local / 8 global cpu" in out
    return {"one": root / "one", "two": root / "two", "root": root}


def test_two_processes_match_one_process(runs):
    from jaxav.train.checkpoint import restore_params

    a, b = _metrics(runs["one"]), _metrics(runs["two"])
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    _assert_same_curve(a, b, range(1, 5))
    _, pa, sa = restore_params(runs["one"])
    _, pb, sb = restore_params(runs["two"])
    assert sa == sb == 4
    for x, y in zip(_leaves(pa), _leaves(pb)):
        np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-4)  # Adam: lr-scale noise
    data = sorted(p.name for p in (runs["two"] / "checkpoints" / "4" / "data").glob("*.json"))
    assert data == ["process_0-of-2.json", "process_1-of-2.json"]


def _leaves(tree):
    import jax

    return (np.asarray(x) for x in jax.tree.leaves(tree))


def test_two_process_checkpoint_resumes_with_one_and_two_processes(runs, data_dir):
    w1, w2 = runs["root"] / "resume1", runs["root"] / "resume2"
    shutil.copytree(runs["two"], w1)
    shutil.copytree(runs["two"], w2)
    out1 = _run_1(w1, data_dir, 6)  # other process count: iterator positioned from the step
    assert "holds the data iterator of 2 process(es), this run has 1" in out1
    out2 = _run_2(w2, data_dir, 6)  # same count: grain's saved per-process iterators
    assert "data position set from the step" not in out2
    m1, m2 = _metrics(w1), _metrics(w2)
    assert sorted(m1) == sorted(m2) == [1, 2, 3, 4, 5, 6]
    _assert_same_curve(m1, m2, (5, 6))


def test_killed_process_ends_the_job_with_an_error(data_dir, tmp_path):
    """SIGKILL process 1 mid-training: process 0 must exit non-zero within the deadline."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = _train_cmd(tmp_path / "w", data_dir, 100000)
    procs = []
    for i in range(2):
        env = _env(JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
                   JAX_PROCESS_ID=str(i), JAXAV_LOCAL_DEVICES="4")  # fmt: skip
        log = open(tmp_path / f"p{i}.log", "w")
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log))
    try:
        metrics = tmp_path / "w" / "metrics.jsonl"
        deadline = time.monotonic() + 300
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
            assert time.monotonic() < deadline, (tmp_path / "p0.log").read_text()[-2000:]
            assert procs[0].poll() is None, (tmp_path / "p0.log").read_text()[-2000:]
            time.sleep(0.5)
        procs[1].send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        rc = procs[0].wait(timeout=FAILURE_DEADLINE_S + 30)
        elapsed = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    log0 = (tmp_path / "p0.log").read_text()
    print(f"process 0 exited with {rc} {elapsed:.1f} s after process 1 was killed")
    assert rc != 0
    assert elapsed < FAILURE_DEADLINE_S, f"{elapsed:.0f} s"
    assert "stopped sending heartbeats" in log0 or "another task died" in log0, log0[-2000:]
