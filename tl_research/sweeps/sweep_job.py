"""The job a launcher submits (tl_research.sweeps.launchers): a plain top-level callable that submitit pickles,
runs on a worker (a local process or a SLURM array task) and, on preemption or a time limit, requeues.

It runs the sweep code of a sequential launch for its run ids (tl_research.sweeps.sweep.run_sweep with `only`),
so a run gives the same row whichever launcher ran it. It holds no state of its own: requeued, it starts
again and the sweep code skips the recorded runs and resumes the interrupted one from its orbax checkpoint.
Module-level imports are kept light: submitit unpickles the job (importing this module) before it installs
its signal handlers, and the CPU affinity and thread settings must be in place before JAX starts its
thread pools.
"""
from __future__ import annotations

import os

from submitit.helpers import Checkpointable

# A worker on one core: XLA's CPU backend then runs each op's Eigen kernels on the calling thread instead of
# handing them to a one-thread pool (flag checked against the installed jaxlib; an unknown one is fatal).
ONE_CORE_XLA_FLAGS = ("--xla_cpu_multi_thread_eigen=false",)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def pin(cpus, environ=None) -> None:
    """Confines this process to the cores `cpus` before JAX starts: their affinity (XLA and Eigen size their
    thread pools by it), the OpenMP / MKL / OpenBLAS thread counts (kept where the environment already asks
    for fewer), and on one core XLA's single-threaded Eigen kernels."""
    environ = os.environ if environ is None else environ
    os.sched_setaffinity(0, cpus)
    n = len(cpus)
    for var in THREAD_VARIABLES:
        given = environ.get(var, "")
        environ[var] = str(min(int(given), n) if given.isdigit() and int(given) > 0 else n)
    if n == 1:
        from tl_research.core import runtime  # light: no JAX
        runtime.add_xla_flags(ONE_CORE_XLA_FLAGS, environ)


def accelerator_plugin() -> bool:
    """Whether JAX could find an accelerator here: a PJRT plugin (CUDA, ROCm: the jax_plugins entry points or
    namespace) or libtpu. Without one, jax.devices() is this host's CPU."""
    import importlib.metadata
    import importlib.util
    if os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
        return False
    return bool(list(importlib.metadata.entry_points(group="jax_plugins"))
                or importlib.util.find_spec("jax_plugins") or importlib.util.find_spec("libtpu"))


_HOST_CPUS: list[int] = []  # the cores this process could use before pin_cpu_run confined it


def host_cpus() -> list[int]:
    """The cores this process may use, or could before pin_cpu_run confined it to one: what a launcher
    shares out among its local workers."""
    return list(_HOST_CPUS) or sorted(os.sched_getaffinity(0))


def pin_cpu_run(cpus=None, index: int = 0) -> None:
    """On a CPU host, confines this process to one core (the `index`-th of `cpus`, default the cores it may
    use) before JAX starts, so that a run's numbers do not depend on how many cores trained it: XLA's CPU
    backend splits reductions over its thread pool, sized by the process's cores, so the same run on two
    cores and on one differs in the last bits and then in its accuracies. Every CPU run (a launch in one
    process, each local worker, a SLURM task) trains on one core; --jobs=N trains N runs at once. No-op on a
    host with an accelerator (its runs do not run on the CPU)."""
    if accelerator_plugin():
        return
    _HOST_CPUS[:] = host_cpus()
    cpus = sorted(cpus or _HOST_CPUS)
    pin([cpus[index % len(cpus)]])


class SweepJob(Checkpointable):
    """Trains `run_ids` of the sweep (`base`, `points`) into `workdir`, in that order; with `sources_only`,
    only the source models they start from. `cpus`: the cores this job may use (a local worker's share)."""

    def __init__(self, base, points, workdir, run_ids, *, cpus=None, sources_only: bool = False):
        self.base, self.points, self.workdir = base, points, str(workdir)
        self.run_ids, self.cpus, self.sources_only = list(run_ids), cpus, sources_only

    def __call__(self) -> dict:
        pin_cpu_run(self.cpus)  # before JAX sizes its thread pools by the cores it may use
        from tl_research.core import logs
        from tl_research.core import distributed, runtime
        from tl_research.sweeps import sweep
        from tl_research.run import trainer
        runtime.deterministic(runtime.sweep_deterministic(self.base, self.points))  # before JAX starts too
        distributed.initialize()  # a task of a multi-node SLURM job joins the others (one task per node)
        logs.quiet_logging()
        trainer.enable_compilation_cache()
        echo = lambda *a: print(*a, flush=True)  # noqa: E731 - the job's log is read while it runs
        info = runtime.describe(trainer.mesh(self.base))
        echo(runtime.line(info))
        runtime.warn_if_unused_accelerator(info["platform"], echo)
        if self.sources_only:
            return sweep.train_sources(self.base, self.points, self.workdir, only=self.run_ids, echo=echo)
        rows = sweep.run_sweep(self.base, self.points, self.workdir, progress=False, only=self.run_ids,
                               finish=False, echo=echo)
        mine = set(self.run_ids)
        return {r["run_id"]: r["status"] for r in rows if r["run_id"] in mine}

    # checkpoint(): Checkpointable's own, which resubmits this job as it is: all its state is on disk.
