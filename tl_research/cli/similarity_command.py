"""The domain similarity command: Cui et al. 2018's similarity of each target of a config's runs to its source
model's training data (tl_research/analysis/domain_similarity.py), measured before or after a sweep.

    python -m tl_research.similarity_command --config configs/X.py[:arg] [--config.KEY=VALUE ...]
        [--workdir DIR] [--source DIR] [--gamma 0.01] [--out FILE]

Targets are the distinct data configs of the config's runs. The source model is `--source DIR` for every
target (a run directory holding config.json and weights/, e.g. WORKDIR/sources/<hash> or WORKDIR/<run id>), or
else each run's own: `init='source'` (trained into WORKDIR/sources/ first if it is not there yet, as
launch.py would) or `init=` a run directory. Runs from scratch, and runs from converted checkpoints (which
record no training data), have nothing to compare with and are refused.

--workdir defaults to runs/<config name>; the EMDs are read from and cached in WORKDIR/similarity/ (the cache a
sweep with report.similarity shares), so gamma (default 0.01, the paper's) costs nothing to change. Prints a
table, most similar first, and writes JSON (--out, default WORKDIR/similarity.json). The command line is
tl_research/cli/command_line.py's: bad input is one `error:` line and exit code 2.

This module sits above both the library it uses and the sweep it drives (sweep -> domain_similarity for the
results column; the command -> both), so neither imports the other back.
"""
from __future__ import annotations

import json
import os
import pathlib
import sys

from absl import flags

from tl_research.cli import command_line

from tl_research.core import durable

from tl_research.sweeps import sweep

from tl_research.run import trainer
from tl_research import config as config_lib
from tl_research.analysis import domain_similarity as ds
from tl_research.checkpoints import weights as weights_lib
from tl_research.core.errors import ConfigError

USAGE = __doc__
FLAG_LIST = ("--config PATH[:ARG], --config.KEY=VALUE, --workdir DIR, --source DIR, --gamma G, --out FILE, "
             "-h/--help")


def define_flags(fv: flags.FlagValues) -> None:
    """The command's own flags; --config and --workdir come from tl_research.cli.command_line."""
    flags.DEFINE_string("source", None, "one source model for every target: " + ds.RUN_DIR, flag_values=fv)
    flags.DEFINE_float("gamma", ds.DEFAULT_GAMMA, "sim = exp(-gamma * EMD) (Cui et al.: 0.01)", flag_values=fv)
    flags.DEFINE_string("out", None, "the JSON file (default WORKDIR/similarity.json)", flag_values=fv)


def _pairs(runs, workdir: pathlib.Path, fixed: ds.Source | None) -> list[dict]:
    """The distinct (source model, target data) pairs of the runs, each with the run ids it stands for."""
    pairs: dict[tuple, dict] = {}
    for rid, _, cfg in runs:
        source = fixed or ds.source_of(cfg, workdir)
        if source is None:
            continue
        key = (str(source.weights_dir), json.dumps(ds.data_key(cfg.data, cfg.seed), sort_keys=True, default=str))
        pairs.setdefault(key, {"source": source, "cfg": cfg, "run_ids": []})["run_ids"].append(rid)
    if not pairs:
        raise ConfigError("--source", None, ds.RUN_DIR, why="every run of the config starts from scratch")
    return list(pairs.values())


def _measure(pairs, workdir: pathlib.Path, gamma: float, fixed) -> tuple[list[dict], ds.Measurer]:
    """One row per pair, most similar first; an init='source' model not trained yet is trained first."""
    trainer.enable_compilation_cache()
    measurer = ds.Measurer(workdir / ds.CACHE_DIR)
    rows = []
    for pair in pairs:
        source, cfg = pair["source"], pair["cfg"]
        if not weights_lib.is_weights_dir(source.weights_dir) and cfg.init == "source" and fixed is None:
            print(f"training source model {source.weights_dir.parent.name} into {workdir / 'sources'}")
            sweep.train_source(config_lib.copy_config(cfg.source), workdir, trainer.StepCache(),
                               progress=sys.stderr.isatty())
        result = measurer.emd(source, cfg.data, cfg.seed)
        rows.append({**result, "similarity": ds.similarity_of(result["emd"], gamma), "gamma": gamma,
                     "run_ids": pair["run_ids"]})
    rows.sort(key=lambda r: -r["similarity"])
    return rows, measurer


def _print_table(rows, measurer: ds.Measurer, workdir: pathlib.Path, gamma: float, out: pathlib.Path) -> None:
    print(f"domain similarity exp(-{gamma} * EMD), source model features (Cui et al. 2018); "
          f"{measurer.computed} measured, {measurer.cached} from {workdir / ds.CACHE_DIR}")
    print("| similarity | EMD | target | classes | subset seed | images | source |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        t = r["target"]
        print(f"| {r['similarity']:.4f} | {r['emd']:.3f} | {t['name']} | {tuple(t['classes']) or 'all'} | "
              f"{'' if t['subset_seed'] is None else t['subset_seed']} | {t['images']} | "
              f"{r['source']['data']} {tuple(r['source']['classes']) or ''} |")
    print(f"json: {out}")


def main(argv: list[str]) -> int:
    command_line.quiet_logging()
    try:
        cli = command_line.parse(argv, define_flags, usage=USAGE, default_config=None, flag_list=FLAG_LIST)
        if cli is None:  # --help
            return 0
        gamma = cli.flags.gamma
        if not gamma > 0:
            raise ConfigError("--gamma", gamma, "a number > 0 (Cui et al.: 0.01)")
        workdir = cli.workdir.absolute()
        runs = sweep.run_configs(cli.config, cli.points, workdir)
        fixed = ds.source_from_run_dir(cli.flags.source) if cli.flags.source else None
        rows, measurer = _measure(_pairs(runs, workdir, fixed), workdir, gamma, fixed)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = pathlib.Path(cli.flags.out or workdir / "similarity.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    durable.write_json(out, rows, default=str)
    _print_table(rows, measurer, workdir, gamma, out)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main(sys.argv[1:]))
