"""`jaxav train`: the pretraining loop around the pure, sharded train step.

Resume order: the latest complete checkpoint in `WORKDIR/checkpoints` (state, optimizer, step and
the data iterator's position), else a fresh start from `config.seed`. SIGTERM (preemption) saves
a checkpoint at the current step and returns cleanly; `kill -9` loses at most the steps since the
last checkpoint, never a checkpoint (Orbax commits by atomic rename).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import jax
import numpy as np

from jaxav.config import config_to_json
from jaxav.data import pipeline
from jaxav.errors import DatasetError, TrainingError
from jaxav.models.registry import build_model
from jaxav.train import checkpoint as ckpt
from jaxav.train import sharding as shd
from jaxav.train import step as step_lib
from jaxav.train.metric_log import MetricLog
from jaxav.train.optim import learning_rate_schedule, make_optimizer

AUTO_PREPARED = ("synth_av",)  # generated locally, so `train` may prepare it itself


def dataset_options(data_config) -> dict:
    """Builder options of `config.data` (synth_av's sizes and seed; none for user datasets)."""
    if data_config.dataset == "synth_av":
        return dict(data_config.synth)
    return {}


def open_dataset(data_config):
    """The prepared dataset of `config.data`; synth_av is prepared on first use.

    Raises:
      DatasetError naming the `jaxav prepare` command when a user dataset is not prepared.
    """
    from jaxav.data import prepare

    source = data_config.source or None
    data_dir = data_config.data_dir or None
    if data_config.dataset in AUTO_PREPARED:
        if jax.process_index() == 0:
            prepare.prepare_dataset(
                data_config.dataset,
                source=source,
                data_dir=data_dir,
                **dataset_options(data_config),
            )
        _sync("jaxav_dataset_prepared")
    return prepare.load_dataset(
        data_config.dataset, source=source, data_dir=data_dir, **dataset_options(data_config)
    )


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


class _Preemption:
    """Turns SIGTERM into a flag the loop checks between steps."""

    def __init__(self):
        self.requested = False
        self._old = None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def train(config, workdir, *, devices=None) -> dict:
    """Pretrains `config.model` on `config.data` into `workdir`; resumes when it holds checkpoints.

    Args:
      config: a locked ConfigDict (see jaxav/config_defaults.py for the keys).
      workdir: where checkpoints, `metrics.jsonl`, TensorBoard events and `config.json` go.
      devices: devices for the mesh (default: all).
    Returns:
      dict with the final `step`, the last logged metrics and `nonfinite_total`.
    """
    workdir = Path(workdir).absolute()
    # Every refusal (another model's checkpoints, an unprepared dataset, a mesh or batch size that
    # does not fit) comes before the first write: a writable manager already deletes tmp dirs.
    latest = ckpt.make_manager(workdir, None, read_only=True).latest_step()
    if latest is not None:
        ckpt.check_same_model(ckpt.saved_config(workdir, latest)[0], config)

    dataset = open_dataset(config.data)
    split = config.data.pretrain_split
    if split not in dataset.splits:
        split = "train" if "train" in dataset.splits else next(iter(dataset.splits))
    if not dataset.splits.get(split):
        raise DatasetError(f"dataset {config.data.dataset} has no examples to pretrain on")

    mesh = shd.make_mesh(config.mesh, devices)
    batch_size = config.train.batch_size
    batch_devices = mesh.shape["data"] * mesh.shape["fsdp"]
    if batch_size % jax.process_count() or batch_size % batch_devices:
        raise TrainingError(
            f"train.batch_size={batch_size} does not split over "
            f"{jax.process_count()} processes and {batch_devices} devices"
        )
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(config_to_json(config))
        # The normalisation the encoder was trained with travels with the run (export, HEAR).
        (workdir / "fbank_stats.json").write_text(json.dumps(dict(dataset.stats), indent=2))
    manager = ckpt.make_manager(workdir, config.checkpoint)  # removes partial saves of a kill
    spec = pipeline.spec_from_config(config, dataset)
    train_ds = pipeline.make_train_dataset(
        dataset.source(split),
        spec,
        batch_size=batch_size // jax.process_count(),
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        num_workers=config.data.num_workers,
    )
    data_iter = iter(train_ds)

    model = build_model(config)
    num_steps = config.train.num_steps
    tx = make_optimizer(config.optim, num_steps)
    state, state_shardings = step_lib.init_state(
        model, tx, mesh, step_lib.dummy_batch(spec, 1), config.seed
    )
    if latest is not None:
        abstract = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, state_shardings
        )
        state = ckpt.restore(manager, latest, abstract, data_iter)
    start = int(jax.device_get(state.step))

    step_fn = step_lib.jit_train_step(
        step_lib.make_train_step(
            model,
            tx,
            grad_accum_steps=config.train.grad_accum_steps,
            learning_rate_fn=learning_rate_schedule(config.optim, num_steps),
        ),
        state_shardings,
        mesh,
    )
    batch_sharding = shd.batch_sharding(mesh)
    log = MetricLog(workdir, resume_step=start)
    preemption = _Preemption()
    bar = _progress(config, start, num_steps)
    last_metrics, pending, nonfinite_total = {}, None, int(jax.device_get(state.nonfinite_total))
    wait_time, t_last, step = 0.0, time.perf_counter(), start
    last_saved = latest
    try:
        while step < num_steps:
            if preemption.requested:
                if pending is not None:  # the NaN guard sees the last step before it is saved
                    last_metrics = _check_and_log(pending, log, config, bar)
                    pending = None
                if step != last_saved:  # a checkpoint step was saved already
                    _log_once(f"SIGTERM: saving step {step} and stopping")
                    ckpt.save(manager, step, state, data_iter, config, force=True)
                else:
                    _log_once(f"SIGTERM: step {step} is saved; stopping")
                break
            t0 = time.perf_counter()
            batch = pipeline.global_batch(next(data_iter), batch_sharding)
            wait_time += time.perf_counter() - t0
            state, metrics = step_fn(state, batch)
            step += 1
            # Read the previous step's metrics while this one runs (keeps the device busy).
            if pending is not None:
                last_metrics = _check_and_log(pending, log, config, bar)
            pending = (step, metrics)
            if step % config.checkpoint.every_steps == 0 or step == num_steps:
                last_metrics = _check_and_log(pending, log, config, bar)
                pending = None
                ckpt.save(manager, step, state, data_iter, config, force=True)
                last_saved = step
            if bar is not None:
                now = time.perf_counter()
                bar.update(1)
                rate = 1.0 / max(now - t_last, 1e-9)
                t_last = now
                bar.set_postfix(
                    loss=f"{last_metrics.get('loss', float('nan')):.4f}",
                    ex_per_s=f"{rate * batch_size:.1f}",
                    refresh=False,
                )
        if pending is not None:
            last_metrics = _check_and_log(pending, log, config, bar)
        manager.wait_until_finished()
        nonfinite_total = int(jax.device_get(state.nonfinite_total))
    finally:
        preemption.restore()
        log.close()
        if bar is not None:
            bar.close()
        manager.wait_until_finished()
        manager.close()
    return {
        "step": step,
        "metrics": last_metrics,
        "nonfinite_total": nonfinite_total,
        "data_wait_s": wait_time,
    }


def _check_and_log(pending, log: MetricLog, config, bar) -> dict:
    """Raises TrainingError after too many non-finite losses in a row; logs every log_every."""
    step, metrics = pending
    metrics = {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}
    run = int(metrics.pop("nonfinite_run"))
    if run >= config.train.max_nonfinite_in_a_row:
        raise TrainingError(
            f"loss or gradients were NaN/inf for {run} steps in a row, the last at step {step}; "
            "stopping. The last good checkpoint is kept; lower optim.lr or check the data."
        )
    if step % config.train.log_every == 0 or step == 1 or step == config.train.num_steps:
        log.write(step, metrics)
        if bar is None and jax.process_index() == 0:
            print(
                f"step {step}: " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()), flush=True
            )
    return metrics


def _progress(config, start: int, total: int):
    if not config.train.progress_bar or jax.process_index() != 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=start, desc="train", unit="step", dynamic_ncols=True, mininterval=1.0
    )


def _log_once(msg: str) -> None:
    if jax.process_index() == 0:
        print(msg, flush=True)
