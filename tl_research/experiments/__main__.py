"""python -m tl_research.experiments run NAME|all [--scale digits|paper] [--dry_run] [--workdir DIR] [--out DIR]
                                     [--launcher local|slurm] [--jobs N] [--slurm.KEY VALUE ...]
                                 | report NAME|all [--scale digits|paper] [--workdir DIR] [--out DIR] [--wall_time S]
                                 | check NAME|all [--tolerance T] [--jobs N] | list

run: the experiment's sweep into DIR (resumable: finished runs are skipped), then its README.md, plot.png and
summary.json under OUT/NAME/ and the index OUT/README.md, ending with the verdict lines.
  --scale digits (default): experiments/NAME/config.py on the built-in digits; DIR runs/experiments/NAME, OUT
      experiments/ (the committed results).
  --scale paper: experiments/NAME/paper.py, the paper's datasets (TFDS, prepared under the TFDS data dir:
      $TFDS_DATA_DIR or ~/tensorflow_datasets) and converted weights (docs/pretrained.md), for GPUs; DIR
      runs/experiments_paper/NAME/runs, OUT runs/experiments_paper (never the committed files).
  --dry_run: prints, reading no data or weights and training nothing, the datasets (TFDS names, splits and
      sizes where known, prepared or not), the weights expected (present or missing), the number of runs and
      source models and an estimate of the GPU-hours on one A100 and one H100
      (tl_research/experiments/costs.py), then each missing input on a line of its own with the command that
      makes it.
  --launcher local (default) --jobs N: N local worker processes, each on its share of the host's devices (GPUs
      or CPU cores); 0 trains every run in this process; default (-1): two one-core workers on a CPU host with
      two or more cores (after the source models, which train here), else 0. --launcher slurm
      [--slurm.partition P --slurm.gpus_per_node G --slurm.nodes N --slurm.timeout_min M
      --slurm.array_parallelism A --slurm.account X --slurm.extra '--qos=high']: one SLURM job per source
      model, then one job array of the runs (tl_research/sweeps/slurm_launcher.py); the command waits for
      them, then reports (Ctrl-C stops the waiting, not the jobs; `report` writes the report later). A run's
      row is the same whichever launcher ran it.
report: the same report from an existing workdir, training nothing (--wall_time SECONDS records a wall time
measured outside, e.g. with `time`).
check: reruns the experiment (digits scale) from nothing into a temporary workdir and report folder, never
touching the committed experiments/NAME files, and compares each verdict with the committed summary.json: one
line per verdict; exit status 1 when a status differs (or a verdict is missing or new, or a figure's numbers
differ by more than T x max(1, |number|), default T 0.02), else 0 (tl_research/experiments/check.py).
list: the experiments and their published claims.
Bad input: one `error:` line naming the flag, the value and what is allowed, exit code 2."""
from __future__ import annotations

import argparse
import os
import sys

SLURM_FLAGS = {"partition": str, "gpus_per_node": int, "nodes": int, "timeout_min": int,
               "array_parallelism": int, "account": str, "extra": str}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, as every command of this codebase
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m tl_research.experiments", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("run", "report", "check", "list"))
    p.add_argument("name", nargs="?", default="")
    p.add_argument("--scale", default="digits", help="digits (config.py, the committed results) or paper "
                   "(paper.py: the paper's datasets and weights, for GPUs)")
    p.add_argument("--dry_run", action="store_true", help="run: print the datasets, weights, runs and estimated "
                   "GPU-hours, and the missing inputs; read no data, train nothing")
    p.add_argument("--workdir", default="", help="the sweep's workdir (default runs/experiments/NAME, at paper "
                   "scale runs/experiments_paper/NAME/runs; with NAME=all, DIR/NAME per experiment)")
    p.add_argument("--out", default="", help="where the report goes (OUT/NAME/ and OUT/README.md; default the "
                   "repository's experiments/, at paper scale runs/experiments_paper)")
    p.add_argument("--wall_time", type=float, default=None, help="report: a wall time to record, in seconds")
    p.add_argument("--launcher", default="local", help="run, check: local or slurm")
    p.add_argument("--jobs", type=int, default=-1, help="run, check with --launcher local: worker processes "
                   "(0: every run in this process; default: 2 one-core workers on a CPU host with 2+ cores, "
                   "else 0); the rows are the same whatever the number")
    for key, kind in SLURM_FLAGS.items():
        p.add_argument(f"--slurm.{key}", type=kind, default=None, help=f"with --launcher slurm: {key}")
    p.add_argument("--tolerance", type=float, default=None, help="check: how far a verdict's numbers may move "
                   "(|a - b| <= T x max(1, |a|, |b|); default 0.02)")
    return p


def jobs(asked: int) -> int:
    """--jobs: the number asked, or (-1) the default launch's one-core workers where they help."""
    from tl_research.core.errors import ConfigError
    if asked < -1:
        raise ConfigError("--jobs", asked, "-1 (automatic), 0 (this process) or a number of workers")
    if asked >= 0:
        return asked
    from tl_research.sweeps import launchers
    return launchers.DEFAULT_CPU_JOBS if launchers.cpu_workers_help() else 0


def launch_options(args):
    """Where the runs go, from --launcher, --jobs and --slurm.*: a launchers.Options, or None (this process).
    Checked before anything runs."""
    from tl_research.core.errors import ConfigError
    from tl_research.experiments import runner
    from tl_research.sweeps import launchers
    slurm = {key: getattr(args, f"slurm.{key}") for key in SLURM_FLAGS}
    given = [key for key, value in slurm.items() if value is not None]
    if args.launcher not in ("local", "slurm"):
        raise ConfigError("--launcher", args.launcher, "local, slurm")
    if given and (args.launcher != "slurm" or args.command not in ("run", "check")):
        raise ConfigError(f"--slurm.{given[0]}", slurm[given[0]], "--slurm.* flags with run --launcher slurm")
    if args.command not in ("run", "check") and (args.launcher != "local" or args.jobs != -1):
        flag, value = ("--launcher", args.launcher) if args.launcher != "local" else ("--jobs", args.jobs)
        raise ConfigError(flag, value, "run or check with it", why=f"{args.command} trains nothing")
    if args.launcher == "slurm":
        if args.jobs != -1:
            raise ConfigError("--jobs", args.jobs, "no --jobs with --launcher slurm (SLURM runs "
                              "--slurm.array_parallelism tasks at once)")
        from tl_research.sweeps import slurm_launcher
        given = {k: v for k, v in slurm.items() if v is not None}
        slurm_launcher.check(given)  # no sbatch here, an unknown partition, numbers out of range: now, in one line
        return launchers.Options(launcher="slurm", wait=True, slurm=given)
    n = jobs(args.jobs)
    return runner.local_options(n) if n else None


def check_flags(args) -> None:
    """The flags that only some commands take, checked together before any work."""
    from tl_research.core.errors import ConfigError
    from tl_research.experiments import registry
    if not args.name:
        raise ConfigError("experiment NAME", "", "all, " + ", ".join(registry.names()), why=f"{args.command} needs one")
    if args.dry_run and args.command != "run":
        raise ConfigError("--dry_run", True, "run with it", why=f"{args.command} has no dry run")
    if args.tolerance is not None and args.command != "check":
        raise ConfigError("--tolerance", args.tolerance, "check with it")
    if args.command == "check":
        for flag, value, default in (("--scale", args.scale, "digits"), ("--workdir", args.workdir, ""),
                                     ("--out", args.out, ""), ("--wall_time", args.wall_time, None)):
            if value != default:
                raise ConfigError(flag, value, "check without it", why="check reruns the committed digits-scale "
                                  "experiment into a temporary directory")
    if args.wall_time is not None and args.command != "report":
        raise ConfigError("--wall_time", args.wall_time, "report with it")


def _paths(args, exp, many: bool):
    from tl_research.experiments import runner
    workdir = os.path.join(args.workdir, exp.name) if args.workdir and many else args.workdir or None
    return workdir, args.out or runner.default_out(exp)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from tl_research.cli import command_line
    command_line.quiet_logging()
    from tl_research.core.errors import ConfigError
    from tl_research.experiments import registry, runner
    if args.command == "list":
        for e in registry.EXPERIMENTS:
            print(f"{e.name:18s} {e.claim}")
        return 0
    try:
        check_flags(args)
        chosen = [runner.at_scale(e, args.scale) for e in registry.get(args.name)]  # every paper.py, first
        if args.command == "report" and len(chosen) > 1 and args.wall_time is not None:
            raise ConfigError("--wall_time", args.wall_time, "one experiment's NAME with it")
        if args.dry_run:
            return dry_runs(chosen, args.scale)
        opts = launch_options(args)
        if args.command == "check":
            from tl_research.experiments import check
            tolerance = check.DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
            codes = [check.check(e, registry.EXPERIMENTS, tolerance=tolerance, opts=opts) for e in chosen]
            return max(codes)
        scaled = {e.name: e for e in chosen}
        experiments = [scaled.get(e.name, e) for e in registry.EXPERIMENTS]
        for exp in chosen:
            workdir, out = _paths(args, exp, len(chosen) > 1)
            if args.command == "run":
                from tl_research.run import trainer
                trainer.enable_compilation_cache()
                runner.run(exp, experiments, out=out, workdir=workdir, opts=opts)
            else:
                runner.report(exp, experiments, out=out, workdir=workdir, wall_time=args.wall_time)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the same command resumes (finished runs are kept); SLURM jobs go on, and `report` "
              "writes the report once they end", file=sys.stderr)
        return 130
    return 0


def dry_runs(chosen, scale: str) -> int:
    """The dry run of each chosen experiment, then the total when there are several."""
    from tl_research.experiments import costs, dry_run, runner
    plans = []
    for exp in chosen:
        module = runner.load_module(exp)
        title = f"{exp.name} ({scale} scale, experiments/{exp.name}/{exp.config})"
        plans.append(dry_run.report(title, module.get_config(), module.get_sweep(), getattr(module, "WEIGHTS", None)))
        print()
    if len(plans) > 1:
        total = {g: sum(p.hours[g] for p in plans) for g in costs.GPUS}
        missing = sum(len(p.missing) for p in plans)
        print(f"all {len(plans)}: {sum(p.runs for p in plans)} runs, estimated GPU-hours "
              + ", ".join(f"{h:,.0f} on one {g}" for g, h in total.items()) + f"; {missing} missing input line(s)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from tl_research.sweeps import sweep_job
    sweep_job.pin_cpu_run()  # a CPU run's numbers, whatever the core count (as launch.py)
    sys.exit(main(sys.argv[1:]))
