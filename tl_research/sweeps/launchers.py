"""Where a sweep's runs go: submitit jobs on this host's accelerators (--launcher=local --jobs=N) or on a
SLURM cluster (--launcher=slurm), each executing tl_research.sweeps.sweep_job.SweepJob for its run ids.

    local, --jobs=N   N submitit LocalExecutor jobs (worker processes), each given its slice of the host's
                      devices: CUDA_VISIBLE_DEVICES for GPUs, the CPU cores otherwise (sched_setaffinity).
                      Each worker starts on its share of the runs (i, i + N, ...) and then takes the others
                      nobody holds, so a slow run never leaves the other workers idle.
    slurm             one job per source model still to train, then one job array of the runs (one task
                      per run, --slurm.array_parallelism at once) that depends on it (afterany: a failed
                      source becomes failed rows instead of an array that never starts).

A launcher only decides where runs go: the jobs run the sequential launch's sweep code, under the same
per-run, per-source and results.csv locks (tl_research.core.locks). With --wait the launching command shows runs
done / running / queued / failed while the jobs run, resubmits the runs of jobs that ended without
recording them (a worker killed with kill -9, a node that failed; job_watch.RETRIES times), then records
those runs as failed with the reason, and writes the report. Preemption and time limits are submitit's: it sends
the job USR2, calls its checkpoint() and requeues it, and the run resumes from its orbax checkpoint.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import shlex
import subprocess
import sys

from tl_research.sweeps import job_watch, slurm_launcher, sweep, sweep_job

from tl_research.analysis import results
from tl_research.core.errors import ConfigError
from tl_research.sweeps.job_watch import Slot
from tl_research.sweeps.sweep_job import SweepJob

ROOT = pathlib.Path(__file__).resolve().parents[2]  # on the workers' PYTHONPATH: they unpickle SweepJob
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # submitit's local default (2 minutes) would interrupt every worker
PROBE = "import jax; d = jax.devices(); print(d[0].platform, len(d))"
DEFAULT_CPU_JOBS = 2  # one-core workers of a default launch (launch.py: the quickstart on a CPU host)


@dataclasses.dataclass
class Options:
    launcher: str = "local"
    jobs: int = 0  # local: 0 trains in this process (the sequential launch)
    wait: bool = False
    poll_s: float = 1.0  # between looks at results.csv, the run locks and the jobs' states
    argv: list = dataclasses.field(default_factory=list)  # the command line, for the --collect hint
    sources_first: bool = False  # local: train the source models in this process (every core) first
    stop_on_interrupt: bool = False  # Ctrl-C while waiting cancels the jobs (a default launch, not an opt-in)
    slurm: dict = dataclasses.field(default_factory=dict)  # --slurm.* by name, e.g. {"partition": "gpu"}


# ---------------------------------------------------------------------------------------------- devices

def host_devices() -> tuple[str, list[int]]:
    """(platform, device ids) of this host, from jax.devices() in a short child process: this process only
    submits, and a GPU client started here would hold memory the workers need."""
    if not sweep_job.accelerator_plugin():
        return "cpu", sweep_job.host_cpus()
    try:
        out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=600)
        platform, count = out.stdout.split()[-2:]
    except (subprocess.SubprocessError, ValueError):
        raise ConfigError("--launcher", "local", "a host where JAX starts", why="jax.devices() failed") from None
    if platform == "cpu":
        return platform, sweep_job.host_cpus()  # the cores are what a CPU host splits
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
    ids = [int(v) for v in visible] if all(v.strip().isdigit() for v in visible) else list(range(int(count)))
    return platform, ids[: int(count)]


def cpu_workers_help() -> bool:
    """Whether one-core local workers beat one process here: a CPU-only host with DEFAULT_CPU_JOBS or more
    cores this process may use (an XLA step on two cores is ~1.4x as fast as on one, so two one-core workers
    get more steps done; benchmarks/sweep_launchers.py --quickstart measures it)."""
    return not sweep_job.accelerator_plugin() and len(sweep_job.host_cpus()) >= DEFAULT_CPU_JOBS


def device_slices(platform: str, devices: list[int], jobs: int) -> list[list[int]]:
    """Each worker's devices: equal slices (8 GPUs, 2 jobs: four each); ConfigError for more jobs than
    devices. CPU cores are split as evenly as they go (the mesh is one CPU device either way)."""
    kind = "CPU cores" if platform == "cpu" else f"{platform.upper()}s"
    if platform not in ("cpu", "gpu", "cuda", "rocm"):
        raise ConfigError("--jobs", jobs, "--jobs=1 or none (a TPU host runs one process)", why=f"{platform} host")
    if not 1 <= jobs <= len(devices):
        raise ConfigError("--jobs", jobs, f"1 to {len(devices)}, the {kind} of this host",
                          why=f"{len(devices)} {kind} to share out")
    if platform == "cpu":
        bounds = [round(i * len(devices) / jobs) for i in range(jobs + 1)]
        return [devices[bounds[i]:bounds[i + 1]] for i in range(jobs)]
    per = len(devices) // jobs
    return [devices[i * per:(i + 1) * per] for i in range(jobs)]


@contextlib.contextmanager
def _importable():
    """The package root on PYTHONPATH while jobs are submitted: submitit's workers inherit the environment
    and unpickle SweepJob by reference, whatever directory the command was started from."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([old] if old else []))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


# ---------------------------------------------------------------------------------------------- local

def worker_parameters(platform: str, devices: list[int]) -> dict:
    """LocalExecutor.update_parameters for a worker on `devices`: submitit sets CUDA_VISIBLE_DEVICES to
    the GPUs (to none on a CPU host, whose worker gets its cores by affinity instead)."""
    gpus = tuple(devices) if platform != "cpu" else ()
    return {"timeout_min": LOCAL_TIMEOUT_MIN, "gpus_per_node": len(gpus), "visible_gpus": gpus}


def local_slots(base, points, workdir: pathlib.Path, todo: list[str], jobs: int, echo=print) -> list[Slot]:
    """--launcher=local --jobs=N: N submitit LocalExecutor workers, each on its slice of the devices."""
    import submitit
    platform, devices = host_devices()
    slices = device_slices(platform, devices, jobs)
    executor = submitit.LocalExecutor(folder=workdir / "local")
    slots = []
    for i, devs in enumerate(slices[: len(todo)]):  # never more workers than runs
        def submit(run_ids, devs=devs):
            executor.update_parameters(**worker_parameters(platform, devs))
            with _importable():  # submitit copies this process's environment into the worker's
                return executor.submit(SweepJob(base, points, workdir, run_ids,
                                                cpus=devs if platform == "cpu" else None))
        mine = todo[i::len(slices)]
        order = mine + [rid for rid in todo if rid not in set(mine)]  # its share first, then any free run
        slots.append(Slot(f"worker {i}", order, submit(order), submit))
        what = "cores" if platform == "cpu" else f"{platform.upper()}s"
        echo(f"worker {i}: local job {slots[-1].job.job_id} on {what} {','.join(map(str, devs))}")
    return slots


# ---------------------------------------------------------------------------------------------- launch

def launch(base, points, workdir, opts: Options, *, only=None, retry_failed: bool = False,
           echo=print) -> list[dict] | None:
    """Submits the runs (those `only` names) that are not recorded yet; with opts.wait, waits and returns
    the rows (None without it, once the jobs are submitted). Every check comes before anything is submitted."""
    workdir = pathlib.Path(workdir).absolute()
    if opts.launcher == "slurm":
        slurm_launcher.check(opts.slurm)
    runs = sweep.prepare(base, points, workdir)
    selected = sweep.select(runs, only)
    if retry_failed:
        _forget_failures(workdir, {r[0] for r in selected})
    todo = sweep.pending(selected, workdir)
    echo(f"{len(selected) - len(todo)} of {len(selected)} runs already recorded; submitting {len(todo)}")
    slots = []
    if todo and opts.launcher == "slurm":
        with _importable():
            slots = slurm_launcher.slots(base, points, workdir, todo, opts.slurm, echo)
    elif todo:
        if opts.sources_first:  # the source on every core, then the runs on the workers' shares
            sweep.train_sources(base, points, workdir, only=[r[0] for r in todo], echo=echo)
        slots = local_slots(base, points, workdir, [r[0] for r in todo], opts.jobs, echo)
    if not opts.wait:
        echo(background_note(opts, workdir, slots, len(todo)))
        return None
    try:
        job_watch.wait(slots, workdir, selected, sweep.swept_keys(points), poll_s=opts.poll_s, echo=echo)
    except KeyboardInterrupt:
        if opts.stop_on_interrupt:
            for s in slots:
                s.job.cancel(check=False)
        raise
    return sweep.finish_sweep(base, runs, workdir, echo)


def background_note(opts: Options, workdir: pathlib.Path, slots: list[Slot], runs: int) -> str:
    """The one line a launch without --wait ends with: where the jobs are and how to follow them."""
    collect = " ".join(["python launch.py", *(shlex.quote(a) for a in collect_args(opts.argv)), "--collect"])
    follow = f"{collect} --wait"
    if not slots:
        return f"nothing to submit; the report: {collect}"
    ids = ", ".join(str(s.job.job_id) for s in slots)
    where = (f"{len(slots)} local worker process(es) (pid {ids})" if opts.launcher == "local"
             else f"SLURM job(s) {ids}")
    return (f"{runs} run(s) go on in the background in {where}, after this command returns (logs: "
            f"{workdir / opts.launcher}/); to follow them and write the report when they end: {follow}")


def collect_args(argv: list[str]) -> list[str]:
    """The command line without the flags that launch: what --collect reads the same sweep with."""
    drop = ("--launcher", "--jobs", "--wait", "--nowait", "--slurm.", "--retry_failed", "--run", "--shard")
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a.startswith(drop):
            skip = "=" not in a and a.lstrip("-") not in ("wait", "nowait", "retry_failed")
        else:
            out.append(a)
    return out


def _forget_failures(workdir: pathlib.Path, ids: set[str]) -> None:
    """--retry_failed with a launcher: the selected runs' failed rows are dropped before submission (the
    jobs then train them as any run not recorded), rather than each worker retrying them in turn."""
    with results.locked(workdir / sweep.RESULTS):
        rows = results.read_rows(workdir / sweep.RESULTS)
        keep = [r for r in rows if not (r["run_id"] in ids and r["status"] == "failed")]
        if len(keep) < len(rows):
            results.write_rows(workdir / sweep.RESULTS, keep)
