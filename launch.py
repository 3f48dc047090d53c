"""Runs a config (one run) or its whole sweep into a workdir, here or through submitit's launchers.

    python launch.py                                       # the quickstart sweep (configs/quickstart.py)
    python launch.py --config configs/X.py[:arg] [--config.key=value ...] [--workdir DIR]
    python launch.py --config configs/X.py --lr_range_test [...]   # LR range test of the config's base run
    python launch.py ... --launcher=local --jobs=N [--wait]       # N worker processes on this host's devices
    python launch.py ... --launcher=slurm --slurm.partition=P [--slurm.KEY=VALUE ...] [--wait]
    python launch.py ... --run=RUN_ID | --shard=I/N               # one run, or every N-th from the I-th
    python launch.py ... --collect [--wait]                       # results.csv, tables, plot from the run folders
                                                                  # (--wait: once the submitted runs end)

Flags: --retry_failed (rerun failed runs), --no_progress (no progress bars), -h/--help; several processes
(multi-host) join with --coordinator_address=HOST:PORT --num_processes=N --process_id=I, or on their own
under SLURM (srun) and on TPU pods (tl_research/core/distributed.py); process 0 writes the outputs. The command line is
absl flags with the config read by ml_collections' config_flags (tl_research/cli/command_line.py): an override is
typed by its key's type (--config.train.steps=100, --config.data.classes="(0, 1)"), and an override of a key
the config's sweep varies replaces the sweep's values for that key. Bad input is one `error:` line, exit code 2.

Outputs land in DIR (default runs/<config name>): results.csv, table.md, table.tex, plot.png, one folder per
run (config.json, metrics.jsonl, checkpoints/, weights/) and wandb/. Relaunching the same command resumes:
finished runs are skipped, an interrupted run continues from its last checkpoint. Launchers decide only where
runs go (tl_research/sweeps/launchers.py); a run id gives the same row whichever launcher ran it.
"""
from __future__ import annotations

import os
import sys

from absl import flags

USAGE = __doc__
FLAG_LIST = ("--config PATH[:ARG], --config.KEY=VALUE, --workdir DIR, --retry_failed, --no_progress, "
             "--lr_range_test, --launcher local|slurm, --jobs N, --wait, --run RUN_ID, --shard I/N, --collect, "
             "--slurm.{partition,gpus_per_node,nodes,timeout_min,array_parallelism,account,extra}, "
             "--coordinator_address, --num_processes, --process_id, -h/--help")


def define_flags(fv) -> None:
    """launch.py's own flags; --config and --workdir come from tl_research.cli.command_line."""
    from tl_research.sweeps import slurm_launcher
    flags.DEFINE_bool("retry_failed", False, "rerun the runs that failed", flag_values=fv)
    flags.DEFINE_bool("no_progress", False, "no progress bars", flag_values=fv)
    flags.DEFINE_bool("lr_range_test", False, "an LR range test of the config's base run", flag_values=fv)
    flags.DEFINE_enum("launcher", "local", ["local", "slurm"], "where the runs go", flag_values=fv)
    flags.DEFINE_integer("jobs", 0, "local: worker processes, each on its slice of the devices (0: this "
                         "process, one run after the other)", flag_values=fv)
    flags.DEFINE_bool("wait", False, "wait for the jobs, showing progress, then write the report", flag_values=fv)
    flags.DEFINE_multi_string("run", [], "run only this run id (repeatable)", flag_values=fv)
    flags.DEFINE_string("shard", None, "I/N: run every N-th run of the sweep from the I-th", flag_values=fv)
    flags.DEFINE_bool("collect", False, "rebuild results.csv, the tables and the plot from the run folders",
                      flag_values=fv)
    d = slurm_launcher.DEFAULTS
    flags.DEFINE_string("slurm.partition", d["partition"], "SLURM partition", flag_values=fv)
    flags.DEFINE_integer("slurm.gpus_per_node", d["gpus_per_node"], "GPUs of each run", flag_values=fv)
    flags.DEFINE_integer("slurm.nodes", d["nodes"], "nodes of each run", flag_values=fv)
    flags.DEFINE_integer("slurm.timeout_min", d["timeout_min"], "time limit of a job (it is requeued after "
                         "it, resuming its run)", flag_values=fv)
    flags.DEFINE_integer("slurm.array_parallelism", d["array_parallelism"], "array tasks running at once",
                         flag_values=fv)
    flags.DEFINE_string("slurm.account", d["account"], "SLURM account", flag_values=fv)
    flags.DEFINE_string("slurm.extra", d["extra"], "more sbatch options, e.g. '--qos=high --constraint=a100'",
                        flag_values=fv)
    define_distributed_flags(fv)


def define_distributed_flags(fv) -> None:
    flags.DEFINE_string("coordinator_address", "", "multi-host: HOST:PORT of process 0", flag_values=fv)
    flags.DEFINE_integer("num_processes", 0, "multi-host: how many processes", flag_values=fv)
    flags.DEFINE_integer("process_id", -1, "multi-host: this process's index, 0..N-1", flag_values=fv)


def start_processes(argv: list[str]) -> None:
    """jax.distributed.initialize from the multi-host flags (or the environment), before the command line
    is read in full: reading a config may already touch JAX, and the distributed start must come first."""
    from tl_research.core import distributed
    fv = flags.FlagValues()
    define_distributed_flags(fv)
    try:
        fv(["prog", *argv], known_only=True)
    except flags.Error:
        return  # command_line.parse reports the bad flag
    distributed.initialize(fv.coordinator_address, fv.num_processes, fv.process_id)


def _launch_options(fv, argv):
    """The launcher flags checked together (before anything runs): None for a launch in this process."""
    from tl_research.sweeps import launchers, slurm_launcher
    from tl_research.core.errors import ConfigError
    slurm = {k: fv[f"slurm.{k}"].value for k in slurm_launcher.FLAGS}
    given = [f"--slurm.{k}" for k in slurm_launcher.FLAGS if fv[f"slurm.{k}"].present]
    if given and fv.launcher != "slurm":
        raise ConfigError(given[0], slurm[given[0][len("--slurm."):]], "--slurm.* flags with --launcher=slurm")
    if fv.jobs < 0 or (fv.jobs and fv.launcher == "slurm"):
        raise ConfigError("--jobs", fv.jobs, "an integer >= 0 with --launcher=local (SLURM runs "
                          "--slurm.array_parallelism tasks at once)")
    if fv.run and fv.shard:
        raise ConfigError("--shard", fv.shard, "either --run or --shard")
    if fv.launcher == "local" and fv.jobs == 0:
        return _default_workers(fv, argv)
    return launchers.Options(launcher=fv.launcher, jobs=fv.jobs, wait=fv.wait, slurm=slurm, argv=list(argv))


QUICKSTART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "quickstart.py")
_CHOSEN = ("launcher", "jobs", "run", "shard", "collect", "lr_range_test", "coordinator_address",
           "num_processes", "process_id")


def _default_workers(fv, argv):
    """`python launch.py` on the quickstart with no launcher flags, on a CPU host with two or more cores:
    the source model trained here, then two local workers, one core each, waited for (None otherwise: the
    runs train in this process). A step on two cores is only ~1.4x as fast as on one, so two one-core
    workers finish the sweep sooner; a run's results are the same either way. Ctrl-C stops the workers too.
    --jobs=0 keeps the one-process launch."""
    from tl_research.sweeps import launchers
    path = fv["config"].config_filename.partition(":")[0]
    if (any(fv[name].present for name in _CHOSEN) or not os.path.isfile(path)
            or not os.path.samefile(path, QUICKSTART) or not launchers.cpu_workers_help()):
        return None
    return launchers.Options(launcher="local", jobs=launchers.DEFAULT_CPU_JOBS, wait=True, argv=list(argv),
                             sources_first=True, stop_on_interrupt=True)


def _where(base, opts) -> str:
    """The launch's first line: what its runs train on (the platform, devices, processes and mesh), and a
    warning line after it when the host has an accelerator JAX does not use."""
    from tl_research.sweeps import launchers
    from tl_research.core import runtime
    from tl_research.run import trainer
    if opts is None or (opts.launcher == "local" and opts.sources_first):  # this process trains
        info = runtime.describe(trainer.mesh(base))
        text = runtime.line(info)
        if opts is not None:
            text += f"; then {opts.jobs} local workers, one core each"
        platform = info["platform"]
    elif opts.launcher == "local":
        platform, ids = launchers.host_devices()
        unit = "core" if platform == "cpu" else "device"
        text = (f"on {platform}: {opts.jobs} local worker(s) sharing {len(ids)} {unit}(s) "
                f"{','.join(map(str, ids))} (each worker's log names its devices)")
    else:
        s = opts.slurm
        return (f"on SLURM: {s.get('nodes') or 1} node(s) x {s.get('gpus_per_node') or 0} GPU(s) per run "
                f"(each job's log names its devices)")
    warning = runtime.unused_accelerator_warning(platform)
    return text + (f"\n{warning}" if warning else "")


def _selected(cli):
    """The run ids --run / --shard select (None: every run); unknown ids are refused by sweep.select."""
    from tl_research import config as config_lib
    from tl_research.sweeps import sweep
    if cli.flags.shard:
        return sweep.shard([config_lib.run_id(p) for p in cli.points], cli.flags.shard)
    return list(cli.flags.run) or None


def _train(cli, progress: bool, argv, echo=print):
    """The runs, in this process or through a launcher: the rows to report, or None (jobs submitted)."""
    from tl_research.sweeps import launchers, sweep
    base, points, workdir, fv = cli.config, cli.points, cli.workdir, cli.flags
    opts = _launch_options(fv, argv)
    only = _selected(cli)
    if fv.collect:
        if fv.wait:  # follow the jobs another launch submitted, then the report
            from tl_research.sweeps import job_watch
            ids = [r[0] for r in sweep.select(sweep.prepare(base, points, workdir), only)]
            echo(f"waiting for {len(ids)} run(s) in {workdir} (Ctrl-C stops the waiting, not the jobs)")
            job_watch.follow(workdir, ids, echo=echo)
        return sweep.collect(base, points, workdir)
    echo(_where(base, opts))
    echo(f"{base.name}: {len(points) if only is None else len(only)} run(s) into {workdir}")
    if opts is not None:
        return launchers.launch(base, points, workdir, opts, only=only, retry_failed=fv.retry_failed)
    if only is None:
        return sweep.run_sweep(base, points, workdir, progress=progress, retry_failed=fv.retry_failed, echo=echo)
    sweep.run_sweep(base, points, workdir, progress=progress, retry_failed=fv.retry_failed, only=only,
                    finish=False, echo=echo)
    echo(f"report of the whole sweep: python launch.py {' '.join(launchers.collect_args(argv))} --collect")
    return None


def main(argv: list[str]) -> int:
    from tl_research.cli import command_line
    from tl_research.analysis import results
    from tl_research.sweeps import sweep
    from tl_research.core import timing
    from tl_research.run import trainer
    command_line.quiet_logging()
    from tl_research.core.errors import ConfigError
    try:
        start_processes(argv)
        cli = command_line.parse(argv, define_flags, usage=USAGE, default_config="configs/quickstart.py",
                                 flag_list=FLAG_LIST)
        if cli is None:  # --help
            return 0
        base, workdir = cli.config, cli.workdir
        from tl_research.core import distributed, runtime
        echo = print if distributed.is_writer() else (lambda *args, **kw: None)  # multi-host: one voice
        if runtime.sweep_deterministic(base, cli.points):
            if runtime.backend_started():
                echo("warning: train.deterministic=True comes too late for this process (its config already ran "
                     "JAX); set XLA_FLAGS=--xla_gpu_deterministic_ops=true before launching")
            runtime.deterministic(True)  # XLA_FLAGS, for this process and the workers it starts
        trainer.enable_compilation_cache()
        timing.new_launch()  # DIR/timing.json sums the runs this launch (and its workers) trained
        progress = not cli.flags.no_progress and sys.stderr.isatty()
        if cli.flags.lr_range_test:
            echo(_where(base, None))
            sweep.range_test(base, workdir, progress=progress)
            return 0
        rows = _train(cli, progress and distributed.is_writer(), argv, echo)
        if rows is None:
            return 0
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; relaunch the same command to resume (finished runs are kept, the run in progress "
              "continues from its last checkpoint)", file=sys.stderr)
        return 130
    if not distributed.is_writer():
        return 0
    table = results.write_report(workdir, base.report, rows)
    print()
    print(table)
    print(f"results: {workdir / 'results.csv'}  table: {workdir / 'table.md'}  plot: {workdir / 'plot.png'}")
    failed = [r for r in rows if r.get("status") != "done"]
    if failed:
        print(f"{len(failed)} run(s) failed; see the reason column of results.csv")
    return 0


def _process_index(argv: list[str]) -> int:
    """--process_id's value from the raw command line (0 without it): which core a CPU process takes."""
    for i, arg in enumerate(argv):
        value = arg.partition("=")[2] if arg.startswith("--process_id=") else (
            argv[i + 1] if arg == "--process_id" and i + 1 < len(argv) else "")
        if value.isdigit():
            return int(value)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from tl_research.sweeps import sweep_job
    sweep_job.pin_cpu_run(index=_process_index(sys.argv[1:]))  # a CPU run's numbers, whatever the core count
    sys.exit(main(sys.argv[1:]))
