"""Ranks checkpoints for a target by their transferability scores, without a sweep or any fine-tuning.

    python -m tl_research.transferability --weights A,B,C [--config configs/X.py[:arg]] [--config.KEY=VALUE ...]
        [--workdir DIR] [--scores logme,leep,nce,hscore,fewshot] [--layers] [--examples N] [--out FILE]

Each of A, B, C is a run directory (e.g. WORKDIR/sources/<hash> or WORKDIR/<run id>: its config.json gives the
architecture and its weights/ keep the source classifier), a weights directory (`python -m tl_research.convert`'s
output: the architecture it records, else the config's `model`) or a checkpoint converted on the fly
(keras:PATH, torch:PATH, npz:PATH, with the config's `model`). The target is the config's `data` block after
the overrides (default configs/quickstart.py: digits 5-9) and its seed: one pass of each model over the
target's training split (at most --examples examples, default report.transferability_examples) and the
scores of tl_research/analysis/transferability.py, at the penultimate layer (--layers: at every depth unit
too). --scores defaults to the config's report.transferability, or else logme, leep, nce, hscore, fewshot;
`similarity` is measured for run directories only (it needs the training record). A checkpoint whose weights
lost their classifier, or whose classifier does not fit the architecture, gets no LEEP or NCE: the command
says so and scores the rest.

Prints the models ranked by the first score, one column per score, and writes CSV (--out, default
WORKDIR/transferability_ranking.csv, WORKDIR default runs/<config name>; one row per model and depth unit). The
scores are cached in WORKDIR/transferability/, shared with a sweep's report.transferability. Bad input: one
`error:` line, exit code 2.
"""
from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import sys

from absl import flags

from tl_research import config as config_lib
from tl_research.analysis import transferability as tr
from tl_research.cli import command_line
from tl_research.core.errors import ConfigError

DEFAULT_CONFIG = "configs/quickstart.py"
DEFAULT_SCORES = ("logme", "leep", "nce", "hscore", "fewshot")
USAGE = __doc__
FLAG_LIST = ("--weights A,B,..., --config PATH[:ARG], --config.KEY=VALUE, --workdir DIR, --scores S,S,..., "
             "--layers, --examples N, --out FILE, -h/--help")


@dataclasses.dataclass
class Args:
    config: object  # after overrides
    candidates: list  # analysis.transferability.Candidate, in --weights order
    scores: tuple[str, ...]
    layers: bool
    examples: int
    workdir: pathlib.Path
    out: pathlib.Path


def define_flags(fv: flags.FlagValues) -> None:
    """The command's own flags; --config and --workdir come from tl_research.cli.command_line."""
    flags.DEFINE_list("weights", [], "the models to rank: run or weights directories, keras:, torch:, npz:PATH",
                      flag_values=fv)
    flags.DEFINE_list("scores", [], f"any of {', '.join(tr.SCORES)}", flag_values=fv)
    flags.DEFINE_bool("layers", False, "also print every depth unit's scores", flag_values=fv)
    flags.DEFINE_integer("examples", None, "at most this many training examples (0: all)", flag_values=fv)
    flags.DEFINE_string("out", "", "CSV file to write", flag_values=fv)


def parse_args(argv: list[str]) -> Args | None:
    """argv (without the program name) -> Args (None after --help); ConfigError for anything not allowed,
    every check before any work."""
    cli = command_line.parse(argv, define_flags, usage=USAGE, default_config=DEFAULT_CONFIG, flag_list=FLAG_LIST)
    if cli is None:
        return None
    fv, cfg = cli.flags, cli.config
    if not fv.weights:
        raise ConfigError("--weights", "", "A,B,...: run directories, weights directories, keras:PATH, "
                                           "torch:PATH or npz:PATH", why="no model to rank")
    scores = tuple(fv.scores) or tuple(cfg.report.transferability) or DEFAULT_SCORES
    if any(s not in tr.SCORES for s in scores) or len(set(scores)) != len(scores):
        raise ConfigError("--scores", ",".join(scores), f"distinct names from {', '.join(tr.SCORES)}")
    examples = cfg.report.transferability_examples if fv.examples is None else fv.examples
    if examples < 0:
        raise ConfigError("--examples", examples, "an integer >= 0 (0: every training example)")
    config_lib.validate(cfg)  # the target data and the model, before any work
    candidates = [tr.candidate_from(w, cfg.model) for w in fv.weights]
    workdir = cli.workdir.absolute()
    out = pathlib.Path(fv.out).absolute() if fv.out else workdir / "transferability_ranking.csv"
    return Args(cfg, candidates, scores, fv.layers, int(examples), workdir, out)


def _cell(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def table(frame, scores, layers: bool) -> list[str]:
    """The Markdown lines: the models ranked by the first score at the penultimate layer (then, with
    `layers`, every depth of each)."""
    top = frame[frame["penultimate"]].sort_values(scores[0], ascending=False, na_position="last")
    lines = [f"| rank | model | {' | '.join(scores)} |", "|---|---|" + "---|" * len(scores)]
    for i, (_, r) in enumerate(top.iterrows(), 1):
        lines.append(f"| {i} | {r['candidate']} | " + " | ".join(_cell(r[s]) for s in scores) + " |")
    if layers:
        per = [s for s in scores if s in tr.LAYER_SCORES]
        lines += ["", f"| model | depth (of units) | features | {' | '.join(per)} |",
                  "|---|---|---|" + "---|" * len(per)]
        for _, r in frame.iterrows():
            lines.append(f"| {r['candidate']} | {r['depth']} ({r['units']}) | {r['features']} | "
                         + " | ".join(_cell(r[s]) for s in per) + " |")
    return lines


def run(args: Args) -> tuple[object, list[str]]:
    """(the scores frame, notes): every candidate scored on the config's target."""
    cfg = args.config
    scorer = tr.Scorer(args.workdir / tr.CACHE_DIR, args.scores, args.examples, cfg.report.similarity_gamma)
    records, notes = [], []
    for cand in args.candidates:
        rec = scorer.score(cand, cfg.data, cfg.seed)
        records.append(rec)
        lost = [s for s in args.scores if s in tr.HEAD_SCORES]
        if lost and rec.get("head_missing"):
            notes.append(f"note: {cand.label}: no {' or '.join(s.upper() for s in lost)}: "
                         f"{rec['head_missing']}")
        if "similarity" in args.scores and cand.source is None:
            notes.append(f"note: {cand.label}: no similarity: a converted checkpoint records no training data")
    notes.append(f"{scorer.computed} scored, {scorer.cached} read from {args.workdir / tr.CACHE_DIR}")
    return tr.records_frame(records, args.scores), notes


def main(argv: list[str]) -> int:
    command_line.quiet_logging()
    try:
        args = parse_args(argv)
        if args is None:  # --help
            return 0
        frame, notes = run(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tr.write_csv(args.out, frame)
    cfg = args.config
    print(f"transferability to {tr.data_label(cfg.data)} (seed {cfg.seed}), {int(frame['examples'].max())} "
          f"training examples; higher is better for every score")
    print("\n".join(table(frame, args.scores, args.layers)))
    print("\n".join(notes))
    print(f"csv: {args.out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from tl_research.run import trainer as _trainer
    _trainer.enable_compilation_cache()
    sys.exit(main(sys.argv[1:]))
