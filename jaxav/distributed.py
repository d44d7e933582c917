"""Multi-process start-up: `jax.distributed.initialize` from flags or the cluster environment.

Single-process runs (no flags, no cluster variables) skip initialisation entirely.
"""

from __future__ import annotations

import os

import jax


def _cluster_detected() -> bool:
    env = os.environ
    slurm_multi = int(env.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_JOB_ID" in env
    return slurm_multi or "TPU_WORKER_HOSTNAMES" in env or "JAX_COORDINATOR_ADDRESS" in env


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Starts the JAX multi-controller runtime when asked (flags) or on a detected cluster.

    Returns:
      True when `jax.distributed` was initialised (more than one process may take part).
    """
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and os.environ.get("JAX_PROCESS_ID"):
        process_id = int(os.environ["JAX_PROCESS_ID"])
    explicit = coordinator_address is not None
    if not explicit and not _cluster_detected():
        return False
    kwargs = {}
    if explicit:
        kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                      process_id=process_id)
    jax.distributed.initialize(**kwargs)
    return True
