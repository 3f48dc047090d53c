"""Runs a config (one run) or its whole sweep into a workdir.

    python launch.py                                       # the quickstart sweep (configs/quickstart.py)
    python launch.py --config configs/X.py[:arg] [--config.key=value ...] [--workdir DIR]
    python launch.py --config configs/X.py --lr_range_test [...]   # LR range test of the config's base run

Flags: --retry_failed (rerun failed runs), --no_progress (no progress bars).

Outputs land in DIR (default runs/<config name>): results.csv, table.md, table.tex, plot.png, one folder per
run (config.json, metrics.jsonl, checkpoints/, weights/) and wandb/. Relaunching the same command resumes:
finished runs are skipped, an interrupted run continues from its last checkpoint.
"""
from __future__ import annotations

import logging
import os
import pathlib
import sys

USAGE = __doc__


def parse_args(argv: list[str]):
    from tl_research.config import parse_value
    from tl_research.errors import ConfigError
    spec, workdir, overrides, flags = "configs/quickstart.py", None, {}, set()
    it = iter(argv)
    for arg in it:
        if arg in ("-h", "--help"):
            print(USAGE)
            sys.exit(0)
        name, eq, value = arg.partition("=")
        if not eq and name in ("--config", "--workdir"):
            value = next(it, None)
            if value is None:
                raise ConfigError(name, None, "a value after the flag")
        if name == "--config":
            spec = value
        elif name == "--workdir":
            workdir = value
        elif name.startswith("--config."):
            if not eq:
                raise ConfigError(name[2:], None, f"{name}=VALUE")
            overrides[name[len("--config."):]] = parse_value(value)
        elif name in ("--retry_failed", "--no_progress", "--lr_range_test"):
            flags.add(name[2:])
        else:
            raise ConfigError("command line", arg, "--config PATH[:ARG], --config.KEY=VALUE, --workdir DIR, "
                                                   "--retry_failed, --no_progress, --lr_range_test")
    return spec, workdir, overrides, flags


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "jax._src.xla_bridge", "orbax", "tensorflow_datasets"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from tl_research import config as config_lib, results, sweep, trainer
    from tl_research.errors import ConfigError
    try:
        spec, workdir, overrides, flags = parse_args(argv)
        base, points = config_lib.load(spec, overrides)
        workdir = pathlib.Path(workdir or pathlib.Path("runs") / base.name)
        trainer.enable_compilation_cache()
        progress = "no_progress" not in flags and sys.stderr.isatty()
        if "lr_range_test" in flags:
            sweep.range_test(base, workdir, progress=progress)
            return 0
        print(f"{base.name}: {len(points)} run(s) into {workdir}")
        rows = sweep.run_sweep(base, points, workdir, progress=progress, retry_failed="retry_failed" in flags)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
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
