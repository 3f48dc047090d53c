"""Runs a config (one run) or its whole sweep into a workdir.

    python launch.py                                       # the quickstart sweep (configs/quickstart.py)
    python launch.py --config configs/X.py[:arg] [--config.key=value ...] [--workdir DIR]
    python launch.py --config configs/X.py --lr_range_test [...]   # LR range test of the config's base run

Flags: --retry_failed (rerun failed runs), --no_progress (no progress bars), -h/--help; several processes
(multi-host) join with --coordinator_address=HOST:PORT --num_processes=N --process_id=I, or on their own
under SLURM (srun) and on TPU pods (tl_research/distributed.py); process 0 writes the outputs. The command line is
absl flags with the config read by ml_collections' config_flags (tl_research/command_line.py): an override is
typed by its key's type (--config.train.steps=100, --config.data.classes="(0, 1)"), and an override of a key
the config's sweep varies replaces the sweep's values for that key. Bad input is one `error:` line, exit code 2.

Outputs land in DIR (default runs/<config name>): results.csv, table.md, table.tex, plot.png, one folder per
run (config.json, metrics.jsonl, checkpoints/, weights/) and wandb/. Relaunching the same command resumes:
finished runs are skipped, an interrupted run continues from its last checkpoint.
"""
from __future__ import annotations

import os
import sys

from absl import flags

USAGE = __doc__
FLAG_LIST = ("--config PATH[:ARG], --config.KEY=VALUE, --workdir DIR, --retry_failed, --no_progress, "
             "--lr_range_test, --coordinator_address, --num_processes, --process_id, -h/--help")


def define_flags(fv) -> None:
    """launch.py's own flags; --config and --workdir come from tl_research.command_line."""
    flags.DEFINE_bool("retry_failed", False, "rerun the runs that failed", flag_values=fv)
    flags.DEFINE_bool("no_progress", False, "no progress bars", flag_values=fv)
    flags.DEFINE_bool("lr_range_test", False, "an LR range test of the config's base run", flag_values=fv)
    define_distributed_flags(fv)


def define_distributed_flags(fv) -> None:
    flags.DEFINE_string("coordinator_address", "", "multi-host: HOST:PORT of process 0", flag_values=fv)
    flags.DEFINE_integer("num_processes", 0, "multi-host: how many processes", flag_values=fv)
    flags.DEFINE_integer("process_id", -1, "multi-host: this process's index, 0..N-1", flag_values=fv)


def start_processes(argv: list[str]) -> None:
    """jax.distributed.initialize from the multi-host flags (or the environment), before the command line
    is read in full: reading a config may already touch JAX, and the distributed start must come first."""
    from tl_research import distributed
    fv = flags.FlagValues()
    define_distributed_flags(fv)
    try:
        fv(["prog", *argv], known_only=True)
    except flags.Error:
        return  # command_line.parse reports the bad flag
    distributed.initialize(fv.coordinator_address, fv.num_processes, fv.process_id)


def main(argv: list[str]) -> int:
    from tl_research import command_line, results, sweep, trainer
    command_line.quiet_logging()
    from tl_research.errors import ConfigError
    try:
        start_processes(argv)
        cli = command_line.parse(argv, define_flags, usage=USAGE, default_config="configs/quickstart.py",
                                 flag_list=FLAG_LIST)
        if cli is None:  # --help
            return 0
        base, points, workdir = cli.config, cli.points, cli.workdir
        from tl_research import distributed
        quiet = {} if distributed.is_writer() else {"echo": lambda *args, **kw: None}  # multi-host: one voice
        echo = quiet.get("echo", print)
        trainer.enable_compilation_cache()
        progress = not cli.flags.no_progress and sys.stderr.isatty()
        if cli.flags.lr_range_test:
            sweep.range_test(base, workdir, progress=progress)
            return 0
        echo(f"{base.name}: {len(points)} run(s) into {workdir}")
        rows = sweep.run_sweep(base, points, workdir, progress=progress and distributed.is_writer(),
                               retry_failed=cli.flags.retry_failed, **quiet)
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


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main(sys.argv[1:]))
