"""The trainer in-process: exact resume, resharding on restore, NaN guard, refusals, observability.

Every test trains the tiny recipe of `conftest.py` with real Orbax checkpoints, the real grain
pipeline and the real (tiny) synth_av. Runs that several tests read are module-scoped fixtures:
`straight` (6 steps on 1 device) and `eight` (6 steps on an 8-device data mesh).
"""

from __future__ import annotations

import json
import os
import shutil
import signal

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxav.config import config_to_json
from jaxav.data import pipeline
from jaxav.errors import CheckpointError, DatasetError, TrainingError
from jaxav.train import checkpoint as ckpt
from jaxav.train.trainer import train

N = 3  # checkpoint.every_steps of the tiny recipe; it trains 2N steps


def one_device():
    return jax.devices()[:1]


def metric_rows(workdir) -> list[dict]:
    """The rows of WORKDIR/metrics.jsonl."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def losses(workdir) -> dict[int, float]:
    """step -> logged loss."""
    return {r["step"]: r["loss"] for r in metric_rows(workdir)}


def saved_steps(workdir) -> list[int]:
    """Committed checkpoint steps on disk."""
    return ckpt.make_manager(workdir, None, read_only=True).all_steps()


def load_state(workdir, step) -> dict:
    """The whole saved train state of `step` (params, opt_state, step, rng, counters) as numpy."""
    manager = ckpt.make_manager(workdir, None, read_only=True)
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return jax.tree.map(np.asarray, restored["state"])


def assert_trees_equal(a, b):
    """Same structure and bit-identical leaves."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def snapshot(root) -> dict:
    """Every path under `root` (and `root`) -> (is_dir, size, mtime_ns)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            path = os.path.normpath(os.path.join(dirpath, name))
            st = os.stat(path)
            out[os.path.relpath(path, root)] = (os.path.isdir(path), st.st_size, st.st_mtime_ns)
    return out


def sigterm_after_batches(monkeypatch, count: int):
    """Sends this process a real SIGTERM while the trainer fetches its `count`-th batch."""
    real = pipeline.global_batch
    calls = [0]

    def global_batch(local, sharding):
        calls[0] += 1
        if calls[0] == count:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(local, sharding)

    monkeypatch.setattr(pipeline, "global_batch", global_batch)


def poison_batches(monkeypatch, steps):
    """Makes the audio of the batches of `steps` (1-based, counted from this run's start) NaN."""
    real = pipeline.global_batch
    calls = [0]

    def global_batch(local, sharding):
        calls[0] += 1
        if calls[0] in steps:
            local = dict(local, audio=np.full_like(local["audio"], np.nan))
        return real(local, sharding)

    monkeypatch.setattr(pipeline, "global_batch", global_batch)


@pytest.fixture(scope="module")
def straight(tiny_config, tmp_path_factory):
    """2N steps in one go on 1 device, checkpoints at N and 2N: (workdir, config, result)."""
    workdir = tmp_path_factory.mktemp("straight") / "w"
    config = tiny_config()
    result = train(config, workdir, devices=one_device())
    return workdir, config, result


@pytest.fixture(scope="module")
def eight(tiny_config, tmp_path_factory):
    """2N steps on an 8-device data mesh, checkpoints at N and 2N: (workdir, config, result)."""
    workdir = tmp_path_factory.mktemp("eight") / "w"
    config = tiny_config(mesh__data=8)
    result = train(config, workdir)
    return workdir, config, result


def test_straight_run_trains(straight):
    """The reference run reaches num_steps, checkpoints every N steps and the loss falls."""
    workdir, config, result = straight
    assert result["step"] == 2 * N and result["nonfinite_total"] == 0
    assert saved_steps(workdir) == [N, 2 * N]
    loss = losses(workdir)
    assert sorted(loss) == list(range(1, 2 * N + 1))
    assert loss[2 * N] < loss[1]


def test_stop_and_resume_is_bit_for_bit(straight, tiny_config, tmp_path, monkeypatch):
    """N steps + SIGTERM + resume + N steps == 2N steps: same params, optimizer state, rng and
    counters bit for bit, and the same batches (the logged losses of steps N+1..2N are equal)."""
    ref_dir, _, _ = straight
    workdir = tmp_path / "w"
    config = tiny_config()
    with monkeypatch.context() as m:
        sigterm_after_batches(m, N)  # stops right after step N, itself a checkpoint step
        first = train(config, workdir, devices=one_device())
    assert first["step"] == N
    assert saved_steps(workdir) == [N]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler was put back

    second = train(config, workdir, devices=one_device())
    assert second["step"] == 2 * N
    assert saved_steps(workdir) == [N, 2 * N]
    for step in (N, 2 * N):
        assert_trees_equal(load_state(workdir, step), load_state(ref_dir, step))
    ref, got = losses(ref_dir), losses(workdir)
    assert sorted(got) == list(range(1, 2 * N + 1))  # one row per step, none twice
    assert [got[s] for s in range(N + 1, 2 * N + 1)] == [ref[s] for s in range(N + 1, 2 * N + 1)]
    assert second["metrics"]["loss"] == ref[2 * N]


def test_sigterm_between_checkpoints_saves_the_step_reached(
    straight, tiny_config, tmp_path, monkeypatch
):
    """SIGTERM at step 4 (not a checkpoint step) saves step 4; resuming from it is exact."""
    ref_dir, _, _ = straight
    workdir = tmp_path / "w"
    config = tiny_config()
    with monkeypatch.context() as m:
        sigterm_after_batches(m, N + 1)
        first = train(config, workdir, devices=one_device())
    assert first["step"] == N + 1
    assert saved_steps(workdir) == [N, N + 1]
    train(config, workdir, devices=one_device())
    assert_trees_equal(load_state(workdir, 2 * N), load_state(ref_dir, 2 * N))
    assert losses(workdir) == losses(ref_dir)


def test_observability(straight):
    """metrics.jsonl has step + loss per logged step, TensorBoard events exist, config.json and
    the checkpoint's config are the resolved config (overrides applied)."""
    workdir, config, result = straight
    rows = metric_rows(workdir)
    assert [r["step"] for r in rows] == list(range(1, 2 * N + 1))
    assert all(np.isfinite(r["loss"]) for r in rows)
    assert result["metrics"]["loss"] == rows[-1]["loss"]
    events = [f for _, _, files in os.walk(workdir / "tb") for f in files if "tfevents" in f]
    assert events
    assert json.loads((workdir / "config.json").read_text()) == json.loads(config_to_json(config))
    saved, step = ckpt.saved_config(workdir)
    assert step == 2 * N
    assert config_to_json(saved) == config_to_json(config)


def test_eight_device_checkpoint_resumes_on_one_device_and_on_fsdp(eight, tmp_path):
    """A checkpoint written on an 8-device data mesh resumes on 1 device and on a 2-device
    (data=1, fsdp=2) mesh; the resumed losses are those the 8-device run logged."""
    src, config8, _ = eight
    ref = losses(src)
    runs = (("one", one_device(), {}), ("fsdp", jax.devices()[:2], {"fsdp": 2}))
    for name, devices, mesh in runs:
        workdir = tmp_path / name
        shutil.copytree(src, workdir)
        shutil.rmtree(workdir / "checkpoints" / str(2 * N))
        config = config8.copy_and_resolve_references()
        config.mesh.data = -1
        for k, v in mesh.items():
            setattr(config.mesh, k, v)
        result = train(config, workdir, devices=devices)
        assert result["step"] == 2 * N
        got = losses(workdir)
        assert sorted(got) == list(range(1, 2 * N + 1))
        np.testing.assert_allclose(got[N + 1], ref[N + 1], rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(
            [got[s] for s in range(N + 2, 2 * N + 1)],
            [ref[s] for s in range(N + 2, 2 * N + 1)],
            rtol=1e-3,
            err_msg=name,
        )


def test_restore_params_onto_one_device(eight, tmp_path):
    """restore_params gives the params alone, on one device, from an 8-device checkpoint."""
    workdir, config, _ = eight
    saved_config, params, step = ckpt.restore_params(workdir)
    assert step == 2 * N
    assert config_to_json(saved_config) == config_to_json(config)
    state = load_state(workdir, 2 * N)
    assert_trees_equal(params, state["params"])
    device = jax.local_devices()[0]
    for leaf in jax.tree.leaves(params):
        assert isinstance(leaf, jax.Array) and leaf.sharding.device_set == {device}
    _, params_n, step_n = ckpt.restore_params(workdir, step=N)
    assert step_n == N
    assert_trees_equal(params_n, load_state(workdir, N)["params"])

    with pytest.raises(CheckpointError, match=f"no checkpoint for step {N + 1}"):
        ckpt.restore_params(workdir, step=N + 1)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        ckpt.restore_params(tmp_path / "empty")
    (tmp_path / "no_ckpt").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        ckpt.restore_params(tmp_path / "no_ckpt")


def test_single_nonfinite_steps_are_skipped_and_counted(tiny_config, tmp_path, monkeypatch):
    """NaN batches at steps 2 and 4 (never two in a row): skipped, counted, training finishes.
    The overrides of this run are in config.json and in the checkpoint's config."""
    workdir = tmp_path / "w"
    poison_batches(monkeypatch, {2, 4})
    config = tiny_config(train__max_nonfinite_in_a_row=2, seed=7)
    result = train(config, workdir, devices=one_device())
    written = json.loads((workdir / "config.json").read_text())
    assert written["seed"] == 7 and written["train"]["max_nonfinite_in_a_row"] == 2
    assert ckpt.saved_config(workdir)[0].train.max_nonfinite_in_a_row == 2
    assert result["step"] == 2 * N and result["nonfinite_total"] == 2
    rows = {r["step"]: r for r in metric_rows(workdir)}
    assert [s for s, r in rows.items() if r["finite"] == 0.0] == [2, 4]
    assert rows[2]["loss"] == "nan"
    state = load_state(workdir, 2 * N)
    assert int(state["nonfinite_total"]) == 2 and int(state["nonfinite_run"]) == 0
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state["params"]))


def test_nonfinite_run_stops_training_keeping_the_last_good_checkpoint(
    straight, tiny_config, tmp_path, monkeypatch
):
    """NaN from step 4 on with max_nonfinite_in_a_row=3: TrainingError naming step 6, and the
    step-6 checkpoint is not written; checkpoint N is the good one (== the clean run's)."""
    ref_dir, _, _ = straight
    workdir = tmp_path / "w"
    poison_batches(monkeypatch, set(range(N + 1, 100)))
    with pytest.raises(TrainingError, match=r"3 steps in a row, the last at step 6\b"):
        train(tiny_config(train__max_nonfinite_in_a_row=3), workdir, devices=one_device())
    assert saved_steps(workdir) == [N]
    assert not [p for p in os.listdir(workdir / "checkpoints") if p != str(N)]
    assert_trees_equal(load_state(workdir, N), load_state(ref_dir, N))
    assert max(r["step"] for r in metric_rows(workdir)) < 2 * N


def test_checkpoint_of_another_model_is_refused_without_writing(straight, tiny_config, tmp_path):
    """A workdir holding a depth-2 model refuses a depth-3 config, naming model.depth, before
    writing anything (config.json, metrics, checkpoints and a leftover tmp dir all untouched)."""
    src, _, _ = straight
    workdir = tmp_path / "w"
    shutil.copytree(src, workdir)
    leftover = workdir / "checkpoints" / "7.orbax-checkpoint-tmp-123"
    leftover.mkdir()
    (leftover / "junk").write_text("partial")
    before = snapshot(workdir)
    with pytest.raises(CheckpointError, match=r"model\.depth: checkpoint has 2, config asks for 3"):
        train(tiny_config(model__depth=3), workdir, devices=one_device())
    assert snapshot(workdir) == before


def test_unprepared_dataset_names_the_prepare_command(tiny_config, tmp_path):
    """An audio_folder that was never prepared: DatasetError with the `jaxav prepare` command,
    and the workdir is not created."""
    source = tmp_path / "my_clips"
    (source / "train" / "dog").mkdir(parents=True)
    workdir = tmp_path / "w"
    config = tiny_config(data__dataset="audio_folder", data__source=str(source))
    with pytest.raises(DatasetError) as e:
        train(config, workdir, devices=one_device())
    assert f"jaxav prepare --dataset audio_folder --source {source}" in str(e.value)
    assert not workdir.exists()
