"""Scores a source model or a converted checkpoint on a target dataset with the closed-form few-shot linear
probe (tl_research.evals.fewshot, big_vision's fewshot_lsr) in seconds, before any sweep.

    python -m tl_research.fewshot_command [--config configs/X.py[:arg]] [--config.KEY=VALUE ...]
        [--weights DIR | keras:PATH | torch:PATH | npz:PATH] [--workdir DIR]
        [--shots 1,5,10,25] [--seeds 3] [--l2_reg 1024] [--out FILE]

The target is the config's `data` block after the overrides (default configs/quickstart.py: digits 5-9). The
model is `--weights`: a run directory (e.g. WORKDIR/sources/<hash> or WORKDIR/<run id>) or a weights directory,
or a checkpoint converted on the fly as a run's `init` would be; without it, the config's own `init`
(`source`: the workdir's trained source model, WORKDIR default runs/<config name>). Its penultimate features
(tl_research.run.features) of the target's training and test splits feed the probe: k examples per class drawn
from the training split for every k in --shots, --seeds draws each, ridge strength --l2_reg on whitened
features, accuracy on the whole test split. The architecture is the config's `model`, as in a run.

Prints a table (k-shot accuracy, mean ± std over the seeds) and writes JSON (--out; default next to the
weights directory, or in the workdir for a converted checkpoint). Bad input: one line, exit code 2.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import sys
import time

import numpy as np
from absl import flags

from tl_research.cli import command_line

from tl_research import config as config_lib

from tl_research.core import durable

from tl_research.evals import fewshot
from tl_research.core.errors import ConfigError

DEFAULT_CONFIG = "configs/quickstart.py"
_WEIGHTS = "a run or weights directory (e.g. WORKDIR/sources/<hash>), keras:PATH, torch:PATH or npz:PATH"
_CONVERTERS = ("keras", "torch", "npz")


@dataclasses.dataclass
class Args:
    spec: str  # the --config value, to name in messages
    config: object  # the config after overrides
    weights: str  # what --weights names ("" for the config's init)
    workdir: pathlib.Path
    shots: tuple[int, ...]
    seeds: int
    l2_reg: float
    out: str


USAGE = __doc__
FLAG_LIST = ("--config PATH[:ARG], --config.KEY=VALUE, --weights W, --workdir DIR, --shots K,K,..., --seeds N, "
             "--l2_reg L, --out FILE, -h/--help")


def define_flags(fv: flags.FlagValues) -> None:
    """The command's own flags; --config and --workdir come from tl_research.cli.command_line."""
    flags.DEFINE_string("weights", "", _WEIGHTS + "; default the config's init", flag_values=fv)
    flags.DEFINE_list("shots", [str(k) for k in fewshot.SHOTS], "examples per class", flag_values=fv)
    flags.DEFINE_integer("seeds", 3, "draws per shot count", flag_values=fv)
    flags.DEFINE_float("l2_reg", 2.0 ** 10, "ridge strength on whitened features", flag_values=fv)
    flags.DEFINE_string("out", "", "JSON file to write", flag_values=fv)


def parse_args(argv: list[str]) -> Args | None:
    """argv (without the program name) -> Args (None after --help); ConfigError for anything not allowed."""
    cli = command_line.parse(argv, define_flags, usage=USAGE, default_config=DEFAULT_CONFIG, flag_list=FLAG_LIST)
    if cli is None:
        return None
    fv = cli.flags
    try:
        shots = tuple(int(k) for k in fv.shots)
    except ValueError:
        shots = (0,)
    if not shots or min(shots) < 1:
        raise ConfigError("--shots", ",".join(fv.shots), "comma-separated positive integers, e.g. 1,5,10,25")
    if fv.seeds < 1:
        raise ConfigError("--seeds", fv.seeds, "a positive integer (3)")
    if not fv.l2_reg > 0:
        raise ConfigError("--l2_reg", fv.l2_reg, "a number > 0 (big_vision: 1024)")
    return Args(fv["config"].config_filename, cli.config, fv.weights, cli.workdir.absolute(), shots, fv.seeds,
                fv.l2_reg, fv.out)


def check(args: Args) -> str:
    """Every check before any work; returns the weights to load (an init value without 'source')."""
    run = config_lib.resolve_source_seed(config_lib.copy_config(args.config))  # the source the sweep trained
    if args.weights:
        run.init = args.weights
    try:
        config_lib.validate(run)  # the model, the target data, and a weights path that exists
    except ConfigError as e:
        if e.key == "init" and args.weights:
            raise ConfigError("--weights", args.weights, _WEIGHTS, why="not found") from None
        raise
    if run.init == "scratch":
        raise ConfigError("--weights", None, _WEIGHTS, why="the config's init is 'scratch': no model to score")
    if run.init != "source":
        return run.init
    from tl_research.sweeps import sweep
    from tl_research.checkpoints import weights as weights_lib
    d = sweep.source_dir(args.workdir, run.source)
    if not weights_lib.is_weights_dir(d / "weights"):
        raise ConfigError("init", "source", f"a source model trained into {d}",
                          why=f"not trained yet; `python launch.py --config {args.spec} --workdir "
                              f"{args.workdir}` trains it first")
    return str(d)


def split_features(extractor, data, split, batch_size: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, D), labels (N,)) of every example of `split`, in the split's order."""
    from tl_research.data import pipeline
    xs, ys = [], []
    for batch in pipeline.eval_batches(data, split, batch_size, threads):
        xs.append(extractor(batch["image"])[batch["mask"]])
        ys.append(batch["label"][batch["mask"]])
    return np.concatenate(xs), np.concatenate(ys)


def _default_out(args: Args, init: str) -> pathlib.Path:
    fmt, sep, _ = init.partition(":")
    converted = sep and fmt in _CONVERTERS
    d = pathlib.Path(init).absolute()
    folder = args.workdir if converted else (d if (d / "weights").is_dir() else d.parent)
    digest = config_lib.config_hash(args.config.data)[:8]  # one file per target data config
    return folder / f"fewshot_{re.sub(r'[^A-Za-z0-9_.-]', '_', args.config.data.name)}_{digest}.json"


def score(args: Args, init: str) -> dict:
    """Loads the weights and the target data, extracts features, runs the probe: the JSON record."""
    from tl_research.run import trainer
    from tl_research.data import pipeline
    from tl_research.run.features import FeatureExtractor
    t0 = time.perf_counter()
    cfg = args.config
    weights, meta = trainer.init_weights(init, cfg.model)
    meta = meta or trainer.model_meta(cfg.model.name)  # as a run's setup does
    data = pipeline.load(cfg.data, meta, seed=cfg.seed)
    extractor = FeatureExtractor(cfg.model, weights, meta, data.image_shape[2])
    train_x, train_y = split_features(extractor, data, data.train, cfg.data.eval_batch_size, cfg.data.threads)
    test_x, test_y = split_features(extractor, data, data.test, cfg.data.eval_batch_size, cfg.data.threads)
    t1 = time.perf_counter()
    metrics = fewshot.probe(train_x, train_y, test_x, test_y, data.num_classes, shots=args.shots,
                            seeds=args.seeds, l2_reg=args.l2_reg)
    return {"weights": init, "config": args.spec, "data": cfg.data.to_dict(), "num_classes": data.num_classes,
            "train_images": len(train_y), "test_images": len(test_y), "feature_dim": int(train_x.shape[1]),
            "shots": list(args.shots), "seeds": args.seeds, "l2_reg": args.l2_reg, "metrics": metrics,
            "seconds": {"load_and_features": round(t1 - t0, 2), "probe": round(time.perf_counter() - t1, 2)}}


def table(record: dict) -> str:
    m = record["metrics"]
    lines = [f"few-shot linear probe (closed-form ridge, l2={record['l2_reg']:g}) of {record['weights']} on "
             f"{record['data']['name']} {tuple(record['data']['classes']) or ''}: {record['train_images']} "
             f"training / {record['test_images']} test images, {record['feature_dim']} features",
             f"| shots per class | test accuracy (mean ± std over {record['seeds']} seeds) |", "|---|---|"]
    lines += [f"| {k} | {m[f'{k}shot_accuracy']:.3f} ± {m[f'{k}shot_accuracy_std']:.3f} |" for k in record["shots"]]
    s = record["seconds"]
    lines.append(f"{s['load_and_features']:.1f} s loading and features, {s['probe']:.1f} s probe")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    command_line.quiet_logging()
    try:
        args = parse_args(argv)
        if args is None:  # --help
            return 0
        init = check(args)
        record = score(args, init)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = pathlib.Path(args.out) if args.out else _default_out(args, init)
    out.parent.mkdir(parents=True, exist_ok=True)
    durable.write_json(out, record, default=str)
    print(table(record))
    print(f"json: {out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from tl_research.run import trainer as _trainer
    _trainer.enable_compilation_cache()
    sys.exit(main(sys.argv[1:]))
