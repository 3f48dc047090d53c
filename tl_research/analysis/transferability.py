"""Transferability scores of a sweep's source models on its targets, and how well they rank what the sweep
measured: `report.transferability` (tl_research/sweeps/sweep.py's finish_sweep) and the ranking command
`python -m tl_research.transferability` (tl_research/cli/transferability.py).

A *candidate* is a model a run starts from: `init='source'` (the workdir's source model), a run or weights
directory, or a checkpoint converted on the fly (keras:, torch:, npz:); runs from scratch have none. For each
(candidate, target data) pair, one pass of the candidate over the target's training split (the run's subset,
at most `report.transferability_examples` examples drawn with a fixed seed; 0: all) gives every depth unit's
pooled output and the source classifier's logits (tl_research.run.features.LayerFeatures), and from them:

    logme, hscore, hscore_lw, fewshot   at every depth k = 1..units (the features a frozen prefix of depth k
                                        hands on; k = units: the penultimate features a linear probe reads)
    leep, nce                           the source classifier's softmax / hard labels over its own classes
                                        (the weights must keep their head: a run's exported weights do)
    similarity                          Cui et al.'s exp(-gamma EMD) on the penultimate features, from the
                                        domain-similarity cache (needs the candidate's training record)

`fewshot` is the closed-form ridge probe (tl_research.evals.fewshot) with FEWSHOT_SHOTS examples per class drawn
from the same training examples and scored on the rest of them (mean over FEWSHOT_SEEDS draws): no test image
is read. Scores per pair are cached as JSON in WORKDIR/transferability/ (keyed by the weights, their
architecture, the target data and the example cap), so a relaunch recomputes nothing.

The sweep writes WORKDIR/transferability.csv (one row per pair and depth) and WORKDIR/transferability.md: each
penultimate score against the measured fine-tuned (frozen_depth 0) and linear-probe (frozen_depth all)
`report.metric` across the sweep's (candidate, target) pairs (tl_research.analysis.rank_correlation: Spearman and
weighted Kendall tau, permutation p-values, bootstrap intervals; the units are the pairs, seeds averaged within
a pair), per setting of the other swept keys; and per pair, each per-layer score's best depth against the best
frozen depth the sweep measured (depths 1..units).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import pathlib
from typing import Any

import numpy as np
import pandas as pd

from tl_research import config as config_lib
from tl_research.analysis import domain_similarity as ds
from tl_research.core import distributed, durable
from tl_research.core.errors import ConfigError
from tl_research.evals import fewshot
from tl_research.evals import transferability as scores_lib

SCORES = ("logme", "leep", "nce", "hscore", "hscore_lw", "fewshot", "similarity")
LAYER_SCORES = ("logme", "hscore", "hscore_lw", "fewshot")  # at every depth unit
HEAD_SCORES = ("leep", "nce")  # the source classifier's, once per pair
FEWSHOT_SHOTS, FEWSHOT_SEEDS, FEWSHOT_L2 = 10, 3, 2.0 ** 10
CACHE_DIR, CSV_FILE, TABLE_FILE = "transferability", "transferability.csv", "transferability.md"
CODE_VERSION = 1  # bump with any change to what a cached record holds for the same inputs
_CONVERTERS = ("keras", "torch", "npz")


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A model to score: how tables name it, what checkpoints.initial.init_weights loads, its architecture
    (a config.model block, head included: LEEP keeps the source classifier) and its training record (for
    `similarity`; None for converted checkpoints)."""
    label: str
    init: str
    model: Any
    source: ds.Source | None = None

    def exists(self) -> bool:
        fmt, sep, path = self.init.partition(":")
        if sep and fmt in _CONVERTERS:
            return pathlib.Path(path).exists()
        return (pathlib.Path(self.init) / "meta.json").is_file()

    def identity(self) -> list:
        fmt, sep, path = self.init.partition(":")
        f = pathlib.Path(path if sep and fmt in _CONVERTERS else pathlib.Path(self.init) / "meta.json")
        return [self.init, f.stat().st_mtime_ns if f.exists() else 0, json.loads(self.model.to_json())]


def _digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def candidate_of(cfg, workdir) -> Candidate | None:
    """The model run config `cfg` starts from (None from scratch)."""
    init = cfg.init
    if init == "scratch":
        return None
    if init == "source":
        h = config_lib.config_hash(cfg.source)
        d = pathlib.Path(workdir).absolute() / "sources" / h
        src = ds.Source(d / "weights", cfg.source.model, cfg.source.data, int(cfg.source.seed))
        return Candidate(f"source {h[:8]} ({data_label(cfg.source.data)})", str(d / "weights"), cfg.source.model,
                         src)
    return candidate_from(init, cfg.model, key="init")


def candidate_from(spec: str, model_cfg, key: str = "--weights") -> Candidate:
    """A candidate named by a run directory, a weights directory or keras:/torch:/npz:PATH. A run directory's
    architecture is its config.json's; a weights directory written by `python -m tl_research.convert` takes
    the architecture it records, on `model_cfg`'s other keys; otherwise `model_cfg`."""
    fmt, sep, path = spec.partition(":")
    if sep and fmt in _CONVERTERS:
        if not pathlib.Path(path).exists():
            raise ConfigError(key, spec, "a run or weights directory, keras:PATH, torch:PATH or npz:PATH",
                              why="no such file")
        return Candidate(spec, spec, model_cfg)
    d = pathlib.Path(spec).absolute()
    for run_dir in (d, d.parent):
        if (run_dir / "config.json").is_file() and (run_dir / "weights" / "meta.json").is_file():
            src = ds.source_from_run_dir(run_dir, key=key)
            return Candidate(spec, str(src.weights_dir), src.model, src)
    if not (d / "meta.json").is_file() or not (d / "state").is_dir():
        raise ConfigError(key, spec, "a run directory (config.json and weights/), a weights directory, "
                          "keras:PATH, torch:PATH or npz:PATH", why="no weights there")
    model = config_lib.copy_config(model_cfg)
    converted = (durable.read_json(d / "meta.json") or {}).get("converted_from") or {}
    if converted.get("arch"):
        with model.unlocked():
            model.name = converted["arch"]
            for k in ("fc_units", "image_size", "width_multiplier"):
                if k in converted and k in model:
                    model[k] = converted[k]
    return Candidate(spec, str(d), model)


def data_label(data_cfg) -> str:
    parts = [data_cfg.name] + ([f"classes={tuple(data_cfg.classes)}"] if tuple(data_cfg.classes) else [])
    parts += [f"{k}={data_cfg[k]}" for k in ("per_class", "train_examples") if data_cfg.get(k)]
    if data_cfg.get("imbalance_ratio", 1.0) != 1.0:
        parts.append(f"imbalance_ratio={data_cfg.imbalance_ratio}")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------- scoring

def score_features(per_unit: list, logits, labels, num_classes: int, names) -> dict:
    """{"layers": {score: [value at depth 1..units]}, "head": {leep, nce}} for the requested `names`, from
    the pooled outputs of every depth unit (per_unit[k-1]: depth k), the source classifier's logits (None: no
    head) and the target labels (0..num_classes-1)."""
    labels = np.asarray(labels)
    layers: dict[str, list] = {s: [] for s in LAYER_SCORES if s in names}
    for f in per_unit:
        f = np.asarray(f, np.float64)
        for s in layers:
            if s == "logme":
                layers[s].append(scores_lib.logme(f, labels))
            elif s in ("hscore", "hscore_lw"):
                layers[s].append(scores_lib.hscore(f, labels, shrinkage=s == "hscore_lw"))
            else:
                layers[s].append(fewshot.holdout_probe(f, labels, num_classes, FEWSHOT_SHOTS, FEWSHOT_SEEDS,
                                                       FEWSHOT_L2)[0])
    head = {}
    if logits is not None:
        if "leep" in names:
            head["leep"] = scores_lib.leep(scores_lib.softmax(logits), labels)
        if "nce" in names:
            head["nce"] = scores_lib.nce(np.argmax(logits, axis=1), labels)
    return {"layers": layers, "head": head}


def subsample(split, max_examples: int, seed: int = 0):
    """At most `max_examples` examples of a pipeline.Split (0: all), drawn with `seed`, kept in split order."""
    if not max_examples or len(split) <= max_examples:
        return split
    keep = np.sort(np.random.default_rng(seed).choice(len(split), max_examples, replace=False))
    cut = lambda a: None if a is None else a[keep]
    return dataclasses.replace(split, indices=split.indices[keep], labels=split.labels[keep], images=cut(split.images),
                               extras=None if split.extras is None else {k: v[keep] for k, v in split.extras.items()})


class Scorer:
    """Scores candidates on targets, each (candidate, target data) once: cached as JSON in `cache_dir`; the
    similarity from the domain-similarity cache beside it."""

    def __init__(self, cache_dir, names, max_examples: int, gamma: float = ds.DEFAULT_GAMMA):
        self.cache_dir, self.names = pathlib.Path(cache_dir), tuple(names)
        self.max_examples, self.gamma = int(max_examples), gamma
        self.computed = self.cached = 0
        self._similarity = ds.Measurer(self.cache_dir.parent / ds.CACHE_DIR) if "similarity" in names else None

    def key(self, cand: Candidate, data_cfg, seed: int) -> str:
        return _digest([CODE_VERSION, cand.identity(), ds.data_key(data_cfg, seed), self.max_examples,
                        FEWSHOT_SHOTS, FEWSHOT_SEEDS, FEWSHOT_L2])

    def score(self, cand: Candidate, data_cfg, seed: int) -> dict:
        """The record of one pair: labels, keys, sizes, and the scores (see score_features), NaN for a score
        that does not apply (LEEP without a head; similarity without a training record)."""
        path = self.cache_dir / f"{self.key(cand, data_cfg, seed)}.json"
        need = {s for s in self.names if s != "similarity"}
        rec = durable.read_json(path)  # torn by a crash: computed again
        if isinstance(rec, dict) and need <= set(rec.get("computed", ())):
            self.cached += 1
        else:
            names = need | set(rec.get("computed", ()) if isinstance(rec, dict) else ())
            rec = self._compute(cand, data_cfg, seed, names)
            if distributed.is_writer():
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                durable.write_json(path, rec, default=str)
            self.computed += 1
        rec = {**rec, "candidate": cand.label, "head": dict(rec["head"])}  # named as this caller names it
        if self._similarity is not None and cand.source is not None:
            emd = self._similarity.emd(cand.source, data_cfg, seed)["emd"]
            rec["head"]["similarity"] = ds.similarity_of(emd, self.gamma)
        return rec

    def _compute(self, cand: Candidate, data_cfg, seed: int, names) -> dict:
        from tl_research.checkpoints.initial import init_weights
        from tl_research.data import pipeline
        from tl_research.run import trainer
        from tl_research.run.features import LayerFeatures
        weights, meta = init_weights(cand.init, cand.model)
        meta = meta or trainer.model_meta(cand.model.name)
        data = pipeline.load(data_cfg, meta, seed=seed)
        extractor = LayerFeatures(cand.model, weights, meta, data.image_shape[2])
        split = subsample(data.train, self.max_examples)
        per_unit, logits, labels = extractor.split(data, split, data_cfg.eval_batch_size, data_cfg.threads)
        rec = score_features(per_unit, logits, labels, data.num_classes, names)
        target = ds.data_key(data_cfg, seed)
        return {**rec, "computed": sorted(names), "candidate": cand.label, "candidate_key": _digest(cand.identity()),
                "target": data_label(data_cfg), "target_key": _digest({**target, "subset_seed": None}),
                "subset_seed": target["subset_seed"], "examples": int(len(labels)),
                "num_units": extractor.num_units, "features": [int(f.shape[1]) for f in per_unit],
                "head_missing": extractor.head_missing}


def records_frame(records: list[dict], names) -> pd.DataFrame:
    """transferability.csv: one row per (record, depth 1..units); the head scores and the similarity on the
    penultimate row (depth = units) only."""
    rows = []
    for rec in records:
        units = rec["num_units"]
        for k in range(1, units + 1):
            row = {"candidate": rec["candidate"], "target": rec["target"], "subset_seed": rec["subset_seed"],
                   "depth": k, "units": units, "penultimate": k == units, "examples": rec["examples"],
                   "features": rec["features"][k - 1]}
            for s in names:
                if s in LAYER_SCORES:
                    row[s] = rec["layers"].get(s, [np.nan] * units)[k - 1]
                else:
                    row[s] = rec["head"].get(s, np.nan) if k == units else np.nan
            row["candidate_key"], row["target_key"] = rec["candidate_key"], rec["target_key"]
            row["head_missing"] = rec.get("head_missing", "")
            rows.append(row)
    return pd.DataFrame(rows)


def write_csv(path, frame: pd.DataFrame) -> None:
    buf = io.StringIO()
    frame.to_csv(buf, index=False, float_format="%.6g")
    durable.write_text(path, buf.getvalue())
