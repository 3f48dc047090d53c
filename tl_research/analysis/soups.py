"""Weight-space ensembles of a sweep's runs: model soups, WiSE-FT and the straight path between two runs.

    uniform soup    the average of every ingredient's weights (Wortsman et al., ICML 2022, arXiv 2203.05482)
    greedy soup     ingredients sorted by validation accuracy, best first; each is kept only if the soup's
                    validation accuracy does not fall with it (the paper's Recipe 1, on the held-out split)
    WiSE-FT         (1 - alpha) * theta_0 + alpha * theta_ft for alpha in 0, 0.1, .., 1 (Wortsman et al., CVPR
                    2022, arXiv 2109.01903). A CLIP model's theta_0 is its zero-shot model; here it is the
                    linear probe run from the same source when the workdir has one (its head trained on the
                    frozen source features), else the source backbone carrying the fine-tuned run's head
    path            the loss along (1 - alpha) * theta_a + alpha * theta_b between the two best runs (Frankle
                    et al. 2020's linear-connectivity test): its barrier, the largest rise above the straight
                    line between the endpoint losses, near 0 when both lie in one basin (the condition under
                    which the paper's soups work)

Ingredients are a workdir's finished runs (result.json status done, weights/ exported) that trained some unit
(runs that trained only the head are the WiSE-FT endpoints), narrowed by `select` ("key=value" on the runs'
configs). They must share an architecture (the same parameter names and shapes), a label space (task, data
name and classes) and an initialisation (the same source model, weights file or scratch seed): anything else
is refused in one line naming what differs. BatchNorm running statistics are averaged with the parameters
(bn_stats="average"), or, for every model that mixes two or more runs, estimated again from the training split
(bn_stats="recompute": each BatchNorm's running mean and variance set to the mean over the split's full batches
of the batch statistics of the mixed model in training mode, as SWA's bn_update does, Izmailov et al. 2018; the
statistics of a mixture are not the mixture of the statistics). A single run's weights are evaluated as trained.

Every model is evaluated by the runs' own evaluators (val, test, and config.evals' extra test sets: the
out-of-distribution ones), built from the first ingredient's config with the feature cache off, once and only
when some evaluation is not stored yet. Each evaluation is stored in WORKDIR/soups/evals.json (`out`: another
folder of the workdir) as it ends, so a command killed part way redoes only what was left, and a command whose
evaluations are all stored reads them back without building a model; soups.csv (one row per model) and soups.md
(the summary table) are written at the end.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pathlib
import tempfile
from typing import Callable

import ml_collections  # noqa: F401 - Ingredient.config
import numpy as np

from tl_research.checkpoints import weights as weights_lib
from tl_research.core import durable
from tl_research.core.errors import ConfigError

FOLDER = "soups"
ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))
LABEL_KEYS = ("task", "data.name", "data.classes")  # what must agree for two heads to mean the same classes


@dataclasses.dataclass
class Ingredient:
    run_id: str
    run_dir: pathlib.Path
    config: ml_collections.ConfigDict
    val_metric: float  # the run's recorded selection-split metric (val_accuracy for classification)
    trained_units: bool  # False: only the head trained (a linear probe)
    _weights: dict | None = dataclasses.field(default=None, repr=False, compare=False)

    def weights(self) -> dict:
        """The run's exported weights, read once (the compatibility check, the soups and WiSE-FT share them)."""
        if self._weights is None:
            self._weights = weights_lib.load_weights(self.run_dir / "weights")[0]
        return self._weights


def _get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = cfg.get(part) if hasattr(cfg, "get") else None
    return cfg


def _matches(cfg, select) -> bool:
    for item in select:
        key, _, want = item.partition("=")
        got = _get(cfg, key.strip())
        if str(got) != want.strip() and json.dumps(got) != want.strip():
            return False
    return True


def runs(workdir, select=()) -> list[Ingredient]:
    """The workdir's finished runs with exported weights that match every `select` item ("key=value")."""
    workdir = pathlib.Path(workdir)
    out = []
    for d in sorted(p for p in workdir.iterdir() if p.is_dir()):
        result = durable.read_json(d / "result.json")
        if not isinstance(result, dict) or result.get("status") != "done" or not (d / "config.json").is_file():
            continue
        if not weights_lib.is_weights_dir(d / "weights"):
            continue
        from tl_research.config import from_record
        cfg = from_record(json.loads((d / "config.json").read_text()))
        if not _matches(cfg, select):
            continue
        m = result["metrics"]
        metric = next((v for k, v in m.items() if k.startswith("val_") and k != "val_loss"), float("nan"))
        out.append(Ingredient(d.name, d, cfg, float(metric), int(m["frozen_depth_resolved"]) < int(m["num_units"])))
    return out


def init_identity(cfg, workdir) -> str:
    """What a run's weights started from: the source model's config hash, a weights path, or a scratch seed."""
    from tl_research.config import config_hash
    if cfg.init == "source":
        return f"source {config_hash(cfg.source)}"
    if cfg.init == "scratch":
        return f"scratch, seed {cfg.seed}"
    return f"init {cfg.init}"


def check_compatible(ingredients: list[Ingredient], workdir, select=()) -> None:
    """One-line ConfigError where the runs cannot be averaged."""
    chosen = " ".join(select) or "(none)"
    if not ingredients:
        raise ConfigError("--select", chosen, "a selection matching finished runs of the workdir that trained some "
                          "unit and exported weights/", why="no run matches")
    first = ingredients[0]
    for ing in ingredients[1:]:
        for what, value in (("model", lambda c: c.model.to_dict()),
                            ("label space (task, data.name, data.classes)",
                             lambda c: [str(_get(c, k)) for k in LABEL_KEYS]),
                            ("initialisation", lambda c: init_identity(c, workdir))):
            if value(ing.config) != value(first.config):
                raise ConfigError("--select", chosen, f"a selection of runs sharing their {what.split(' (')[0]}",
                                  why=f"{ing.run_id} differs in its {what} ({value(ing.config)} vs "
                                      f"{value(first.config)}); narrow the runs with --select KEY=VALUE")
    shapes = {k: v.shape for k, v in first.weights()["params"].items()}
    for ing in ingredients[1:]:
        other = {k: v.shape for k, v in ing.weights()["params"].items()}
        if other != shapes:
            odd = sorted(set(other) ^ set(shapes)) or [k for k in shapes if shapes[k] != other[k]]
            raise ConfigError("--select", chosen, "a selection of runs with the same parameters",
                              why=f"{ing.run_id} and {first.run_id} differ in {odd[0]} (e.g. a strategy that adds "
                                  f"parameters)")


def average(weights: list[dict], coefficients=None) -> dict:
    """sum_i c_i * w_i over every collection and array (c: uniform by default); float32 out."""
    c = np.full(len(weights), 1.0 / len(weights)) if coefficients is None else np.asarray(coefficients, np.float64)
    return {coll: {k: sum(ci * np.asarray(w[coll][k], np.float64) for ci, w in zip(c, weights)).astype(np.float32)
                   for k in weights[0][coll]} for coll in weights[0]}


def interpolate(a: dict, b: dict, alpha: float) -> dict:
    return average([a, b], [1.0 - alpha, alpha])


def greedy(order: list, evaluate: Callable[[list], float]) -> list:
    """The paper's greedy soup: `order` best first; each ingredient stays if evaluate(soup + it) >= the soup's."""
    chosen, best = [order[0]], evaluate([order[0]])
    for ing in order[1:]:
        score = evaluate(chosen + [ing])
        if score >= best:
            chosen, best = chosen + [ing], score
    return chosen


def barrier(losses: list[float], alphas=ALPHAS) -> float:
    """max over alpha of loss(alpha) - ((1 - alpha) loss(0) + alpha loss(1))."""
    return float(max(l - ((1 - a) * losses[0] + a * losses[-1]) for a, l in zip(alphas, losses)))


BN_STATS = ("average", "recompute")


class Evaluations:
    """The runs' evaluators (built on the first evaluation not stored yet), and each model's metrics, stored as
    they are measured. bn_stats="recompute": a model that mixes runs gets its BatchNorm statistics again from
    the training split before it is evaluated (recompute_stats)."""

    def __init__(self, config, out_dir: pathlib.Path, workdir: pathlib.Path, bn_stats: str = "average"):
        from tl_research.config import config_hash
        self.config, self.bn_stats, self._t, self.tmp = config, bn_stats, None, None
        self.init_path = (str(pathlib.Path(workdir) / "sources" / config_hash(config.source) / "weights")
                          if config.init == "source" else None)
        self.path = out_dir / "evals.json"
        self.done = durable.read_json(self.path) or {}
        self._stats_step = None

    @property
    def t(self):
        """The run's training setup (its data, evaluators and compiled eval step), built once when needed."""
        if self._t is None:
            from tl_research.config import copy_config
            from tl_research.run import loop, steps
            cfg = copy_config(self.config)
            cfg.train.feature_cache = False  # every model from the images: a prefix differs between soups
            self.tmp = tempfile.TemporaryDirectory(prefix="soup-")
            self._t = loop.Training(cfg, pathlib.Path(self.tmp.name) / "eval", self.init_path, steps.StepCache())
        return self._t

    def source_weights(self) -> dict | None:
        return weights_lib.load_weights(self.init_path)[0] if self.init_path else None

    def __call__(self, key: str, weights: Callable[[], dict], mixed: bool = False) -> dict:
        """The metrics of the model `weights()` builds (called only when `key` is not stored yet); `mixed`: a
        mixture of runs (its BatchNorm statistics re-estimated under bn_stats="recompute", under its own key)."""
        recompute = mixed and self.bn_stats == "recompute"
        key = f"{key} bn-recompute" if recompute else key
        if key in self.done:
            return self.done[key]
        w = weights()
        if recompute and w.get("batch_stats"):
            w = self.recompute_stats(w)
        placed = self.t.prog.place_weights(w)
        p, s = placed["params"], placed["batch_stats"]
        out = {}
        for split, ev in (("val", self.t.val), ("test", self.t.test)):
            out.update({f"{split}_{k}": float(v) for k, v in ev.counts(p, s).values().items()})
        for name, ev in self.t.extras.items():
            out.update({f"{name}_{k}": float(v) for k, v in ev.run(p, s) if np.isscalar(v)})
        self.done[key] = out
        durable.write_json(self.path, self.done)
        return out

    def recompute_stats(self, weights: dict) -> dict:
        """`weights` with every depth unit's BatchNorm running mean and variance replaced by the mean, over the
        training split's full batches (data.batch_size, fixed order, no augmentation), of the batch statistics
        the model computes in training mode (SWA's bn_update, a cumulative average)."""
        import jax
        from tl_research.core import sharding
        from tl_research.data import pipeline
        from tl_research.run import steps
        t = self.t
        step = self._stats_step = self._stats_step or _stats_step(t.prog.base)
        placed = t.prog.place_weights(weights)
        total, n = None, 0
        for batch in pipeline.eval_batches(t.s.data, t.s.data.train, int(self.config.data.batch_size),
                                           self.config.data.threads):
            if not np.all(batch["mask"]):  # the padded last batch: its padding would enter the statistics
                continue
            images = steps.to_device({"image": batch["image"]}, t.data_sharding)["image"]
            out = step(placed["params"], placed["batch_stats"], images)
            total = out if total is None else jax.tree.map(lambda a, b: a + b, total, out)
            n += 1
        if not n:
            raise ConfigError("--bn_stats", "recompute", "average", why="the training split holds no full batch "
                              f"of data.batch_size {self.config.data.batch_size}")
        stats = {k: (np.asarray(v, np.float64) / n).astype(np.float32) for k, v in sharding.to_host(total).items()}
        return {**weights, "batch_stats": {k: stats.get(k, v) for k, v in weights["batch_stats"].items()}}

    def close(self) -> None:
        if self._t is not None:
            self._t.manager.close()
            self.tmp.cleanup()


def _stats_step(spec):
    """jitted (params, stats, images) -> every BatchNorm statistic after one training-mode pass of the depth
    units over `images` with momentum 0 (so each running statistic becomes the batch's); dropout off."""
    import jax
    from flax import nnx
    model_of, preprocess = spec.model_of(), spec.preprocess()

    def step(params, stats, images):
        model = model_of(params, stats)
        model.set_attributes(use_running_average=False, deterministic=True, momentum=0.0, raise_if_not_found=False)
        x = preprocess(images)
        for unit in model.units:
            x = unit(x)
        return {".".join(str(q) for q in path): v.get_value()
                for path, v in nnx.to_flat_state(nnx.state(model, nnx.BatchStat))}
    return jax.jit(step)


def digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------- the command's work

def make(workdir, select=(), *, wise: bool = True, path: bool = True, bn_stats: str = "average",
         out: str = FOLDER, echo=print) -> list[dict]:
    """Every model of the module docstring evaluated; WORKDIR/`out`/soups.csv and soups.md written; the rows
    returned."""
    workdir = pathlib.Path(workdir).absolute()
    if bn_stats not in BN_STATS:
        raise ConfigError("--bn_stats", bn_stats, ", ".join(BN_STATS))
    found = runs(workdir, select)
    ingredients = sorted((r for r in found if r.trained_units), key=lambda r: (-r.val_metric, r.run_id))
    check_compatible(ingredients, workdir, select)
    probes = [r for r in found if not r.trained_units and not _differs(r, ingredients[0], workdir)]
    out_dir = workdir / out
    out_dir.mkdir(parents=True, exist_ok=True)
    ev = Evaluations(ingredients[0].config, out_dir, workdir, bn_stats)
    from tl_research import tasks
    metric = f"val_{tasks.of(ingredients[0].config).metric}"
    try:
        weights = {r.run_id: r.weights for r in ingredients}  # read when an evaluation needs them (once each)
        rows = [_row(f"run {r.run_id}", ev(digest("run", r.run_id), weights[r.run_id]), [r]) for r in ingredients]
        echo(f"{len(ingredients)} ingredient(s) sharing {init_identity(ingredients[0].config, workdir)}; best "
             f"single run {ingredients[0].run_id} ({metric} {rows[0][metric]:.4f})")
        soup = lambda members: ev(digest("soup", sorted(m.run_id for m in members)),  # noqa: E731
                                  lambda: average([weights[m.run_id]() for m in members]), mixed=len(members) > 1)
        rows.append(_row("uniform soup", soup(ingredients), ingredients))
        chosen = greedy(ingredients, lambda members: soup(members)[metric])
        rows.append(_row("greedy soup", soup(chosen), chosen))
        if wise:
            rows += _wise(ev, ingredients[0], probes, echo)
        if path and len(ingredients) > 1:
            rows += _path(ev, ingredients[:2])
    finally:
        ev.close()
    _write(out_dir, rows, metric, echo, stem=table_stem(bn_stats))
    return rows


def table_stem(bn_stats: str = "average") -> str:
    """The name of the CSV and Markdown tables `make` writes: soups (BatchNorm statistics averaged), or
    soups_bn_recompute; both modes share the folder's evals.json (a single run's evaluation is the same)."""
    return "soups" if bn_stats == "average" else f"soups_bn_{bn_stats}"


def _differs(run: Ingredient, ref: Ingredient, workdir) -> bool:
    try:
        check_compatible([ref, run], workdir)
        return False
    except ConfigError:
        return True


def _row(model: str, metrics: dict, members: list, alpha: float | None = None) -> dict:
    return {"model": model, "alpha": "" if alpha is None else alpha, "members": len(members),
            "run_ids": ";".join(m.run_id for m in members), **metrics}


def _wise(ev: Evaluations, ft: Ingredient, probes: list, echo) -> list[dict]:
    """The WiSE-FT curve of the best run: from the linear probe run (best on val) if there is one, else from
    the source backbone carrying the fine-tuned head."""
    if probes:
        probe = max(probes, key=lambda r: (r.val_metric, r.run_id))
        start, name, members = probe.weights, f"linear probe {probe.run_id}", [probe, ft]
    else:
        if ev.init_path is None:
            echo("WiSE-FT skipped: no linear probe run and no source model (the runs start from scratch)")
            return []

        @functools.cache
        def start():
            source, ft_weights = ev.source_weights(), ft.weights()
            return {coll: {k: (ft_weights[coll][k] if k.startswith("head.") or k not in source.get(coll, {})
                               else source[coll][k]) for k in ft_weights[coll]} for coll in ft_weights}
        name, members = "source backbone + fine-tuned head", [ft]
    echo(f"WiSE-FT: from {name} to {ft.run_id}")
    return [_row(f"wise_ft from {name}", ev(digest("wise", name, ft.run_id, a),
                                            lambda a=a: interpolate(start(), ft.weights(), a), mixed=0 < a < 1),
                 members, a) for a in ALPHAS]


def _path(ev: Evaluations, pair: list) -> list[dict]:
    a, b = pair
    return [_row(f"path {a.run_id} -> {b.run_id}",
                 ev(digest("path", a.run_id, b.run_id, x), lambda x=x: interpolate(a.weights(), b.weights(), x),
                    mixed=0 < x < 1), pair, x)
            for x in ALPHAS]


def summary(rows: list[dict], metric: str) -> list[dict]:
    """The table's lines: best single run, uniform and greedy soups, WiSE-FT at the alpha best on `metric`
    and at the paper's fixed 0.5; the path's barrier in val loss."""
    singles = [r for r in rows if r["model"].startswith("run ")]
    lines = [dict(singles[0], model=f"best single run ({singles[0]['run_ids']})")]
    lines += [r for r in rows if r["model"] in ("uniform soup", "greedy soup")]
    wise = [r for r in rows if r["model"].startswith("wise_ft")]
    if wise:
        best = max(wise, key=lambda r: (r[metric], -abs(r["alpha"] - 0.5)))
        lines += [dict(best, model=f"WiSE-FT, alpha {best['alpha']} (best on {metric})"),
                  dict(next(r for r in wise if r["alpha"] == 0.5), model="WiSE-FT, alpha 0.5")]
    return lines


def _write(out_dir: pathlib.Path, rows: list[dict], metric: str, echo, stem: str = "soups") -> None:
    import pandas as pd
    pd.DataFrame(rows).to_csv(out_dir / f"{stem}.csv", index=False)
    cols = [c for c in rows[0] if c not in ("model", "alpha", "run_ids") and not c.endswith("_loss")
            and c != "members"]
    lines = summary(rows, metric)
    table = ["| model | members | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    table += [f"| {r['model']} | {r['members']} | " + " | ".join(f"{r[c]:.4f}" for c in cols) + " |" for r in lines]
    path = [r for r in rows if r["model"].startswith("path ")]
    if path:
        b = barrier([r["val_loss"] for r in path])
        table.append(f"\nLoss barrier along the straight path {path[0]['model'][5:]}: {b:+.4f} (val loss; near 0: "
                     f"one basin)")
    durable.write_text(out_dir / f"{stem}.md", "\n".join(table) + "\n")
    echo("\n".join(table))
    echo(f"wrote {out_dir / f'{stem}.csv'} and {out_dir / f'{stem}.md'}")
