"""Orbax checkpoints of the train state, the grain iterator and the config, and restoring them.

Layout: `WORKDIR/checkpoints/<step>/{state,data,config}` (Orbax commits a step by atomic
rename, so a step directory that exists is complete; `latest_step()` ignores the partial
`*.orbax-checkpoint-tmp*` ones a kill leaves). `WORKDIR/config.json` holds the resolved config.
"""

from __future__ import annotations

import json
from pathlib import Path

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxav.config import config_from_json, config_to_json
from jaxav.errors import CheckpointError


def checkpoint_dir(workdir) -> Path:
    """`WORKDIR/checkpoints`."""
    return Path(workdir).absolute() / "checkpoints"


def make_manager(
    workdir, checkpoint_config, *, read_only: bool = False, partial: bool = False
) -> ocp.CheckpointManager:
    """A CheckpointManager keeping the last `keep` steps; saves are decided by the trainer.

    `partial=True` (read-only) registers a PyTree handler for `state`, which can restore a
    subtree (the params alone) of what the StandardCheckpointHandler saved.
    """
    options = ocp.CheckpointManagerOptions(
        max_to_keep=checkpoint_config.keep if checkpoint_config is not None else None,
        enable_async_checkpointing=bool(checkpoint_config.async_save)
        if checkpoint_config is not None
        else False,
        # A custom policy: save only when asked (every_steps is applied by the trainer); this also
        # drops Orbax's preemption policy, which needs jax.distributed.
        save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(1),
        cleanup_tmp_directories=not read_only,
        read_only=read_only,
        create=not read_only,
    )
    return ocp.CheckpointManager(
        checkpoint_dir(workdir),
        options=options,
        item_handlers={
            "state": ocp.PyTreeCheckpointHandler() if partial else ocp.StandardCheckpointHandler(),
            "data": grain.checkpoint.CheckpointHandler(),
            "config": ocp.JsonCheckpointHandler(),
        },
    )


def save(
    manager: ocp.CheckpointManager, step: int, state, data_iterator, config, *, force: bool = False
) -> bool:
    """Saves state, the grain iterator's position and the config as step `step`."""
    return manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(data_iterator),
            config=ocp.args.JsonSave(json.loads(config_to_json(config))),
        ),
        force=force,
    )


def restore(manager: ocp.CheckpointManager, step: int, abstract_state, data_iterator):
    """Restores (state, step) in place of `abstract_state` (ShapeDtypeStructs with shardings) and
    sets `data_iterator` to the saved position.

    grain saves one iterator file per process; when the checkpoint was written by another number
    of processes, the iterator is positioned from the step instead (the pipeline's batches do not
    depend on the process count, see `pipeline.seek_train_iterator`)."""
    if data_iterator is None or _data_saved_for_this_process_count(manager, step):
        data = (
            {}
            if data_iterator is None
            else {"data": grain.checkpoint.CheckpointRestore(data_iterator)}
        )
        restored = manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), **data)
        )
        return restored["state"]
    from jaxav.data.pipeline import seek_train_iterator

    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
    )
    seek_train_iterator(data_iterator, step)
    if jax.process_index() == 0:
        saved = _saved_process_count(manager, step)
        print(
            f"jaxav: checkpoint step {step} holds the data iterator of {saved} process(es), "
            f"this run has {jax.process_count()}: data position set from the step "
            f"(batch {step})",
            flush=True,
        )
    return restored["state"]


def _data_dir(manager: ocp.CheckpointManager, step: int) -> Path:
    return Path(str(manager.directory)) / str(step) / "data"


def _saved_process_count(manager: ocp.CheckpointManager, step: int) -> str:
    names = sorted(p.name for p in _data_dir(manager, step).glob("process_*-of-*.json"))
    return names[0].rsplit("-of-", 1)[1].removesuffix(".json") if names else "?"


def _data_saved_for_this_process_count(manager: ocp.CheckpointManager, step: int) -> bool:
    """Whether the step holds grain iterator files `process_{i}-of-{n}` for this run's n."""
    n = jax.process_count()
    d = _data_dir(manager, step)
    return all((d / f"process_{i}-of-{n}.json").exists() for i in range(n))


def saved_config(workdir, step: int | None = None):
    """The config stored with a checkpoint step (default: the latest)."""
    manager = make_manager(workdir, None, read_only=True)
    step = resolve_step(manager, workdir, step)
    restored = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return config_from_json(json.dumps(restored["config"])), step


def resolve_step(manager: ocp.CheckpointManager, workdir, step: int | None) -> int:
    """`step` if it exists, else the latest; CheckpointError when there is none."""
    steps = manager.all_steps()
    if not steps:
        raise CheckpointError(
            f"no checkpoint in {checkpoint_dir(workdir)} (train first: "
            f"jaxav train --config ... --workdir {workdir})"
        )
    if step is None:
        return max(steps)
    if step not in steps:
        raise CheckpointError(
            f"no checkpoint for step {step} in {checkpoint_dir(workdir)}; "
            f"available steps: {sorted(steps)}"
        )
    return step


def restore_params(workdir, step: int | None = None, sharding=None):
    """Restores a checkpoint's parameters alone (no optimizer state), for probing and export.

    Args:
      workdir: the training workdir.
      step: checkpoint step (default: latest).
      sharding: where to put every parameter (default: the first local device, unsharded).
        A checkpoint written on any mesh restores onto any number of devices.
    Returns:
      (config, params, step): the run's config, a pytree of jax.Arrays, the step restored.
    """
    manager = make_manager(workdir, None, read_only=True, partial=True)
    step = resolve_step(manager, workdir, step)
    config, _ = saved_config(workdir, step)
    meta = manager.item_metadata(step)["state"]
    if sharding is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    tree = meta.tree if hasattr(meta, "tree") else meta
    param_meta = tree["params"]
    abstract = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(tuple(m.shape), np.dtype(m.dtype), sharding=sharding),
        param_meta,
    )
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                item={"params": abstract},
                restore_args=jax.tree.map(
                    lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding), {"params": abstract}
                ),
                partial_restore=True,
            )
        ),
    )
    return config, restored["state"]["params"], step


def check_same_model(saved, config) -> None:
    """Raises CheckpointError when a workdir's checkpoints were made by a different model config."""
    if saved is None:
        return
    old = json.loads(config_to_json(saved))
    new = json.loads(config_to_json(config))
    diffs = []
    for group in ("model", "mask"):
        for k in sorted(set(old.get(group, {})) | set(new.get(group, {}))):
            a, b = old.get(group, {}).get(k), new.get(group, {}).get(k)
            if a != b:
                diffs.append(f"{group}.{k}: checkpoint has {a!r}, config asks for {b!r}")
    for k in ("num_frames", "num_mel_bins", "with_video"):
        a, b = old.get("data", {}).get(k), new.get("data", {}).get(k)
        if a != b:
            diffs.append(f"data.{k}: checkpoint has {a!r}, config asks for {b!r}")
    if diffs:
        raise CheckpointError(
            "the workdir holds checkpoints of a different model; use another "
            "--workdir or the same config. Differences: " + "; ".join(diffs)
        )
