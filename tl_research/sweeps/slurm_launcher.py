"""--launcher=slurm: the sweep as submitit SLURM jobs, logs under DIR/slurm/.

    stage 1   one job per source model that the runs start from and that is not trained yet (one array
              when there are several)
    stage 2   one job array, one task per run (tl_research.sweeps.sweep_job.SweepJob with that run's id), at most
              --slurm.array_parallelism at once, after stage 1 (afterany: a source that failed gives
              failed rows, not an array that waits forever; a task whose source is missing trains it
              under the source lock, once)

Every task asks for --slurm.nodes nodes with --slurm.gpus_per_node GPUs and one task per node, for
--slurm.timeout_min minutes. With --slurm.nodes=N > 1 a run spans N nodes: submitit starts the job on each
node's one task, which joins the others through jax.distributed (distributed.initialize: JAX's SLURM detection,
each task given every GPU of its node), so the run's mesh holds N x --slurm.gpus_per_node devices; process 0
writes the run's files. One task per GPU is not supported (distributed.slurm_local_devices refuses it).
SLURM sends USR2 before the time limit (and on preemption); submitit's handler calls the job's checkpoint()
and requeues it (scontrol requeue), and the requeued task resumes its run from its orbax checkpoint. The
workdir must be on a file system every node sees, with working flock.
"""
from __future__ import annotations

import pathlib
import shutil
import subprocess

from tl_research.sweeps import sweep
from tl_research.core.errors import ConfigError
from tl_research.sweeps.job_watch import Slot
from tl_research.sweeps.sweep_job import SweepJob

FLAGS = ("partition", "gpus_per_node", "nodes", "timeout_min", "array_parallelism", "account", "extra")
DEFAULTS = {"partition": None, "gpus_per_node": 1, "nodes": 1, "timeout_min": 240, "array_parallelism": 256,
            "account": None, "extra": ""}
# a word of sbatch's refusal -> the flag that set what it refused
SBATCH_WORDS = {"partition": "partition", "account": "account", "gres": "gpus_per_node", "gpu": "gpus_per_node",
                "time limit": "timeout_min", "node count": "nodes"}
MAX_REQUEUES = 3  # submitit's max_num_timeout: time-limit requeues of one task before it gives up


def extra_parameters(text: str) -> dict:
    """--slurm.extra="--qos=high --constraint=a100 --exclusive" (or comma-separated, dashes optional) ->
    sbatch options for submitit's additional_parameters."""
    out = {}
    for item in text.replace(",", " ").split():
        key, eq, value = item.lstrip("-").partition("=")
        if not key:
            raise ConfigError("--slurm.extra", text, "sbatch options such as '--qos=high --constraint=a100'")
        out[key.replace("-", "_")] = value if eq else True
    return out


def parameters(opts: dict, name: str) -> dict:
    """SlurmExecutor.update_parameters for the runs' jobs."""
    o = {**DEFAULTS, **{k: v for k, v in opts.items() if v is not None}}
    params = {"job_name": name, "time": int(o["timeout_min"]), "nodes": int(o["nodes"]), "ntasks_per_node": 1,
              "gpus_per_node": int(o["gpus_per_node"]), "array_parallelism": int(o["array_parallelism"]),
              "signal_delay_s": 120}  # USR2 two minutes before the limit: time for the requeue
    for key in ("partition", "account"):
        if o[key]:
            params[key] = o[key]
    extra = extra_parameters(o["extra"] or "")
    if extra:
        params["additional_parameters"] = extra
    return params


def partitions(sinfo_output: str) -> list[str]:
    """The partition names `sinfo --noheader --format=%P` lists (the default one is marked with '*')."""
    return sorted({line.strip().rstrip("*") for line in sinfo_output.splitlines() if line.strip()})


def check(opts: dict) -> None:
    """Everything SLURM would refuse that can be seen before submitting: no sbatch here, an unknown
    partition, numbers out of range. One ConfigError naming the flag."""
    if shutil.which("sbatch") is None:
        raise ConfigError("--launcher", "slurm", "local (this host), or slurm on a host where sbatch runs",
                          why="no sbatch on this machine's PATH")
    o = {**DEFAULTS, **{k: v for k, v in opts.items() if v is not None}}
    for key, low in (("nodes", 1), ("gpus_per_node", 0), ("timeout_min", 1), ("array_parallelism", 1)):
        if int(o[key]) < low:
            raise ConfigError(f"--slurm.{key}", o[key], f"an integer >= {low}")
    extra_parameters(o["extra"] or "")
    if o["partition"] and shutil.which("sinfo"):
        listed = partitions(_sinfo())
        if listed and o["partition"] not in listed:
            raise ConfigError("--slurm.partition", o["partition"], f"one of this cluster's: {', '.join(listed)}")


def _sinfo() -> str:
    try:
        return subprocess.run(["sinfo", "--noheader", "--format=%P"], capture_output=True, text=True,
                              timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return ""  # no answer: sbatch itself judges the partition


def executor(workdir: pathlib.Path, opts: dict, name: str):
    import submitit
    ex = submitit.SlurmExecutor(folder=pathlib.Path(workdir) / "slurm", max_num_timeout=MAX_REQUEUES)
    ex.update_parameters(**parameters(opts, name))
    return ex


def slots(base, points, workdir: pathlib.Path, todo: list, opts: dict, echo=print) -> list[Slot]:
    """Submits stage 1 (the source models not trained yet) and stage 2 (the array of `todo`'s runs)."""
    ex = executor(workdir, opts, base.name)
    firsts = {}  # source hash -> the first run that starts from it
    for rid, _, cfg in todo:
        key = sweep.source_pending(cfg, workdir)
        if key:
            firsts.setdefault(key, rid)
    out = []
    if firsts:
        jobs = _submit(ex, [SweepJob(base, points, workdir, [rid], sources_only=True) for rid in firsts.values()],
                       opts)
        out += [Slot(f"source {key}", [], job, lambda ids: None) for key, job in zip(firsts, jobs)]
        echo(f"SLURM job(s) {', '.join(j.job_id for j in jobs)}: source model(s) {', '.join(firsts)}")
        ex.update_parameters(dependency="afterany:" + ":".join(j.job_id for j in jobs))
    try:
        jobs = _submit(ex, [SweepJob(base, points, workdir, [rid]) for rid, _, _ in todo], opts)
    except ConfigError:
        for s in out:  # the array was refused: nothing of this launch stays queued
            s.job.cancel(check=False)
        raise

    def resubmit(ids):
        return _submit(executor(workdir, opts, base.name), [SweepJob(base, points, workdir, ids)], opts)[0]

    out += [Slot(f"run {rid}", [rid], job, resubmit) for (rid, _, _), job in zip(todo, jobs)]
    array = jobs[0].job_id.split("_")[0] if jobs else ""
    echo(f"SLURM job array {array}: {len(jobs)} run(s) (squeue -j {array}; sacct -j {array})")
    return out


def _submit(ex, fns: list, opts: dict) -> list:
    """One sbatch (an array for several jobs); sbatch's refusal becomes one line naming the likely flag."""
    try:
        if len(fns) == 1:
            return [ex.submit(fns[0])]
        return ex.submit_array(fns)
    except Exception as e:  # noqa: BLE001 - submitit's FailedJobError / CalledProcessError carry sbatch's stderr
        text = [line for line in str(e).splitlines() if line.strip()]
        line = text[-1].strip()[:200] if text else type(e).__name__
        low = line.lower()
        flag = next((f for word, f in SBATCH_WORDS.items() if word in low), "extra")
        raise ConfigError(f"--slurm.{flag}", opts.get(flag), "a value this cluster accepts",
                          why=f"sbatch: {line}") from None
