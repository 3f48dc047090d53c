"""The multi-host start: one `jax.distributed.initialize` per process, before any other JAX call.

A run spread over several processes (a multi-node GPU job, a TPU pod slice) needs every process to join one
distributed runtime. Where the processes come from:

    explicit      --coordinator_address=HOST:PORT --num_processes=N --process_id=I (flags), or the
                  JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID environment variables
    SLURM         srun with more than one task, one per node: JAX reads SLURM_* (the coordinator is the first
                  node), and each task is given every GPU of its node (slurm_local_devices)
    TPU pod       a Cloud TPU VM (its TPU device files and libtpu) or the TPU_WORKER_HOSTNAMES /
                  MEGASCALE_* environment: JAX reads the pod's workers from the VM's metadata

A single process (no flags, no cluster) starts nothing. After the start every process runs the same
program; `is_writer()` names the one that writes the run's files (process 0), `barrier(name)` waits for all.
"""
from __future__ import annotations

import os
import re

import jax

from tl_research.core.errors import ConfigError

_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
_started = ""  # how this process joined, once it has (a second call is a no-op)


def _cluster() -> str:
    """'slurm' or 'tpu' when this process is one task of a multi-process job of that kind, else ''."""
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_PROCID" in os.environ:
        return "slurm"
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if "," in hosts or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS") or _tpu_vm():
        return "tpu"
    return ""


def _tpu_vm() -> bool:
    """A Cloud TPU VM with JAX's TPU runtime installed: its TPU device files and libtpu. JAX reads the pod's
    workers from the VM's metadata server, so jax.distributed.initialize() is called without arguments (on a
    one-host slice it starts a single process, which is harmless)."""
    import importlib.util
    from tl_research.core import runtime
    return runtime.accelerator_present() == "TPU" and bool(importlib.util.find_spec("libtpu"))


def _tasks_per_node(text: str) -> int:
    """The largest count of SLURM_STEP_TASKS_PER_NODE / SLURM_TASKS_PER_NODE ('1(x4)', '2,1', '8')."""
    counts = [int(m) for m in re.findall(r"(\d+)(?:\(x\d+\))?", text)] if text else []
    return max(counts, default=1)


def slurm_local_devices() -> list[int] | None:
    """The local device ids of this SLURM task: one task per node sees every GPU SLURM gave the node (JAX's
    own SLURM detection would give each task only the GPU of its local rank, so one GPU per node would
    train). More than one task per node is refused: --slurm.nodes=N submits one task per node, and
    `srun --ntasks-per-node=1` is the manual recipe. None where the node shows no GPU (a CPU job)."""
    per_node = _tasks_per_node(os.environ.get("SLURM_STEP_TASKS_PER_NODE")
                               or os.environ.get("SLURM_TASKS_PER_NODE", ""))
    if per_node > 1:
        raise ConfigError("srun --ntasks-per-node", per_node, "1: one task per node, seeing all the node's GPUs "
                          "(what --launcher=slurm --slurm.nodes=N submits)",
                          why="a multi-node run starts one process per node")
    visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    count = len(visible) or int(os.environ.get("SLURM_GPUS_ON_NODE", "0") or 0)
    return list(range(count)) or None


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
    if kind == "slurm":  # JAX's SLURM detection, with every GPU of the node for its one task
        jax.distributed.initialize(local_device_ids=slurm_local_devices())
    elif kind:
        jax.distributed.initialize()  # JAX's own detection reads the TPU environment or metadata
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
