"""experiments few_shot_curves and better_models_transfer: their verdicts follow the numbers (synthetic rows that
must hold and rows that must fail, no training), better_models_transfer finds each run's source accuracy, and
both paper-scale configs validate on mock TFDS data with random weights."""
import json
import math

import numpy as np
import pytest

from tl_research.experiments import better_models_transfer as bmt
from tl_research.experiments import few_shot_curves as fsc
from tl_research.experiments import runner, verdict


def _few_shot_rows(sign: float, base: float = 0.5) -> list[dict]:
    """3 seeds x 2 targets: accuracy = base + sign * (rise with shots, fine-tune over the linear probe over
    scratch); sign -1 reverses every claimed direction."""
    rows, rng = [], np.random.default_rng(0)
    arm_gap = {fsc.FINE_TUNE: 0.1, fsc.LINEAR: 0.0, fsc.SCRATCH: -0.1}
    for seed in range(3):
        for target in fsc.TARGETS:
            noise = lambda: float(rng.normal(0, 0.005))  # noqa: E731
            probe = {f"fewshot_{k}shot_accuracy": base + sign * 0.02 * k + noise() for k in fsc.SHOTS}
            rows.append({"run_id": f"p{seed}{target}", "status": "done", "label": fsc.PROBE, "seed": seed,
                         "data.name": target, "data.per_class": 0, "test_accuracy": 0.3, **probe})
            for k in fsc.SHOTS:
                for arm, gap in arm_gap.items():
                    rows.append({"run_id": f"{arm}{k}{seed}{target}", "status": "done", "label": arm, "seed": seed,
                                 "data.name": target, "data.per_class": k, "fewshot_1shot_accuracy": 0.9,
                                 "test_accuracy": base + sign * (0.01 * k + gap) + noise()})
    return rows


def test_few_shot_curves_verdicts_follow_the_numbers(tmp_path):
    held = fsc.analyse(_few_shot_rows(+1), tmp_path)
    assert [v.status for v in held.verdicts] == [verdict.HELD] * 4
    assert "n=3 seeds, paired" in held.verdicts[0].figure and "+0.283" in held.verdicts[0].published
    # the probe arm is read from its fewshot columns, the trained arms from test_accuracy at their data.per_class
    assert "closed-form probe 0.52" in held.headline and "fine-tune 0.60" in held.headline
    failed = fsc.analyse(_few_shot_rows(-1), tmp_path)
    assert [v.status for v in failed.verdicts] == [verdict.FAILED] * 4
    no_probe = fsc.analyse([r for r in _few_shot_rows(+1) if r["label"] != fsc.PROBE], tmp_path)
    assert [v.status for v in no_probe.verdicts] == [verdict.HELD, verdict.NOT_RUN, verdict.HELD, verdict.HELD]
    at_chance = fsc.analyse(_few_shot_rows(+0.1, base=0.0), tmp_path)  # every arm below 1/5: nothing testable
    assert [v.status for v in at_chance.verdicts] == [verdict.NOT_TESTABLE] * 4
    held.plot(tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 0


def _zoo(sign: float) -> tuple[list[dict], list[float]]:
    """8 models, 2 targets, 2 arms: transfer log-odds = sign * source log-odds + noise."""
    rows, source, rng = [], [], np.random.default_rng(1)
    for i in range(8):
        acc = 0.6 + 0.045 * i
        for target in ("a", "b"):
            for frozen, metric in (("all", "logreg_accuracy"), (0, "test_accuracy")):
                t = 1 / (1 + math.exp(-(sign * bmt.logit([acc])[0] + rng.normal(0, 0.1))))
                rows.append({"run_id": f"{i}{target}{frozen}", "status": "done", "label": f"m{i}", "seed": 0,
                             "data.name": target, "frozen_depth": frozen, "test_accuracy": 0.1, metric: t})
                source.append(acc)
    return rows, source


def test_better_models_transfer_correlation_and_verdicts():
    from tl_research.experiments import tables
    for sign, status in ((+1, verdict.HELD), (-1, verdict.FAILED)):
        rows, source = _zoo(sign)
        models = bmt.per_model(tables.done(rows), source)
        assert len(models) == 8 and set(models["source_accuracy"].round(3)) == {round(0.6 + 0.045 * i, 3)
                                                                                  for i in range(8)}
        corr = bmt.correlations(models)
        x = bmt.logit(models["source_accuracy"])
        for arm in bmt.ARMS:  # Pearson r on log-odds, the permutation p and the interval over the 8 models
            r = np.corrcoef(x, models[f"{arm}: mean log-odds"])[0, 1]
            assert corr[arm].pearson.value == pytest.approx(r) and abs(r) > 0.95
            assert corr[arm].pearson.n == 8 and corr[arm].pearson.p < 0.01
            assert corr[arm].pearson.low <= r <= corr[arm].pearson.high
        verdicts = bmt.verdicts(corr)
        assert [v.status for v in verdicts] == [status, status]
        assert "n=8 models" in verdicts[0].figure and "r = 0.99" in verdicts[0].published
    flat = bmt.pearson_agreement([0.1, 0.2, 0.3], [0.5, 0.5, 0.5])  # a constant side: no correlation, no verdict
    assert math.isnan(flat.value) and bmt.verdicts({a: bmt.Correlation(a, flat, flat) for a in bmt.ARMS})[0].status \
        == verdict.NOT_TESTABLE


def test_source_accuracy_is_the_run_s_source_model_s_or_the_published_top1(tmp_path):
    """A run's source accuracy: its source model's result.json in the workdir (found from the run's config.json),
    or a converted checkpoint's published ImageNet top-1."""
    import pandas as pd
    from tl_research import config as config_lib
    from tl_research.sweeps import sweep
    base, points = runner.load(bmt.EXPERIMENT)
    paper = config_lib.load_module(str(runner.ROOT / "better_models_transfer" / "paper.py"))
    runs = {"built-in": config_lib.apply_overrides(base, points[0]),
            "other source": config_lib.apply_overrides(base, points[-1]),
            "converted": config_lib.apply_overrides(paper.get_config(), paper.get_sweep()[0])}
    for rid, cfg in runs.items():
        (tmp_path / rid).mkdir()
        (tmp_path / rid / "config.json").write_text(json.dumps({**json.loads(cfg.to_json()), "runtime": {}}))
    src = sweep.source_dir(tmp_path, runs["built-in"].source)
    src.mkdir(parents=True)
    (src / "result.json").write_text(json.dumps({"status": "done", "metrics": {"test_accuracy": 0.917}}))
    got = bmt.source_accuracy(pd.DataFrame({"run_id": list(runs)}), tmp_path)
    assert got[0] == 0.917 and math.isnan(got[1])  # the other model's source has no result here
    assert got[2] == bmt.IMAGENET_TOP1[paper.ZOO[0]] == 0.69758


def test_paper_scale_configs_validate_on_mock_data(tmp_path):
    """experiments/{few_shot_curves,better_models_transfer}/paper.py pass config validation at every value of every
    key their sweeps set (one seed; every arm and shot count; two of the zoo's twelve models, each abstract build
    costing seconds, the rest registered names) on mock TFDS data laid out with the real split sizes, with random
    weights (tests/test_paper_scale.py's helper; its dry-run test covers both configs whole)."""
    from test_paper_scale import _covering, _validate
    from tl_research import models
    fs_paper, bm_paper = (runner.at_scale(e, "paper") for e in (fsc.EXPERIMENT, bmt.EXPERIMENT))
    fs_points = runner.load_module(fs_paper).get_sweep()
    bm_module = runner.load_module(bm_paper)
    zoo = ("resnet18", "mobilenet_v3_small")
    fs_checked = _covering([p for p in fs_points if p["seed"] == 0])
    bm_checked = _covering([p for p in bm_module.get_sweep() if p["model.name"] in zoo])
    _validate(fs_paper, fs_checked, tmp_path)
    _validate(bm_paper, bm_checked, tmp_path)
    assert {p["label"] for p in fs_checked} == set(fsc.ARMS) and {p["model.name"] for p in bm_checked} == set(zoo)
    assert len({p["data.name"] for p in bm_checked}) == len(bm_module.DATASETS) == 9
    assert set(bm_module.ZOO) == set(bmt.IMAGENET_TOP1) and set(bm_module.ZOO) <= set(models.names())
    # the real training splits' smallest classes: CIFAR's train[:45000] about 4,500, Flowers-102's train 10
    most = {name: max(p.get("data.per_class", 0) for p in fs_points if p["data.name"] == name)
            for name in runner.load_module(fs_paper).TARGETS}
    assert most == {"cifar10": 25, "cifar100": 25, "oxford_iiit_pet": 25, "oxford_flowers102": 10}
