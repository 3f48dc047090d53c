"""The transferability experiment: its verdicts follow synthetic rankings (a score that orders the sources as
their accuracy does holds, one that orders them backwards does not), and its paper-scale config validates on mock
TFDS data with random weights."""
import pathlib

import pytest

from tl_research.experiments import runner, transferability_ranking as T, verdict

SOURCES = [f"source {i}" for i in range(6)]


def _rows(logme_sign: float, rival_sign: float) -> list[dict]:
    """Fine-tuned runs of 6 sources x 3 targets x 3 seeds: accuracy rises with the source's index (plus a small
    per-seed jitter); LogME follows it with logme_sign, LEEP and NCE with rival_sign."""
    rows = []
    for target_index, target in enumerate(T.TARGETS):
        for i, source in enumerate(SOURCES):
            for seed in range(3):
                acc = 0.5 + 0.05 * i + 0.01 * seed + 0.02 * target_index
                rows.append({"run_id": f"{target}-{i}-{seed}", "status": "done", "seed": str(seed),
                             "label": source, "data.name": target, "frozen_depth": "0", "test_accuracy": str(acc),
                             "logme": str(logme_sign * i + 0.1 * seed), "leep": str(rival_sign * i),
                             "nce": str(rival_sign * (i + 0.5 * seed))})
    return rows


def test_verdicts_follow_the_rankings(monkeypatch):
    monkeypatch.setattr(T, "DRAWS", 200)  # bootstrap and pooled permutations (per target: all 720 orders)
    held = T.analyse(_rows(logme_sign=1.0, rival_sign=-1.0), pathlib.Path("."))
    statuses = [v.status for v in held.verdicts]
    assert len(statuses) == 3 * (1 + len(T.TARGETS))  # chance, - LEEP, - NCE; pooled and per target
    assert statuses == [verdict.HELD] * len(statuses), [v.line() for v in held.verdicts]
    assert "p=0.00278" in held.verdicts[3].figure  # a perfect ranking of 6: 2 of the 720 orders reach |tau| = 1
    assert "n=6 source models" in held.verdicts[0].figure and held.headline.startswith("pooled weighted tau")
    assert "n=6 source models, paired]" in held.verdicts[1].figure and "seeds]" not in held.verdicts[1].figure
    failed = T.analyse(_rows(logme_sign=-1.0, rival_sign=1.0), pathlib.Path("."))
    assert [v.status for v in failed.verdicts] == [verdict.FAILED] * len(statuses)
    df = T.tables.done(_rows(logme_sign=1.0, rival_sign=1.0))  # LogME ties its rivals: within noise
    tied = T.Rankings(T.units(df.assign(kind=T.kind_of(df)), T.FINE_TUNE))
    assert T.rival_verdict(tied, T.POOLED, "leep").status == verdict.NOISE


def test_paper_scale_config_validates_on_mock_data(tmp_path):
    """experiments/transferability/paper.py: every model of the zoo and every TFDS target passes config
    validation, on mock TFDS data laid out with the datasets' real split sizes, with random weights (init=scratch
    in place of the converted checkpoints); the config argument adds the FGVC-Aircraft folder."""
    import tensorflow_datasets as tfds
    from test_experiments import _split_metadata, covering
    from test_vtab import SPLIT_SIZES, _Batched
    from unittest import mock
    from tl_research import config as config_lib
    from tl_research.analysis import transferability_report
    from tl_research import models
    paper = config_lib.load_module(str(runner.ROOT / "transferability" / "paper.py"))
    assert len(paper.ZOO) >= 10 and all(init != "scratch" for init in paper.ZOO.values())
    assert set(paper.ZOO) <= set(models.names())  # each architecture's own tests build it (and convert into it)
    sizes = {"cifar10": {"train": 50000, "test": 10000}, "cars196": {"train": 8144, "test": 8041}, **SPLIT_SIZES}
    data_dir = str(tmp_path / "tfds")
    with tfds.testing.mock_data(num_examples=64, data_dir=data_dir):
        mocked = tfds.core.DatasetBuilder.as_data_source
        with mock.patch.object(tfds.core.DatasetBuilder, "as_data_source",
                               lambda self, *a, **kw: _Batched(mocked(self, *a, **kw))):
            _split_metadata(data_dir, {name: sizes[name] for name in paper.TARGETS})
            base = paper.get_config()
            points = covering(paper.get_sweep())
            for p in [p for p in points if p["model.name"] == "resnet18"]:  # every target, kind and seed
                cfg = config_lib.apply_overrides(base, {**p, "data.data_dir": data_dir, "init": "scratch"})
                config_lib.validate(cfg)
                transferability_report.check(cfg, tmp_path)
    assert {p["label"] for p in points} == set(paper.ZOO) and {p["data.name"] for p in points} == set(paper.TARGETS)
    assert {p["frozen_depth"] for p in points} == {0, "all"} and {p["seed"] for p in points} == set(paper.SEEDS)
    with_aircraft = {p["data.name"] for p in paper.get_sweep("/data/aircraft")}
    assert with_aircraft == set(paper.TARGETS) | {"folder:/data/aircraft"}


def test_sweep_trains_a_source_per_seed_and_scores_every_pair():
    config = __import__("tl_research.config", fromlist=["x"]).load_module(
        str(runner.ROOT / "transferability" / "config.py"))
    base, points = config.get_config(), config.get_sweep()
    assert all(p["source.seed"] == p["seed"] for p in points)  # one source model per source and seed:
    assert len({(p["label"], p["seed"]) for p in points}) == len(T.SOURCES) * 3  # 18 trained
    assert {p["data.name"] for p in points} == set(T.TARGETS) and len(points) == len(T.SOURCES) * 3 * 3 * 2
    assert tuple(base.report.transferability) == T.SCORES
    assert len({s.arch for s in T.SOURCES}) >= 2 and len({s.data for s in T.SOURCES}) >= 3
    assert len({(s.arch, s.epochs) for s in T.SOURCES}) > len({s.arch for s in T.SOURCES})


@pytest.mark.parametrize("n", [3, 6])
def test_pooled_permutation_p_is_small_only_for_a_real_ranking(n):
    import pandas as pd
    by_target = {t: pd.DataFrame({"test_accuracy": range(n), "logme": range(n)}, index=range(n)) for t in "ab"}
    p = T.pooled(by_target, "logme", "weighted_tau").p
    assert (p < 0.05) == (n == 6)  # 3 sources: 2 of 6 orders reach tau = 1 on each target, 1/9 jointly
