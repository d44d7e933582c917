"""Multi-process start-up: `jax.distributed.initialize` from flags or the cluster environment.

Where the job's shape comes from, first match wins:

1. explicit `--coordinator_address/--num_processes/--process_id` (the `jaxav train` flags), or the
   environment `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`;
2. SLURM: `srun` with more than one task (`SLURM_JOB_ID`, `SLURM_NTASKS` > 1): JAX's own cluster
   detection reads the node list, task count and rank;
3. Cloud TPU VM: detected from the TPU environment (or `JAXAV_DISTRIBUTED=auto`), JAX reads the
   worker list from the VM metadata.

With none of these (a plain `jaxav train` on one machine) `jax.distributed` is not started.
`JAXAV_DISTRIBUTED=off` forces that, `=auto` forces `jax.distributed.initialize()` with no
arguments.

Before JAX's backend starts, CPU runs get gloo collectives (processes on CPU form one job) and,
from `local_devices` / `JAXAV_LOCAL_DEVICES`, a number of simulated CPU devices per process.
Timeouts (seconds; environment overrides in brackets) bound how long a broken job lives: a
process that stops sending heartbeats for `heartbeat` (`JAXAV_HEARTBEAT_TIMEOUT_S`, default 30)
is declared dead and every other process exits with an error; start-up waits at most `init`
(`JAXAV_INIT_TIMEOUT_S`, 300) for all processes; a finished process waits at most `shutdown`
(`JAXAV_SHUTDOWN_TIMEOUT_S`, 60) for the others at exit.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Mapping

import jax

from jaxav.errors import ConfigError

ENV_LOCAL_DEVICES = "JAXAV_LOCAL_DEVICES"
ENV_MODE = "JAXAV_DISTRIBUTED"  # auto | off (unset: decide from flags / environment)
_TPU_MARKERS = ("TPU_WORKER_HOSTNAMES", "TPU_WORKER_ID", "MEGASCALE_COORDINATOR_ADDRESS")


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """Seconds: start-up wait, heartbeat loss before a process counts as dead, exit wait."""

    init: int = 300
    heartbeat: int = 30
    shutdown: int = 60

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Timeouts:
        """Defaults overridden by `JAXAV_{INIT,HEARTBEAT,SHUTDOWN}_TIMEOUT_S`."""
        env = os.environ if env is None else env
        values = {}
        for field in dataclasses.fields(cls):
            raw = env.get(f"JAXAV_{field.name.upper()}_TIMEOUT_S")
            if raw:
                values[field.name] = _positive_int(raw, f"JAXAV_{field.name.upper()}_TIMEOUT_S")
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class Launch:
    """How this process joins the job: `mode` is none | explicit | slurm | tpu."""

    mode: str
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None


def _positive_int(raw, name: str, minimum: int = 1) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _on_tpu_vm(env: Mapping[str, str]) -> bool:
    if any(k in env for k in _TPU_MARKERS):
        return True
    has_chip = os.path.exists("/dev/accel0") or os.path.exists("/dev/vfio/0")
    return has_chip and importlib.util.find_spec("libtpu") is not None


def resolve(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    env: Mapping[str, str] | None = None,
) -> Launch:
    """Decides how (and whether) to start `jax.distributed`, without starting anything.

    Raises:
      ConfigError for an incomplete or inconsistent explicit set-up (names the missing flag).
    """
    env = os.environ if env is None else env
    mode = env.get(ENV_MODE, "").strip().lower()
    if mode not in ("", "auto", "off"):
        raise ConfigError(f"{ENV_MODE} must be auto or off, got {mode!r}")
    if mode == "off":
        return Launch("none")
    address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS") or None
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = _positive_int(env["JAX_NUM_PROCESSES"], "JAX_NUM_PROCESSES")
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = _positive_int(env["JAX_PROCESS_ID"], "JAX_PROCESS_ID", minimum=0)
    if address is not None:
        if num_processes is None or process_id is None:
            raise ConfigError(
                f"--coordinator_address={address} also needs --num_processes and --process_id "
                "(or JAX_NUM_PROCESSES / JAX_PROCESS_ID)"
            )
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ConfigError(f"--process_id={process_id} must be in [0, {num_processes})")
        return Launch("explicit", address, num_processes, process_id)
    if num_processes is not None or process_id is not None:
        if num_processes in (None, 1) and process_id in (None, 0):
            return Launch("none")
        raise ConfigError("--num_processes/--process_id need --coordinator_address HOST:PORT")
    ntasks = env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or "1"
    if "SLURM_JOB_ID" in env and _positive_int(ntasks, "SLURM_NTASKS") > 1:
        return Launch("slurm")
    if mode == "auto" or _on_tpu_vm(env):
        return Launch("tpu" if _on_tpu_vm(env) else "auto")
    return Launch("none")


def local_device_count(
    local_devices: int | None = None, env: Mapping[str, str] | None = None
) -> int | None:
    """Simulated CPU devices per process: `local_devices`, else `JAXAV_LOCAL_DEVICES`, else None."""
    env = os.environ if env is None else env
    if local_devices is not None:
        return _positive_int(local_devices, "--local_devices")
    raw = env.get(ENV_LOCAL_DEVICES)
    return _positive_int(raw, ENV_LOCAL_DEVICES) if raw else None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_devices: int | None = None,
    timeouts: Timeouts | None = None,
) -> bool:
    """Starts the JAX multi-controller runtime when asked (flags/env) or on a detected cluster.

    Must run before any JAX computation. Also sets CPU collectives (gloo) and the number of
    simulated CPU devices, and logs the topology once (process 0).

    Args:
      coordinator_address: "host:port" of process 0 (explicit set-up).
      num_processes, process_id: the job's size and this process's rank (explicit set-up).
      local_devices: simulated CPU devices for this process (default `JAXAV_LOCAL_DEVICES`).
      timeouts: start-up / heartbeat / exit timeouts (default `Timeouts.from_env()`).
    Returns:
      True when `jax.distributed` was initialised (more than one process may take part).
    Raises:
      ConfigError for an inconsistent set-up; RuntimeError from JAX when the job cannot form.
    """
    launch = resolve(coordinator_address, num_processes, process_id)
    count = local_device_count(local_devices)
    if count is not None:
        jax.config.update("jax_num_cpu_devices", count)
    if launch.mode == "none":
        return False
    if jax.distributed.is_initialized():
        return True
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    timeouts = timeouts or Timeouts.from_env()
    kwargs = dict(
        initialization_timeout=timeouts.init,
        heartbeat_timeout_seconds=timeouts.heartbeat,
        shutdown_timeout_seconds=timeouts.shutdown,
    )
    if launch.mode == "explicit":
        kwargs.update(
            coordinator_address=launch.coordinator_address,
            num_processes=launch.num_processes,
            process_id=launch.process_id,
            cluster_detection_method="deactivate",
        )
    jax.distributed.initialize(**kwargs)
    log_topology(launch.mode)
    return True


def is_primary() -> bool:
    """True on process 0: the one that writes logs, metrics and config files."""
    return jax.process_index() == 0


def topology() -> dict:
    """Processes, this process's rank, local and global device counts and the platform."""
    return {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "local_devices": jax.local_device_count(),
        "global_devices": jax.device_count(),
        "platform": jax.devices()[0].platform,
    }


def log_topology(mode: str = "") -> None:
    """Prints the job's topology once, from process 0."""
    t = topology()
    if t["process_index"] == 0:
        how = f" ({mode})" if mode else ""
        print(
            f"jaxav: distributed{how}: {t['process_count']} processes, "
            f"{t['local_devices']} local / {t['global_devices']} global {t['platform']} devices",
            flush=True,
        )
