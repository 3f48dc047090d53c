"""python -m tl_research.experiments run NAME|all [--workdir DIR] | report NAME [--workdir DIR] | list

run: the experiment's sweep into DIR (default runs/experiments/NAME; resumable: finished runs are skipped; on a
CPU host every run trains on one core, two local workers at a time where there are two cores: --jobs), then
its README.md, plot.png and summary.json under experiments/NAME/ and the index experiments/README.md, ending
with the verdict lines. report: the same from an existing workdir, training nothing (--wall_time SECONDS
records a wall time measured outside, e.g. with `time`). list: the experiments and their published claims.
Bad input: one `error:` line, exit code 2."""
from __future__ import annotations

import argparse
import os
import sys


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, as every command of this codebase
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m tl_research.experiments", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("run", "report", "list"))
    p.add_argument("name", nargs="?", default="")
    p.add_argument("--workdir", default="", help="the sweep's workdir (default runs/experiments/NAME; with "
                                                 "NAME=all, DIR/NAME per experiment)")
    p.add_argument("--wall_time", type=float, default=None, help="report: a wall time to record, in seconds")
    p.add_argument("--jobs", type=int, default=-1, help="run: local one-core worker processes (0: every run in "
                   "this process, on one core; default: 2 on a CPU host with 2+ cores, else 0); the rows are "
                   "the same whatever the number")
    p.add_argument("--out", default="", help="where experiments/ is (default: the repository's)")
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
    root = args.out or runner.ROOT
    try:
        if not args.name:
            raise ConfigError("experiment NAME", "", "all, " + ", ".join(registry.names()), why=f"{args.command} needs one")
        chosen = registry.get(args.name)
        if args.command == "report" and len(chosen) > 1 and args.wall_time is not None:
            raise ConfigError("--wall_time", args.wall_time, "one experiment's NAME with it")
        for exp in chosen:
            workdir = (os.path.join(args.workdir, exp.name) if args.workdir and len(chosen) > 1
                       else args.workdir or None)
            if args.command == "run":
                from tl_research.run import trainer
                trainer.enable_compilation_cache()
                runner.run(exp, registry.EXPERIMENTS, root=root, workdir=workdir, jobs=jobs(args.jobs))
            else:
                runner.report(exp, registry.EXPERIMENTS, root=root, workdir=workdir, wall_time=args.wall_time)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from tl_research.sweeps import sweep_job
    sweep_job.pin_cpu_run()  # a CPU run's numbers, whatever the core count (as launch.py)
    sys.exit(main(sys.argv[1:]))
