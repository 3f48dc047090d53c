"""The multi-host start: one `jax.distributed.initialize` per process, before any other JAX call.

A run spread over several processes (a multi-node GPU job, a TPU pod slice) needs every process to join one
distributed runtime. Where the processes come from:

    explicit      --coordinator_address=HOST:PORT --num_processes=N --process_id=I (flags), or the
                  JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID environment variables
    SLURM         srun with more than one task: JAX reads SLURM_* (the coordinator is the first node)
    TPU pod       a Cloud TPU VM with several workers: JAX reads the TPU metadata

A single process (no flags, no cluster) starts nothing. After the start every process runs the same
program; `is_writer()` names the one that writes the run's files (process 0), `barrier(name)` waits for all.
"""
from __future__ import annotations

import os

import jax

from tl_research.errors import ConfigError

_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
_started = ""  # how this process joined, once it has (a second call is a no-op)


def _cluster() -> str:
    """'slurm' or 'tpu' when this process is one task of a multi-process job of that kind, else ''."""
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_PROCID" in os.environ:
        return "slurm"
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if "," in hosts or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return "tpu"
    return ""


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1) -> str:
    """Starts JAX's distributed runtime when this process is one of several; returns how it was started
    ('explicit', 'slurm', 'tpu') or '' for a single process. Arguments left unset come from the
    environment. CPU processes exchange data through JAX's default CPU collectives (gloo)."""
    global _started
    if _started:
        return _started
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    num_processes = num_processes or int(os.environ.get("JAX_NUM_PROCESSES", "0") or 0)
    if process_id < 0:
        process_id = int(os.environ.get("JAX_PROCESS_ID", "-1") or -1)
    if coordinator_address or num_processes > 1:
        if not coordinator_address or num_processes < 1 or not 0 <= process_id < num_processes:
            raise ConfigError("--coordinator_address", coordinator_address or None,
                              "HOST:PORT together with --num_processes=N and --process_id in 0..N-1 (or "
                              f"the {', '.join(_ENV)} environment variables)",
                              why=f"num_processes={num_processes}, process_id={process_id}")
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id)
        _started = "explicit"
        return _started
    kind = _cluster()
    if kind:
        jax.distributed.initialize()  # JAX's own cluster detection reads the SLURM or TPU environment
    _started = kind
    return kind


def is_writer() -> bool:
    """True on the one process that writes a run's files (config, metrics, results, tables, W&B)."""
    return jax.process_index() == 0


def multi_process() -> bool:
    return jax.process_count() > 1


def barrier(name: str) -> None:
    """Every process waits here until all have arrived (a no-op for one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def agree(flag: bool) -> bool:
    """Process 0's `flag` on every process (itself for one process): for a decision that reads the local clock
    and starts a collective, such as a checkpoint, which every process must take alike."""
    if jax.process_count() == 1:
        return flag
    import numpy as np
    from jax.experimental import multihost_utils
    return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag, np.int32)))
