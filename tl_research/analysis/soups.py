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
is refused in one line naming what differs. BatchNorm running statistics are averaged with the parameters.

Every model is evaluated by the runs' own evaluators (val, test, and config.evals' extra test sets: the
out-of-distribution ones), built once from the first ingredient's config with the feature cache off. Each
evaluation is stored in WORKDIR/soups/evals.json as it ends, so a command killed part way redoes only what was
left; soups.csv (one row per model) and soups.md (the summary table) are written at the end.
"""
from __future__ import annotations

import dataclasses
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


class Evaluations:
    """The runs' evaluators (built once), and each model's metrics, stored as they are measured."""

    def __init__(self, config, out_dir: pathlib.Path):
        from tl_research.config import copy_config
        from tl_research.run import loop, steps
        cfg = copy_config(config)
        cfg.train.feature_cache = False  # every model from the images: a prefix differs between soups
        self.tmp = tempfile.TemporaryDirectory(prefix="soup-")
        init_path = None
        if cfg.init == "source":
            from tl_research.config import config_hash
            init_path = str(out_dir.parent / "sources" / config_hash(cfg.source) / "weights")
        self.init_path = init_path
        self.t = loop.Training(cfg, pathlib.Path(self.tmp.name) / "eval", init_path, steps.StepCache())
        self.path = out_dir / "evals.json"
        self.done = durable.read_json(self.path) or {}

    def source_weights(self) -> dict | None:
        return weights_lib.load_weights(self.init_path)[0] if self.init_path else None

    def __call__(self, key: str, weights: dict) -> dict:
        if key in self.done:
            return self.done[key]
        placed = self.t.prog.place_weights(weights)
        p, s = placed["params"], placed["batch_stats"]
        out = {}
        for split, ev in (("val", self.t.val), ("test", self.t.test)):
            out.update({f"{split}_{k}": float(v) for k, v in ev.counts(p, s).values().items()})
        for name, ev in self.t.extras.items():
            out.update({f"{name}_{k}": float(v) for k, v in ev.run(p, s) if np.isscalar(v)})
        self.done[key] = out
        durable.write_json(self.path, self.done)
        return out

    def close(self) -> None:
        self.t.manager.close()
        self.tmp.cleanup()


def digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------- the command's work

def make(workdir, select=(), *, wise: bool = True, path: bool = True, echo=print) -> list[dict]:
    """Every model of the module docstring evaluated; soups.csv and soups.md written; the rows returned."""
    workdir = pathlib.Path(workdir).absolute()
    found = runs(workdir, select)
    ingredients = sorted((r for r in found if r.trained_units), key=lambda r: (-r.val_metric, r.run_id))
    check_compatible(ingredients, workdir, select)
    probes = [r for r in found if not r.trained_units and not _differs(r, ingredients[0], workdir)]
    out_dir = workdir / FOLDER
    out_dir.mkdir(exist_ok=True)
    ev = Evaluations(ingredients[0].config, out_dir)
    try:
        metric = f"val_{ev.t.metric}"
        weights = {r.run_id: r.weights() for r in ingredients}
        rows = [_row(f"run {r.run_id}", ev(digest("run", r.run_id), weights[r.run_id]), [r]) for r in ingredients]
        echo(f"{len(ingredients)} ingredient(s) sharing {init_identity(ingredients[0].config, workdir)}; best "
             f"single run {ingredients[0].run_id} ({metric} {rows[0][metric]:.4f})")
        soup = lambda members: ev(digest("soup", sorted(m.run_id for m in members)),  # noqa: E731
                                  average([weights[m.run_id] for m in members]))
        rows.append(_row("uniform soup", soup(ingredients), ingredients))
        chosen = greedy(ingredients, lambda members: soup(members)[metric])
        rows.append(_row("greedy soup", soup(chosen), chosen))
        if wise:
            rows += _wise(ev, ingredients[0], weights[ingredients[0].run_id], probes, echo)
        if path and len(ingredients) > 1:
            rows += _path(ev, ingredients[:2], weights)
    finally:
        ev.close()
    _write(out_dir, rows, metric, echo)
    return rows


def _differs(run: Ingredient, ref: Ingredient, workdir) -> bool:
    try:
        check_compatible([ref, run], workdir)
        return False
    except ConfigError:
        return True


def _row(model: str, metrics: dict, members: list, alpha: float | None = None) -> dict:
    return {"model": model, "alpha": "" if alpha is None else alpha, "members": len(members),
            "run_ids": ";".join(m.run_id for m in members), **metrics}


def _wise(ev: Evaluations, ft: Ingredient, ft_weights: dict, probes: list, echo) -> list[dict]:
    """The WiSE-FT curve of the best run: from the linear probe run (best on val) if there is one, else from
    the source backbone carrying the fine-tuned head."""
    if probes:
        probe = max(probes, key=lambda r: (r.val_metric, r.run_id))
        start, name, members = probe.weights(), f"linear probe {probe.run_id}", [probe, ft]
    else:
        source = ev.source_weights()
        if source is None:
            echo("WiSE-FT skipped: no linear probe run and no source model (the runs start from scratch)")
            return []
        start = {coll: {k: (ft_weights[coll][k] if k.startswith("head.") or k not in source.get(coll, {})
                            else source[coll][k]) for k in ft_weights[coll]} for coll in ft_weights}
        name, members = "source backbone + fine-tuned head", [ft]
    echo(f"WiSE-FT: from {name} to {ft.run_id}")
    return [_row(f"wise_ft from {name}", ev(digest("wise", name, ft.run_id, a), interpolate(start, ft_weights, a)),
                 members, a) for a in ALPHAS]


def _path(ev: Evaluations, pair: list, weights: dict) -> list[dict]:
    a, b = (weights[r.run_id] for r in pair)
    return [_row(f"path {pair[0].run_id} -> {pair[1].run_id}",
                 ev(digest("path", pair[0].run_id, pair[1].run_id, x), interpolate(a, b, x)), pair, x)
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


def _write(out_dir: pathlib.Path, rows: list[dict], metric: str, echo) -> None:
    import pandas as pd
    pd.DataFrame(rows).to_csv(out_dir / "soups.csv", index=False)
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
    durable.write_text(out_dir / "soups.md", "\n".join(table) + "\n")
    echo("\n".join(table))
    echo(f"wrote {out_dir / 'soups.csv'} and {out_dir / 'soups.md'}")
