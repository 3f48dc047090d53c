"""Every experiment's analysis at the paper's scale reads its runs: synthetic finished rows built from
experiments/NAME/paper.py's sweep the way the sweep writes them (sweep.result_row: run id, every swept key,
status, the metrics a run of that config reports, num_classes among them), round-tripped through results.csv,
with accuracies at 1.5-1.9 times 1/num_classes (tight over seeds: clear of chance at the runs' class count,
below the digits' 1/5 for a 10-class target). Each analysis must run, find the rows of every verdict (none "not
run"), judge chance from the runs' classes (no verdict not testable for chance) and name nothing of the digits'
setting in its tables, verdicts and headline. Pure data: nothing trains.

What a workdir holds besides results.csv is given as the analyses read it: cyclical_lr's test curves
(RUN/metrics.jsonl), transferability's scores as row columns (its analysis keeps scores the rows carry), soups'
soup rows per group (soups.build, which evaluates weight averages, replaced by synthetic soup rows);
better_models_transfer reads its converted checkpoints' source accuracy off the rows (init, model.name)."""
import json
import re
import zlib

import numpy as np
import pytest

from tl_research import config as config_lib
from tl_research.analysis import results
from tl_research.data import vtab
from tl_research.experiments import dry_run, registry, runner, soups, transferability_ranking, verdict
from tl_research.run import trainer
from tl_research.sweeps import sweep

PAPER = [e.name for e in registry.EXPERIMENTS if (runner.ROOT / e.name / "paper.py").is_file()]
DIGITS = re.compile(r"digit|mnist|\b[05]-[49]\b|\b1/5\b", re.IGNORECASE)  # the digits' setting, named
SEEDED = 0.02  # a seed's relative spread around its setting's level


def classes(cfg) -> int:
    """The run's class count: its data.classes, else the dataset's (the dry run's TFDS figures, VTAB's tasks)."""
    d = cfg.data
    if d.classes:
        return len(d.classes)
    if d.label_key == "coarse_label":  # CIFAR-100's 20 superclasses
        return 20
    if d.name.startswith("vtab:"):
        return vtab.VTAB_TASKS[d.name[len("vtab:"):]].num_classes
    known = dry_run.KNOWN.get(d.name) or dry_run.KNOWN.get(d.name.split("/")[0])
    return known[1] if known and known[1] else 10


def level(point: dict, n: int) -> float:
    """The accuracy of a setting (the point without its seed) at n classes: 1.5-1.9 x 1/n, fixed by the setting."""
    return min(0.9, np.random.default_rng(zlib.crc32(_setting(point).encode())).uniform(1.5, 1.9) / n)


def _setting(point: dict) -> str:
    return json.dumps({k: v for k, v in point.items() if k != "seed"}, sort_keys=True, default=str)


def metrics(cfg, point: dict, rng) -> dict:
    """What a finished run of cfg reports, at its setting's level and the seed's spread."""
    n = classes(cfg)
    acc = lambda: level(point, n) * (1 + rng.uniform(-SEEDED, SEEDED))  # noqa: E731
    out = {"val_accuracy": acc(), "val_loss": 1.0, "test_accuracy": acc(), "test_balanced_accuracy": acc(),
           "test_macro_f1": acc(), "test_loss": 1.0, "best_step": 1, "steps": int(cfg.train.steps or 1000),
           "trainable_params": 1000, "num_classes": n}
    if cfg.train.eval_test:
        out.update(final_test_accuracy=acc(), best_seen_test_accuracy=acc())
    for key, ev in cfg.evals.items():
        if ev.type == "classification":  # data.extra_test_sets: test_NAME_accuracy, read with the run's classes
            out.update({f"{key}_accuracy": acc(), f"{key}_balanced_accuracy": acc()})
        elif ev.type == "fewshot":
            out.update({f"{key}_{k}shot_accuracy": acc() for k in ev.shots})
        elif ev.type == "logreg":
            out[f"{key}_accuracy"] = acc()
    if cfg.report.similarity:
        out["domain_similarity"] = rng.uniform(0.5, 0.9)
    out.update({score: out["test_accuracy"] + rng.normal(0, 0.01) for score in cfg.report.transferability})
    return out


def finished_rows(module, tmp_path) -> list[dict]:
    """The sweep's rows as results.csv gives them back, every run done (one config per setting: the seed changes
    none of the keys a row reads off the config unless the sweep varies source.seed)."""
    base, points = module.get_config(), module.get_sweep()
    keys, rng, rows, configs = sweep.swept_keys(points), np.random.default_rng(0), [], {}
    for point in points:
        key = _setting(point) if "source.seed" not in keys else json.dumps(point, sort_keys=True, default=str)
        cfg = configs[key] = configs.get(key) or config_lib.apply_overrides(base, point)
        done = trainer.RunResult("done", "", metrics(cfg, point, rng))
        rows.append(sweep.result_row(config_lib.run_id(point), point, cfg, keys, done))
    results.write_rows(tmp_path / sweep.RESULTS, rows)
    return results.read_rows(tmp_path / sweep.RESULTS)


def curves(rows: list[dict], workdir, every: int) -> None:
    """cyclical_lr's test curve of each run: rising to its final accuracy at its last step."""
    for r in rows:
        steps, final = int(float(r["steps"])), float(r["final_test_accuracy"])
        (workdir / r["run_id"]).mkdir()
        (workdir / r["run_id"] / "metrics.jsonl").write_text("".join(
            json.dumps({"step": s, "test_accuracy": final * s / steps}) + "\n" for s in range(every, steps + 1, every)))


def soup_rows(rows: list[dict]):
    """soups.build's stand-in: per group, its runs, both soups, a WiSE-FT curve and a path, at the runs' level,
    with every OOD column the runs have."""
    acc = float(np.mean([float(r["test_accuracy"]) for r in rows]))
    ood = [k[:-len("_accuracy")] for k in rows[0] if k.startswith("test_") and k.endswith("_accuracy")
           and not k.endswith("balanced_accuracy") and k != "test_accuracy"]

    def row(model, x, alpha="", run_ids="a"):
        return {"model": model, "alpha": alpha, "members": 1, "run_ids": run_ids, "val_accuracy": x, "val_loss": 1.0,
                "test_accuracy": x, **{f"{c}_{m}": x for c in ood for m in ("accuracy", "balanced_accuracy")}}

    def build(workdir, groups, key=soups.GROUP_KEY, echo=print):
        out = {}
        for i, g in enumerate(groups):
            x = acc * (1 + 0.01 * i)
            made = [row("run a", x), row("run b", 0.95 * x, run_ids="b"), row("uniform soup", 1.02 * x),
                    row("greedy soup", 1.03 * x)]
            made += [row("wise_ft from linear probe p", x * (0.9 + 0.1 * a), a, "p;a") for a in (0.0, 0.5, 1.0)]
            made += [row("path a -> b", x * (1 - 0.01 * a), a, "a;b") for a in (0.0, 0.5, 1.0)]
            out[g] = {soups.MAIN: made, soups.PLAIN: made}
        return out
    return build


@pytest.mark.parametrize("name", PAPER)
def test_paper_scale_analysis_reads_its_runs(name, tmp_path, monkeypatch):
    exp = runner.at_scale(registry.get(name)[0], "paper")
    module = runner.load_module(exp)
    rows = finished_rows(module, tmp_path)
    if name == "cyclical_lr":
        curves(rows, tmp_path, module.get_config().train.eval_every)
    if name == "soups":
        monkeypatch.setattr(soups, "build", soup_rows(rows))
    monkeypatch.setattr(transferability_ranking, "DRAWS", 100)  # its bootstraps: 100 resamples are enough here
    analysis = runner.analyse(exp, rows, tmp_path, module)  # as `report` calls it
    found = [v for v in analysis.verdicts]
    assert found and not [v.line() for v in found if v.status == verdict.NOT_RUN]
    assert not [v.line() for v in found if "chance" in v.reason], "chance judged against another class count"
    texts = [*analysis.tables, analysis.headline, *(f"{v.claim} {v.figure} {v.reason}" for v in found)]
    assert not [m.group(0) for t in texts for m in [DIGITS.search(t)] if m], "the digits' setting named"
    if name == "layer_transfer":  # n = 1..8 of ResNet-18's 9 units: the top and middle n from the runs
        assert found[0].figure.startswith("AnB(n=8) - AnB(n=4)") and analysis.headline.startswith("AnB(8) - AnB(4)")


def test_chance_is_the_mean_of_the_runs_one_over_classes():
    import pandas as pd
    from tl_research.experiments import common
    runs = pd.DataFrame({"data.name": ["a", "a", "b"], "num_classes": ["10", "10", "100"]})
    assert common.chance(runs, {"data.name": "a"}) == pytest.approx(0.1)
    assert common.chance(runs) == pytest.approx((0.1 + 0.1 + 0.01) / 3)  # a mean over targets: their chances' mean
    assert common.chance(runs.drop(columns="num_classes")) == common.CHANCE  # a workdir from before the column
    assert common.chance(runs, {"data.name": "c"}, default=0.5) == 0.5


def test_paper_scale_readmes_say_what_differs_at_that_scale():
    """A paper-scale README's "what differs" section is its paper.py's setting, not the digits' text."""
    for e in registry.EXPERIMENTS:
        exp = runner.at_scale(e, "paper")
        module = runner.load_module(exp)
        text = runner.differences(exp, module)
        assert module.__doc__.strip() in text and e.differences.strip() not in text, e.name
    digits = registry.get("lp_ft")[0]
    assert runner.differences(digits, runner.load_module(digits)) == digits.differences
