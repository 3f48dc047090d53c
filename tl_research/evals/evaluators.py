"""Evaluators: small objects, built once per run, whose `run(params, batch_stats)` yields (name, value) pairs
(big_vision's pattern). Their arithmetic runs on the devices: the compiled steps they are handed reduce each
batch across devices (sums, a confusion matrix), so the host sees reduced numbers only, never per-example
predictions (the few-shot probe's features are the exception: the closed-form probe needs them).

    classification   accuracy, loss, balanced accuracy, macro F1 of one split (the run's val and test, or an
                     extra split: of the run's dataset or of another dataset with the same classes)
    fewshot          the closed-form few-shot linear probe (tl_research.evals.fewshot) on the model's frozen
                     penultimate features: 1, 5, 10, 25 shots per class of the training split, scored on test
    logreg           Kornblith et al.'s fixed-feature probe (tl_research.evals.logreg): L-BFGS logistic
                     regression on the penultimate features of the whole training split, C chosen on val,
                     refit on train + val, scored on test (by default only at the end: every=-1)

`config.evals` names the extra evaluators of a run (see config.base_config); `build` makes them and `check`
validates their settings before any work.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, Iterator

import ml_collections
import numpy as np

from tl_research.evals import fewshot, logreg, metrics

from tl_research.core import sharding
from tl_research.data import pipeline
from tl_research.core.errors import ConfigError

RUN_SPLITS = ("train", "val", "test")  # the run's own splits, as it selected them
# an evaluator's settings and their defaults, per type
DEFAULTS = {
    "classification": dict(every=0, split="test", data=""),
    "fewshot": dict(every=0, **fewshot.default_config().to_dict()),
    "logreg": dict(every=-1, **logreg.default_config().to_dict()),
}
RESERVED = ("val", "test", "train", "final", "best")  # names whose metrics would shadow the run's own keys

Put = Callable[[dict], dict]  # a host batch -> device arrays, sharded over the mesh's data axis


# ---------------------------------------------------------------------------------------------- config

def default_config() -> ml_collections.ConfigDict:
    """The `config.evals` block: none by default."""
    return ml_collections.ConfigDict()


def settings(ev) -> dict[str, Any]:
    """An evaluator's settings with the defaults of its type filled in."""
    ev = ev.to_dict() if isinstance(ev, ml_collections.ConfigDict) else dict(ev)
    return {**DEFAULTS.get(ev.get("type"), {}), **ev}


def check(evals) -> None:
    """Raises ConfigError naming `evals.NAME.KEY` for a bad evaluator setting."""
    for name in evals:
        ev = evals[name]
        if not isinstance(ev, (dict, ml_collections.ConfigDict)):
            raise ConfigError(f"evals.{name}", ev, "a dict(type=..., ...) of evaluator settings")
        if not name.isidentifier() or name in RESERVED:
            raise ConfigError(f"evals.{name}", name, f"an identifier other than {', '.join(RESERVED)}",
                              why="it prefixes the evaluator's metric names")
        s = settings(ev)
        if s.get("type") not in DEFAULTS:
            raise ConfigError(f"evals.{name}.type", s.get("type"), ", ".join(DEFAULTS))
        unknown = sorted(set(s) - set(DEFAULTS[s["type"]]) - {"type"})
        if unknown:
            raise ConfigError(f"evals.{name}.{unknown[0]}", s[unknown[0]],
                              f"keys of a {s['type']} evaluator: type, {', '.join(DEFAULTS[s['type']])}")
        every = s["every"]
        if isinstance(every, bool) or not isinstance(every, int) or every < -1:
            raise ConfigError(f"evals.{name}.every", every, "0 (at every validation eval), k > 0 (every k "
                                                            "steps) or -1 (only at the end)")
        {"fewshot": _check_fewshot, "logreg": _check_logreg}.get(s["type"], _check_classification)(name, s)


def _check_fewshot(name: str, s: dict) -> None:
    shots = s["shots"]
    if (not isinstance(shots, (tuple, list)) or not shots
            or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in shots)):
        raise ConfigError(f"evals.{name}.shots", shots, "a tuple of positive shot counts, e.g. (1, 5, 10, 25)")
    if isinstance(s["seeds"], bool) or not isinstance(s["seeds"], int) or s["seeds"] < 1:
        raise ConfigError(f"evals.{name}.seeds", s["seeds"], "a positive number of draws")
    if isinstance(s["l2_reg"], bool) or not isinstance(s["l2_reg"], (int, float)) or not s["l2_reg"] > 0:
        raise ConfigError(f"evals.{name}.l2_reg", s["l2_reg"], "a number > 0")


def _check_logreg(name: str, s: dict) -> None:
    cs = s["cs"]
    if (not isinstance(cs, (tuple, list)) or not cs
            or any(isinstance(c, bool) or not isinstance(c, (int, float)) or not c > 0 for c in cs)):
        raise ConfigError(f"evals.{name}.cs", cs, "a tuple of values of C > 0, e.g. (0.01, 1.0, 100.0)")
    for key in ("max_iter", "max_examples"):
        v, low = s[key], 1 if key == "max_iter" else 0
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ConfigError(f"evals.{name}.{key}", v, f"an integer >= {low}")


def _check_classification(name: str, s: dict) -> None:
    if not isinstance(s["split"], str) or not s["split"]:
        raise ConfigError(f"evals.{name}.split", s["split"], f"{', '.join(RUN_SPLITS)} (the run's own) or a "
                                                             "TFDS split string, e.g. 'train[:10%]'")
    if not isinstance(s["data"], str):
        raise ConfigError(f"evals.{name}.data", s["data"], "'' (the run's dataset) or another data.name")


# ---------------------------------------------------------------------------------------------- evaluators

@dataclasses.dataclass
class Counts:
    """A split's reduced classification numbers."""

    correct: int
    loss_sum: float
    confusion: np.ndarray  # (C, C), rows = true class

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return self.correct / self.count

    @property
    def loss(self) -> float:
        return self.loss_sum / self.count

    @property
    def metric(self) -> float:
        """The selection metric (tasks.classification: accuracy)."""
        return self.accuracy

    def values(self) -> dict:
        """What every eval logs, as val_NAME / test_NAME."""
        return {"accuracy": self.accuracy, "loss": self.loss}

    def summary(self) -> dict:
        """The test_NAME columns of a run's result."""
        detail = self.detail()
        return {"accuracy": self.accuracy, "loss": self.loss, "balanced_accuracy": detail["balanced_accuracy"],
                "macro_f1": detail["macro_f1"]}

    def detail(self) -> dict:
        """metrics.classification_metrics of the (label, prediction) pairs the confusion matrix counts."""
        c = len(self.confusion)
        labels = np.repeat(np.repeat(np.arange(c), c), self.confusion.ravel())
        preds = np.repeat(np.tile(np.arange(c), c), self.confusion.ravel())
        return metrics.classification_metrics(preds, labels, c)


class Classification:
    """Accuracy, mean loss and the confusion matrix of one split. `eval_step(params, stats, batch)` returns a
    batch's {"correct", "loss", "confusion"}, summed over its real (mask) examples on the devices."""

    def __init__(self, eval_step: Callable, data: pipeline.Dataset, split: pipeline.Split, put: Put, *,
                 batch_size: int, threads: int = 2, every: int = 0):
        self.eval_step, self.data, self.split, self.put = eval_step, data, split, put
        self.batch_size, self.threads, self.every = batch_size, threads, every

    def counts(self, params, stats) -> Counts:
        scalars, confusion = [], None
        for batch in pipeline.eval_batches(self.data, self.split, self.batch_size, self.threads):
            out = self.eval_step(params, stats, self.put(batch))
            scalars.append((out["correct"], out["loss"]))
            # summed on the devices: one (C, C) matrix alive, however many batches (C may be 1000s)
            confusion = out["confusion"] if confusion is None else confusion + out["confusion"]
        # one transfer, after every batch is queued; the sums are replicated, so every process reads its own copy
        scalars, confusion = sharding.to_host((scalars, confusion))
        return Counts(sum(int(c) for c, _ in scalars), sum(float(loss) for _, loss in scalars),
                      np.asarray(confusion, np.int64))

    def run(self, params, stats) -> Iterator[tuple[str, Any]]:
        c = self.counts(params, stats)
        detail = c.detail()
        yield "accuracy", c.accuracy
        yield "loss", c.loss
        yield "balanced_accuracy", detail["balanced_accuracy"]
        yield "macro_f1", detail["macro_f1"]


class FewShot:
    """fewshot.probe on the model's penultimate features (`features(params, stats, batch)`, computed on the
    devices with the batch sharded) of the training split and the test split. Only the training examples
    some draw picks are featurised: the draws are nested, so the draws of the largest shot count cover all."""

    def __init__(self, features: Callable, data: pipeline.Dataset, put: Put, *, batch_size: int,
                 threads: int = 2, every: int = 0, shots=fewshot.SHOTS, seeds: int = 3, l2_reg: float = 2.0 ** 10):
        self.features, self.data, self.put = features, data, put
        self.batch_size, self.threads, self.every = batch_size, threads, every
        self.shots, self.seeds, self.l2_reg = tuple(int(k) for k in shots), int(seeds), float(l2_reg)
        labels, c = data.train.labels, data.num_classes
        self.drawn = np.unique(np.concatenate([fewshot.draw(labels, max(self.shots), s, c) for s in range(seeds)]))
        t = data.train
        self.train_pool = pipeline.Split(t.source, t.indices[self.drawn], t.labels[self.drawn],
                                         None if t.images is None else t.images[self.drawn])

    def _featurise(self, params, stats, split: pipeline.Split) -> np.ndarray:
        out = []
        for k, batch in enumerate(pipeline.eval_batches(self.data, split, self.batch_size, self.threads)):
            f = self.features(params, stats, self.put({"image": batch["image"]}))
            out.append(sharding.to_host(f)[: len(split) - k * self.batch_size])  # padding rows go
        return np.concatenate(out)

    def run(self, params, stats) -> Iterator[tuple[str, Any]]:
        drawn = self._featurise(params, stats, self.train_pool)
        # rows no draw picks stay zero: fewshot.probe draws from the whole split's labels and reads only its picks
        train_x = np.zeros((len(self.data.train), drawn.shape[1]), drawn.dtype)
        train_x[self.drawn] = drawn
        test_x = self._featurise(params, stats, self.data.test)
        yield from fewshot.probe(train_x, self.data.train.labels, test_x, self.data.test.labels,
                                 self.data.num_classes, self.shots, self.seeds, self.l2_reg).items()


class LogReg(FewShot):
    """logreg.probe on the model's penultimate features of the training split (all of it, or a seeded
    stratified draw of max_examples), the validation split (choosing C) and the test split."""

    def __init__(self, features: Callable, data: pipeline.Dataset, put: Put, *, batch_size: int,
                 threads: int = 2, every: int = -1, cs=logreg.C_GRID, max_iter: int = 1000, max_examples: int = 0):
        self.features, self.data, self.put = features, data, put
        self.batch_size, self.threads, self.every = batch_size, threads, every
        self.cs, self.max_iter = tuple(float(c) for c in cs), int(max_iter)
        t = data.train
        keep = np.arange(len(t))
        if max_examples and max_examples < len(t):
            per_class = -(-max_examples // data.num_classes)
            keep = fewshot.draw(t.labels, per_class, 0, data.num_classes)[:max_examples]
        self.train_pool = pipeline.Split(t.source, t.indices[keep], t.labels[keep],
                                         None if t.images is None else t.images[keep])

    def run(self, params, stats) -> Iterator[tuple[str, Any]]:
        d = self.data
        out = logreg.probe(self._featurise(params, stats, self.train_pool), self.train_pool.labels,
                           self._featurise(params, stats, d.val), d.val.labels,
                           self._featurise(params, stats, d.test), d.test.labels, cs=self.cs, max_iter=self.max_iter)
        yield from out.items()


# ---------------------------------------------------------------------------------------------- build

def build(evals, *, data: pipeline.Dataset, data_cfg, eval_step: Callable, features: Callable, put: Put,
          batch_size: int | None = None) -> dict:
    """name -> evaluator for every entry of `config.evals`, in name order (checked by `check` first);
    `batch_size` (default data.eval_batch_size) is the padded one the devices split evenly."""
    check(evals)
    out = {}
    for name in sorted(evals):
        s = settings(evals[name])
        common = dict(put=put, batch_size=batch_size or data_cfg.eval_batch_size, threads=data_cfg.threads,
                      every=s["every"])
        if s["type"] == "fewshot":
            out[name] = FewShot(features, data, shots=s["shots"], seeds=s["seeds"], l2_reg=s["l2_reg"], **common)
        elif s["type"] == "logreg":
            out[name] = LogReg(features, data, cs=s["cs"], max_iter=s["max_iter"], max_examples=s["max_examples"],
                               **common)
        else:
            split_data = extra_split(name, s, data, data_cfg)
            out[name] = Classification(eval_step, split_data, split_data.test, **common)
    return out


def extra_split(name: str, s: dict, data: pipeline.Dataset, data_cfg) -> pipeline.Dataset:
    """The data a classification evaluator reads: the run's own split (train, val, test), or a split of the run's
    dataset or of `data` (another data.name), read with the run's classes and image shape, as the `test` of a
    Dataset."""
    if not s["data"] and s["split"] in RUN_SPLITS:
        return dataclasses.replace(data, test=getattr(data, s["split"]))
    cfg = copy.deepcopy(data_cfg)
    cfg.unlock()
    if s["data"] and s["data"] != data_cfg.name:
        cfg.name, cfg.vtab = s["data"], ""
    # one split, read as the run reads its own; no training subset, and cached (below) once, not three times
    cfg.train_split = cfg.val_split = cfg.test_split = s["split"]
    cfg.train_examples, cfg.per_class, cfg.imbalance_ratio, cfg.balance = 0, 0, 1.0, "none"
    h, w, c = data.image_shape
    cfg.image_size = h if h == w else cfg.image_size  # else the run reads the data's own (non-square) size
    cfg.channels, cfg.interpolation, cfg.crop_pct = c, data.interpolation, data.crop_pct
    cache_mb, cfg.cache_mb = cfg.cache_mb, 0
    other = pipeline.load(cfg)
    if other.num_classes != data.num_classes:
        raise ConfigError(f"evals.{name}.data", s["data"], f"a dataset with the run's {data.num_classes} classes",
                          why=f"it has {other.num_classes}")
    other = dataclasses.replace(other, train=other.test, val=other.test)
    if cache_mb:
        pipeline.cache_in_memory(other, cache_mb)
    return other
