"""The soups experiment (tl_research/experiments/soups.py, experiments/soups/): its verdicts from synthetic soup
rows (no training), a case where every published claim holds and one where every one fails; and its
paper-scale config (experiments/soups/paper.py) validated on mock TFDS data with random weights."""
import pathlib

import numpy as np

from tl_research.analysis import soups as soups_lib
from tl_research.experiments import runner, soups, verdict

OOD = ("test_mnist_m_accuracy", "test_digits_upsampled_accuracy")
INVERTED = 0.2  # a third OOD set where every model is at chance (its balanced accuracy exactly 1/5)


def _row(model, val, test, ood, alpha="", members=1, run_ids="a", val_loss=0.3):
    return {"model": model, "alpha": alpha, "members": members, "run_ids": run_ids, "val_accuracy": val,
            "val_loss": val_loss, "test_accuracy": test, **{c: ood for c in OOD},
            "test_mnist_inverted_accuracy": INVERTED, "test_mnist_inverted_balanced_accuracy": INVERTED}


def _group(rng, d: dict) -> dict:
    """One group's soup rows (soups.make's shape): two runs, the soups, a WiSE-FT curve and a path, with the
    effects `d` (relative to the best run) plus a little noise."""
    e = lambda: float(rng.normal(0, 0.002))  # noqa: E731
    best_test, best_ood = 0.90 + e(), 0.40 + e()
    rows = [_row("run a", 0.92, best_test, best_ood, run_ids="a"), _row("run b", 0.91, 0.89, 0.38, run_ids="b"),
            _row("uniform soup", 0.91, best_test + d["uniform"][0] + e(), best_ood + d["uniform"][1] + e(), members=2,
                 run_ids="a;b"),
            _row("greedy soup", 0.93, best_test + d["greedy"][0] + e(), best_ood + d["greedy"][1] + e(), members=2,
                 run_ids="a;b")]
    for a in soups_lib.ALPHAS:  # val peaks at alpha 0.8; alpha 0.5 carries the fixed-alpha effect
        test, ood = best_test - 0.1 * (1 - a), best_ood - 0.05 * (1 - a)
        if a == 0.8:
            test, ood = best_test + e(), best_ood + d["wise_val"] + e()
        if a == 0.5:
            test, ood = best_test + d["half"][0] + e(), best_ood + d["half"][1] + e()
        rows.append(_row("wise_ft from linear probe p", 0.95 if a == 0.8 else 0.80 + 0.1 * a, test, ood, alpha=a,
                         members=2, run_ids="p;a"))
    for x in soups_lib.ALPHAS:  # the val error rises by `barrier` in the middle of the path
        acc = 0.92 - 0.01 * x - d["barrier"] * (1 - abs(2 * x - 1))
        rows.append(_row("path a -> b", acc, 0.9, 0.4, alpha=x, members=2, run_ids="a;b", val_loss=1 - acc))
    return {soups.MAIN: rows, soups.PLAIN: rows[:4] + rows[-len(soups_lib.ALPHAS):]}


HOLDS = {"greedy": (0.02, 0.03), "uniform": (-0.02, 0.03), "wise_val": 0.02, "half": (0.02, 0.05),
         "barrier": 0.0}
FAILS = {"greedy": (-0.02, -0.03), "uniform": (0.01, -0.05), "wise_val": -0.05, "half": (-0.05, -0.05),
         "barrier": 0.10}


def test_verdicts_hold_fail_and_cannot_be_tested_from_synthetic_soups(tmp_path):
    """soups' verdict test (tests/test_verdicts.py's OWN_FILES): rows built to hold, to fail, and with every OOD
    test set at chance (not testable); a set where both models compared are at chance is left out and named."""
    rng = np.random.default_rng(0)
    held = soups.compare({g: _group(rng, HOLDS) for g in range(4)}, labels={"a": "lr0.1 crop"})
    assert [v.status for v in held.verdicts] == [verdict.HELD] * 8, [v.line() for v in held.verdicts]
    assert all("n=4 source seeds" in v.figure for v in held.verdicts)  # the independent units of each interval
    assert "mnist_inverted left out: both at chance there" in held.verdicts[1].figure
    assert held.verdicts[0].published.startswith("+0.006")
    assert "4 source seed(s)" in held.tables[0] and "| greedy soup |" in held.tables[1]
    assert "| 0 | lr0.1 crop | +0.000 / +0.000 |" in held.tables[3]  # the basin table, both BatchNorm modes
    failed = soups.compare({g: _group(rng, FAILS) for g in range(4)})
    assert [v.status for v in failed.verdicts] == [verdict.FAILED] * 8, [v.line() for v in failed.verdicts]
    chance = {g: _group(rng, HOLDS) for g in range(4)}
    for modes in chance.values():
        for rows in modes.values():
            for r in rows:
                r.update({c: INVERTED for c in OOD}, **{c.replace("_accuracy", "_balanced_accuracy"): INVERTED
                                                        for c in OOD})
    statuses = [v.status for v in soups.compare(chance).verdicts]
    assert statuses == [verdict.HELD, verdict.NOT_TESTABLE, verdict.HELD, verdict.NOT_TESTABLE,
                        verdict.NOT_TESTABLE, verdict.NOT_TESTABLE, verdict.HELD, verdict.HELD], statuses
    held.plot(tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 0


def test_sweep_groups_each_train_their_own_source_and_subset():
    from tl_research import config as config_lib
    module = config_lib.load_module(str(runner.ROOT / "soups" / "config.py"))
    base, points = module.get_config(), module.get_sweep()
    assert len(points) == len(soups.GROUPS) * (len(soups.INGREDIENTS) + 1)
    assert runner.source_count(base, points) == len(soups.GROUPS)
    for g in soups.GROUPS:
        group = [p for p in points if p[soups.GROUP_KEY] == g]
        assert {p["source.seed"] for p in group} == {g} and len({p["seed"] for p in group}) == len(group) - 1
    assert base.data.extra_test_sets == soups.OOD


def test_paper_scale_config_validates_on_mock_data(tmp_path):
    """experiments/soups/paper.py passes config validation on mock TFDS data laid out with ImageNet's,
    ImageNet-V2's and ImageNet-Sketch's real split sizes, with random weights (init=scratch in place of the
    converted ViT-B/16), as tests/test_paper_scale.py validates the others: a recipe with RandAugment, one with
    mixup and the linear probe (tests/test_paper_scale.py dry-runs every point)."""
    from test_paper_scale import _validate
    paper = runner.load_module(runner.at_scale(soups.EXPERIMENT, "paper"))
    points = paper.get_sweep()
    assert len(points) == len(paper.GROUPS) * (paper.INGREDIENTS + 1) and paper.INIT in paper.WEIGHTS
    assert paper.draw(1) == paper.draw(1) != paper.draw(2)  # fixed draws, one set per group
    ra, mix = ([p for p in points if any(op.startswith(kind) for op in p.get("augment", ()))][:1]
               for kind in ("randaugment", "mixup"))
    chosen = ra + mix + [p for p in points if p["label"] == "LP"][:1]
    assert len(chosen) == 3
    _validate(runner.at_scale(soups.EXPERIMENT, "paper"), chosen, tmp_path)


def test_registered():
    from tl_research.experiments import registry
    assert registry.get("soups")[0] is soups.EXPERIMENT
    assert pathlib.Path(runner.ROOT / "soups" / "config.py").is_file()
