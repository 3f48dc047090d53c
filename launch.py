"""Runs a config (one run) or its whole sweep into a workdir.

    python launch.py                                       # the quickstart sweep (configs/quickstart.py)
    python launch.py --config configs/X.py[:arg] [--config.key=value ...] [--workdir DIR]
    python launch.py --config configs/X.py --lr_range_test [...]   # LR range test of the config's base run

Flags: --retry_failed (rerun failed runs), --no_progress (no progress bars), -h/--help. The command line is
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
             "--lr_range_test, -h/--help")


def define_flags(fv) -> None:
    """launch.py's own flags; --config and --workdir come from tl_research.command_line."""
    flags.DEFINE_bool("retry_failed", False, "rerun the runs that failed", flag_values=fv)
    flags.DEFINE_bool("no_progress", False, "no progress bars", flag_values=fv)
    flags.DEFINE_bool("lr_range_test", False, "an LR range test of the config's base run", flag_values=fv)


def main(argv: list[str]) -> int:
    from tl_research import command_line, results, sweep, trainer
    command_line.quiet_logging()
    from tl_research.errors import ConfigError
    try:
        cli = command_line.parse(argv, define_flags, usage=USAGE, default_config="configs/quickstart.py",
                                 flag_list=FLAG_LIST)
        if cli is None:  # --help
            return 0
        base, points, workdir = cli.config, cli.points, cli.workdir
        trainer.enable_compilation_cache()
        progress = not cli.flags.no_progress and sys.stderr.isatty()
        if cli.flags.lr_range_test:
            sweep.range_test(base, workdir, progress=progress)
            return 0
        print(f"{base.name}: {len(points)} run(s) into {workdir}")
        rows = sweep.run_sweep(base, points, workdir, progress=progress, retry_failed=cli.flags.retry_failed)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; relaunch the same command to resume (finished runs are kept, the run in progress "
              "continues from its last checkpoint)", file=sys.stderr)
        return 130
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
