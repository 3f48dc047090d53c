"""The soup command: model soups, WiSE-FT curves and the straight path between two runs, built from a sweep's
finished runs (tl_research/analysis/soups.py says what each is and which runs qualify).

    python -m tl_research.soup WORKDIR [--select KEY=VALUE ...] [--no_wise] [--no_path]
        [--bn_stats average|recompute] [--out FOLDER]

--select narrows the ingredients by their configs (e.g. --select strategy.name=fine_tune --select frozen_depth=0;
values as the config holds them). --bn_stats recompute estimates the BatchNorm statistics of every model that
mixes runs again from the training split (default: averaged with the weights). Writes WORKDIR/soups/soups.csv (every model evaluated: each run, the uniform
and greedy soups, the WiSE-FT curve, the path) and WORKDIR/soups/soups.md (the summary table), and prints the
table. A killed command relaunched redoes only the evaluations it had not stored. Runs that cannot be averaged
(another architecture, label space or initialisation) are refused in one `error:` line, exit code 2.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys

from tl_research.core.errors import ConfigError
from tl_research.core.logs import quiet_logging


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m tl_research.soup", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("workdir", help="a sweep's workdir (its run folders hold config.json, result.json, weights/)")
    ap.add_argument("--select", action="append", default=[], metavar="KEY=VALUE",
                    help="keep the runs whose config has KEY=VALUE (repeatable)")
    ap.add_argument("--no_wise", action="store_true", help="no WiSE-FT curve")
    ap.add_argument("--no_path", action="store_true", help="no loss along the path between the two best runs")
    ap.add_argument("--bn_stats", default="average", help="BatchNorm statistics of a mixture of runs: average "
                    "(with the weights) or recompute (from the training split)")
    ap.add_argument("--out", default="soups", help="the folder of the workdir the results go to")
    return ap.parse_args(argv)


def main(argv: list[str]) -> int:
    quiet_logging()
    args = parse(argv)
    try:
        workdir = pathlib.Path(args.workdir)
        if not workdir.is_dir():
            raise ConfigError("WORKDIR", str(workdir), "a sweep's workdir", why="no such directory")
        for item in args.select:
            if "=" not in item:
                raise ConfigError("--select", item, "KEY=VALUE, e.g. strategy.name=fine_tune")
        from tl_research.analysis import soups
        out = pathlib.PurePath(args.out)
        if not args.out or out.is_absolute() or ".." in out.parts:
            raise ConfigError("--out", args.out, "a folder name inside WORKDIR, e.g. soups/seed0")
        soups.make(workdir, args.select, wise=not args.no_wise, path=not args.no_path, bn_stats=args.bn_stats,
                   out=args.out)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main(sys.argv[1:]))
