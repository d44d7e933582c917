"""The trainer as a process (`python -m jaxav.cli train`): kill -9, SIGTERM, a user error.

Each run trains the tiny recipe of `conftest.py` for NUM_STEPS steps on one CPU device; the
signal is sent once the metrics show the run is well inside its loop.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

NUM_STEPS = 40


def metric_steps(workdir) -> list[int]:
    """The `step` of every row of WORKDIR/metrics.jsonl, in file order (partial lines skipped)."""
    path = os.path.join(workdir, "metrics.jsonl")
    steps = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    steps.append(json.loads(line)["step"])
                except ValueError:
                    pass
    return steps


def entries(workdir) -> tuple[list[int], list[str]]:
    """(committed checkpoint steps, names of partial `*.orbax-checkpoint-tmp*` entries)."""
    path = os.path.join(workdir, "checkpoints")
    names = os.listdir(path) if os.path.isdir(path) else []
    return sorted(int(n) for n in names if n.isdigit()), [n for n in names if "tmp" in n]


def wait_for(proc, predicate, timeout=300.0, poll=0.01):
    """Polls `predicate()` until it is true; fails if the process exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"the run exited with {proc.returncode} before the signal")
        time.sleep(poll)
    proc.kill()
    pytest.fail("timed out waiting for the run")


def printed_steps(stdout: str) -> list[int]:
    """Steps of the `step K: loss=...` lines the CLI prints without a progress bar."""
    return [
        int(line.split()[1].rstrip(":")) for line in stdout.splitlines() if line.startswith("step ")
    ]


def test_kill_9_resumes_from_the_last_complete_checkpoint(cli, tmp_path):
    """SIGKILL after a checkpoint (during a later save when one is caught in flight), plus a
    partial save left on disk: the rerun ignores and removes the partial one, resumes right
    after the last committed step, drops the killed run's later metric rows, reaches the end."""
    workdir = tmp_path / "w"
    proc = cli.start(workdir, f"train.num_steps={NUM_STEPS}", "checkpoint.every_steps=4")

    def ready():
        done, partial = entries(workdir)
        if done and partial:  # a save in flight after a committed one: kill during the save
            return True
        steps = metric_steps(workdir)
        return bool(done) and bool(steps) and max(steps) >= done[-1] + 2

    wait_for(proc, ready)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL
    done, _ = entries(workdir)
    last = done[-1]
    assert last < NUM_STEPS
    assert max(metric_steps(workdir)) >= last > 0
    # A save killed half-way leaves an uncommitted tmp dir; make sure one is there, past `last`.
    fake = workdir / "checkpoints" / f"{last + 4}.orbax-checkpoint-tmp-1700000000"
    (fake / "state").mkdir(parents=True)
    (fake / "state" / "garbage").write_bytes(b"\0" * 64)

    rerun = cli.run(workdir, f"train.num_steps={NUM_STEPS}", "checkpoint.every_steps=4")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert printed_steps(rerun.stdout)[0] == last + 1
    assert f"done: step {NUM_STEPS}" in rerun.stdout
    assert metric_steps(workdir) == list(range(1, NUM_STEPS + 1))  # no step twice, none missing
    done, partial = entries(workdir)
    assert partial == [] and done[-1] == NUM_STEPS


def test_sigterm_saves_the_step_reached_and_exits_cleanly(cli, tmp_path):
    """SIGTERM mid-run (checkpoint.every_steps beyond num_steps): exit status 0, one checkpoint at
    the step reached, and a rerun continues from it to num_steps."""
    workdir = tmp_path / "w"
    overrides = (f"train.num_steps={NUM_STEPS}", "checkpoint.every_steps=1000")
    proc = cli.start(workdir, *overrides, log_name="sigterm")
    wait_for(proc, lambda: max(metric_steps(workdir), default=0) >= 5)
    signalled_at = max(metric_steps(workdir))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(120) == 0
    stdout = (tmp_path / "sigterm.out").read_text()
    done, partial = entries(workdir)
    assert len(done) == 1 and not partial, (done, partial)
    saved = done[0]
    assert signalled_at <= saved < NUM_STEPS
    assert f"SIGTERM: saving step {saved} and stopping" in stdout
    assert f"done: step {saved}" in stdout
    assert metric_steps(workdir) == list(range(1, saved + 1))

    rerun = cli.run(workdir, *overrides)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert printed_steps(rerun.stdout)[0] == saved + 1
    assert metric_steps(workdir) == list(range(1, NUM_STEPS + 1))
    assert entries(workdir)[0] == [saved, NUM_STEPS]


def test_unprepared_dataset_via_the_cli(cli, tmp_path):
    """`jaxav train` on an unprepared audio_folder: non-zero exit, the `jaxav prepare` command
    on stderr, no traceback, no workdir."""
    source = tmp_path / "my_clips"
    (source / "train" / "dog").mkdir(parents=True)
    workdir = tmp_path / "w"
    r = cli.run(workdir, "data.dataset=audio_folder", f"data.source={source}")
    assert r.returncode != 0
    assert f"jaxav prepare --dataset audio_folder --source {source}" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert not workdir.exists()
