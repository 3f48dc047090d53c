"""Every registered experiment's analysis reads its verdicts from the numbers: synthetic results rows built so
that each claim must hold, must fail, or cannot be tested (every arm at chance, too few units) give exactly that
outcome. Also the statistics under them (intervals within their range, equivalence, chance, rank tests over
units) and the source model's seed following the run's. Pure data: nothing trains."""
import json
import math
import pathlib

import pandas as pd
import pytest

from tl_research import config as C
from tl_research.core.errors import ConfigError
from tl_research.experiments import (class_imbalance, common, cyclical_lr, data_size, decision_matrix,
                                     domain_similarity, layer_transfer, lp_ft, peft_vs_full, readme, registry, stats,
                                     surgical, tables, verdict)

HELD, FAILED, EQUIVALENT, NOISE, UNTESTABLE, NOT_RUN = (verdict.HELD, verdict.FAILED, verdict.EQUIVALENT,
                                                        verdict.NOISE, verdict.NOT_TESTABLE, verdict.NOT_RUN)
JITTER = (0.0, 0.01, -0.01)  # per seed: three seeds, an interval of about ±0.025 around a level
HERE = pathlib.Path(".")


def rows(settings, jitter=JITTER, metrics=("test_accuracy", "test_balanced_accuracy")) -> list[dict]:
    """Results rows: one per (setting, seed). A setting is (keys, level) or (keys, {metric: level}); every metric
    of `metrics` not given reads the level, plus the seed's jitter. Values as results.csv gives them: text."""
    out = []
    for i, (where, level) in enumerate(settings):
        levels = level if isinstance(level, dict) else {m: level for m in metrics}
        for s, j in enumerate(jitter):
            out.append({"run_id": f"r{i}-s{s}", "status": "done", "seed": str(s),
                        **{k: str(v) for k, v in where.items()}, **{m: str(v + j) for m, v in levels.items()}})
    return out


def statuses(analyse, data, workdir=HERE) -> list[str]:
    return [v.status for v in analyse(data, workdir).verdicts]


def surgical_statuses(data) -> list[str]:
    """surgical's verdicts alone (its analyse is checked on the rows where every claim holds)."""
    return [v.status for v in surgical.verdicts(surgical.prepared(tables.done(data)))[0]]


def peft_statuses(data) -> list[str]:
    return [v.status for v in peft_vs_full.verdicts(tables.done(data))]


# ------------------------------------------------------------------------------------------------ statistics

def test_intervals_stay_within_their_range_and_bootstraps_are_fixed():
    e = stats.mean_ci([0.99, 1.0, 0.97], bounds=stats.ACCURACY)
    assert e.high == 1.0 and e.low > 0.9 and stats.mean_ci([0.99, 1.0, 0.97]).high > 1.0  # t alone leaves [0, 1]
    high, low = pd.Series({0: 1.0, 1: 0.98, 2: 0.9}), pd.Series({0: 0.0, 1: 0.02, 2: 0.3})
    d = stats.paired_difference(high, low)  # accuracies: the difference stays within [-1, 1]
    assert d.high == 1.0 and d.paired and "n=3 seeds, paired" in d.text()
    assert stats.paired_difference(high * 100, low * 100).high > 100  # not accuracies: no range assumed
    b = stats.mean_ci([0.5, 0.6, 0.7, 0.8, 0.9], method="bootstrap", bounds=stats.ACCURACY)
    assert b == stats.mean_ci([0.5, 0.6, 0.7, 0.8, 0.9], method="bootstrap", bounds=stats.ACCURACY)
    assert 0.5 <= b.low < b.mean < b.high <= 0.9 and "bootstrap CI" in b.text()
    rho = stats.rank_agreement([1, 2, 3, 4, 5, 6], [0.1, 0.3, 0.2, 0.5, 0.6, 0.4])
    assert -1.0 <= rho.low <= rho.high <= 1.0 and rho == stats.rank_agreement([1, 2, 3, 4, 5, 6],
                                                                              [0.1, 0.3, 0.2, 0.5, 0.6, 0.4])
    assert stats.smallest_p(4) == pytest.approx(2 / 24) and stats.smallest_p(5) == pytest.approx(2 / 120)


def test_four_outcomes_equivalence_and_chance():
    tight, wide = stats.mean_ci([0.002, 0.004, 0.003]), stats.mean_ci([0.03, -0.03, 0.01])
    v = verdict.greater("c", "x", tight, delta=0.01, published="+3.0 points (Table 1)")
    assert v.status == EQUIVALENT and v.outcome() == "equivalent within ±0.01" and v.published.startswith("+3.0")
    assert "equivalence margin ±0.01" in v.figure and v.to_dict()["delta"] == 0.01
    assert verdict.greater("c", "x", tight).status == HELD  # no delta: no equivalence outcome
    assert verdict.greater("c", "x", wide, delta=0.01).status == NOISE  # straddles, not inside ±delta
    assert verdict.less("c", "x", stats.mean_ci([])).status == NOT_RUN
    one = verdict.greater("c", "x", stats.mean_ci([0.3]))
    assert one.status == UNTESTABLE and "no interval" in one.outcome()
    assert stats.at_chance([0.2, 0.21, 0.19], 0.2) and not stats.at_chance([0.25, 0.26, 0.24], 0.2)
    assert stats.chance_reason({"A": [0.2, 0.21, 0.19], "B": [0.9, 0.91, 0.9]}, 0.2) == ""  # one arm learnt
    reason = stats.chance_reason({"A": [0.2, 0.21, 0.19], "B": [0.18, 0.2, 0.2]}, 0.2)
    assert reason.startswith("A and B not shown above chance (1/5 = 0.200")
    assert verdict.greater("c", "x", tight, untestable=reason).status == UNTESTABLE


# --------------------------------------------------------------------------------- one test per experiment

def _layer_transfer(anb, bnb, plus, base):
    """AnB, BnB at n = 1..4 (transfer_depth n), AnB+ and BnB+ at `plus` for every n, baseB (transfer_depth -1)."""
    return rows([({"label": "AnB", "transfer_depth": n}, a) for n, a in zip((1, 2, 3, 4), anb)]
                + [({"label": "BnB", "transfer_depth": n}, b) for n, b in zip((1, 2, 3, 4), bnb)]
                + [({"label": lab, "transfer_depth": n}, plus) for lab in ("AnB+", "BnB+") for n in (1, 2, 3, 4)]
                + [({"label": "baseB", "transfer_depth": -1, "init": "scratch"}, base)])


def test_layer_transfer():
    a = layer_transfer.analyse
    assert statuses(a, _layer_transfer((.95, .94, .93, .80), (.95, .90, .90, .95), .96, .94)) == [HELD] * 4
    assert statuses(a, _layer_transfer((.95, .94, .93, .99), (.95, .99, .99, .95), .90, .94)) == [FAILED] * 4
    assert statuses(a, _layer_transfer((.2,) * 4, (.2,) * 4, .2, .2)) == [UNTESTABLE] * 4


def _cyclical(workdir: pathlib.Path, level: float, fixed_reach: int, mode_reach: int, mode_final: float):
    """The fixed LR 0.03 (best on validation) ends at `level`, first reaching it at step `fixed_reach` (+10 per
    seed); the cyclical modes reach it at `mode_reach` (+10 per seed) and end at `mode_final`."""
    settings, curves = [], {}
    for i, (label, val) in enumerate((("fixed 0.01", .5), ("fixed 0.03", .9), ("fixed 0.1", .6),
                                      *[(m, .8) for m in cyclical_lr.MODES])):
        reach, final = (fixed_reach, level) if label.startswith("fixed") else (mode_reach, mode_final)
        settings.append(({"label": label, "steps": 150}, {"val_accuracy": val, "final_test_accuracy": final}))
        for s in range(3):
            curves[f"r{i}-s{s}"] = [{"step": t, "test_accuracy": level if t >= reach + 10 * s else level - 0.1}
                                    for t in range(10, 160, 10)]
    for rid, curve in curves.items():
        (workdir / rid).mkdir(parents=True, exist_ok=True)
        (workdir / rid / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in curve))
    return rows(settings, jitter=(0.0, 0.0, 0.0))  # the curves carry the seeds' differences


def test_cyclical_lr(tmp_path):
    a = cyclical_lr.analyse
    assert statuses(a, _cyclical(tmp_path / "h", .9, 120, 50, .92), tmp_path / "h") == [HELD] * 4
    assert statuses(a, _cyclical(tmp_path / "f", .9, 40, 110, .85), tmp_path / "f") == [FAILED] * 4
    assert statuses(a, _cyclical(tmp_path / "c", .2, 40, 110, .2), tmp_path / "c") == [UNTESTABLE] * 4
    same = statuses(a, _cyclical(tmp_path / "e", .9, 50, 50, .9), tmp_path / "e")
    assert same == [EQUIVALENT] * 4  # within 10 steps (the curves' evaluation interval) and one point of accuracy


def _data_size(small: dict, large: dict):
    return rows([({"label": arm, "data.per_class": k}, level[arm]) for k, level in ((1, small), (350, large))
                 for arm in data_size.ARMS])


def test_data_size():
    a = data_size.analyse
    large = {"linear probe": .80, "fine-tune": .95, "scratch": .94}
    assert statuses(a, _data_size({"linear probe": .5, "fine-tune": .45, "scratch": .30}, large)) == [HELD] * 3
    failed = _data_size({"linear probe": .25, "fine-tune": .31, "scratch": .30}, {**large, "scratch": .80})
    assert statuses(a, failed) == [FAILED] * 3
    # "competitive" (Kornblith et al.): a probe 0.005 below fine-tuning still holds; 0.05 below does not
    close = _data_size({"linear probe": .445, "fine-tune": .45, "scratch": .30}, large)
    assert statuses(a, close)[1] == HELD
    assert statuses(a, _data_size({"linear probe": .40, "fine-tune": .45, "scratch": .30}, large))[1] == FAILED
    assert statuses(a, _data_size(dict.fromkeys(data_size.ARMS, .2), dict.fromkeys(data_size.ARMS, .2))) \
        == [UNTESTABLE] * 3


def _lp_ft(id_acc: dict, ood: dict, upsampled: dict | None = None):
    """Each arm's ID and mnist_m accuracy; digits_upsampled's `upsampled` (default: at chance, one constant
    prediction: accuracy 0.206 in every seed, balanced accuracy exactly 0.2)."""
    settings = []
    for arm in lp_ft.ARMS:
        up = (upsampled or {}).get(arm)
        levels = {"test_accuracy": id_acc[arm], "test_balanced_accuracy": id_acc[arm],
                  "test_mnist_m_accuracy": ood[arm], "test_mnist_m_balanced_accuracy": ood[arm],
                  "test_digits_upsampled_accuracy": up if up is not None else 0.206,
                  "test_digits_upsampled_balanced_accuracy": up if up is not None else 0.2}
        settings.append(({"label": arm}, levels))
    out = rows(settings)
    if upsampled is None:  # the constant prediction: no jitter
        for r in out:
            r["test_digits_upsampled_accuracy"], r["test_digits_upsampled_balanced_accuracy"] = "0.206", "0.2"
    return out


def test_lp_ft_leaves_out_a_test_set_where_both_arms_are_at_chance():
    a = lp_ft.analyse
    held = a(_lp_ft({"LP": .8, "FT": .9, "LP-FT": .91}, {"LP": .5, "FT": .4, "LP-FT": .6}), HERE).verdicts
    assert [v.status for v in held] == [HELD] * 4
    assert "digits_upsampled left out: FT and LP at chance there" in held[1].figure
    # read with it, the constant 0.206 would pull every OOD difference towards 0
    failed = _lp_ft({"LP": .8, "FT": .7, "LP-FT": .71}, {"LP": .5, "FT": .6, "LP-FT": .45})
    assert statuses(a, failed) == [FAILED] * 4
    chance = dict.fromkeys(lp_ft.ARMS, .2)
    assert statuses(a, _lp_ft(chance, chance)) == [UNTESTABLE] * 4


def _domains(gain_by_similarity, sources: int):
    """Source domains s0..s{n-1} of similarity 0.90 + 0.01 i to the one target; fine-tune and linear probe gain
    `gain_by_similarity(i)` over scratch (0.5); the common extractor's own probe run is never ranked."""
    settings = [({"label": "scratch", "init": "scratch", "frozen_depth": 0}, {"test_accuracy": 0.5}),
                ({"label": "extractor (mnist 0-9)", "init": "source", "frozen_depth": "all"},
                 {"test_accuracy": 0.99, "domain_similarity": 0.5})]
    for i in range(sources):
        sim, gain = 0.90 + 0.01 * i, gain_by_similarity(i)
        settings += [({"label": f"s{i}", "init": "source", "frozen_depth": fd},
                      {"test_accuracy": 0.5 + gain, "domain_similarity": sim}) for fd in (0, "all")]
    return rows(settings)


def test_domain_similarity_ranks_sources_not_seeds():
    a = domain_similarity.analyse
    held = a(_domains(lambda i: 0.05 * i, 6), HERE).verdicts
    assert [v.status for v in held] == [HELD] * 2
    assert "n=6 source domains, each the mean of 3 seeds" in held[0].figure
    assert "permutation p = 0.00278" in held[0].figure
    assert statuses(a, _domains(lambda i: 0.3 - 0.05 * i, 6)) == [FAILED] * 2
    four = a(_domains(lambda i: 0.05 * i, 4), HERE).verdicts  # 4 units: p >= 2/24 whatever they show
    assert [v.status for v in four] == [UNTESTABLE] * 2 and "smallest permutation p is 0.083" in four[0].reason


def _imbalance(balanced: float, plain: float, fixes: float):
    return rows([({"label": "plain", "data.imbalance_ratio": 1.0}, balanced),
                 *[({"label": lab, "data.imbalance_ratio": r}, plain if lab == "plain" else fixes)
                   for r in (10.0, 100.0) for lab in ("plain", *class_imbalance.FIXES)]],
                metrics=("test_balanced_accuracy", "test_macro_f1"))


def test_class_imbalance():
    a, fixes = class_imbalance.analyse, len(class_imbalance.FIXES)
    assert statuses(a, _imbalance(.8, .4, .75)) == [HELD] * (1 + fixes)
    assert statuses(a, _imbalance(.8, .4, .45)) == [HELD] * 3 + [FAILED]  # re-weighting: a part; oversampling: most
    assert statuses(a, _imbalance(.8, .4, .35)) == [HELD] + [FAILED] * fixes
    assert statuses(a, _imbalance(.4, .8, .45)) == [FAILED] + [UNTESTABLE] * fixes  # no loss to recover
    assert statuses(a, _imbalance(.1, .1, .1)) == [UNTESTABLE] * (1 + fixes)  # 10 classes: chance 0.1


def _matrix(levels: dict):
    """levels[(size, domain)] = (feature extraction, fine-tuning, scratch)."""
    return rows([({"label": arm, "data.per_class": decision_matrix.SIZES[size],
                   "data.name": decision_matrix.DOMAINS[dom]}, acc)
                 for (size, dom), accs in levels.items() for arm, acc in zip(decision_matrix.ARMS, accs)])


def test_decision_matrix():
    a = decision_matrix.analyse
    held = {("small", "similar"): (.8, .7, .5), ("small", "different"): (.3, .4, .35),
            ("large", "similar"): (.9, .97, .95), ("large", "different"): (.6, .9, .85)}
    assert statuses(a, _matrix(held)) == [HELD] * 4
    failed = {("small", "similar"): (.6, .8, .5), ("small", "different"): (.99, .4, .35),
              ("large", "similar"): (.95, .9, .85), ("large", "different"): (.95, .9, .85)}
    assert statuses(a, _matrix(failed)) == [FAILED] * 4
    assert statuses(a, _matrix({cell: (.2, .2, .2) for cell in held})) == [UNTESTABLE] * 4


def _surgical(levels: dict):
    """levels[level][arm] = test accuracy on each of the level's targets (one LR)."""
    return rows([({"label": arm, "data.name": name, "data.classes": classes, "schedule.lr": 0.03},
                  {"test_accuracy": acc, "test_balanced_accuracy": acc, "val_accuracy": .9, "trainable_params": 1000})
                 for level, name, classes in surgical.SHIFTS.values() for arm, acc in levels[level].items()])


def test_surgical():
    a = surgical.analyse
    held = {"input": {"full": .80, "first": .85, "middle": .78, "last": .75, "head": .60},
            "feature": {"full": .90, "first": .85, "middle": .92, "last": .91, "head": .80},
            "label": {"full": .95, "first": .94, "middle": .95, "last": .96, "head": .98}}
    assert statuses(a, _surgical(held)) == [HELD] * 6
    failed = {"input": {"full": .80, "first": .70, "middle": .78, "last": .75, "head": .60},
              "feature": {"full": .90, "first": .85, "middle": .80, "last": .91, "head": .80},
              "label": {"full": .95, "first": .94, "middle": .95, "last": .96, "head": .90}}
    assert surgical_statuses(_surgical(failed)) == [FAILED] * 6
    assert surgical_statuses(_surgical({lv: dict.fromkeys(arms, .2) for lv, arms in held.items()})) == [UNTESTABLE] * 6


def _peft(vit: dict, resnet: dict):
    return rows([({"model.name": model, "strategy.name": m, "data.name": t}, {"test_accuracy": acc,
                  "test_balanced_accuracy": acc, "trainable_params": 1000})
                 for model, levels in (("vit_micro", vit), ("resnet_cifar", resnet))
                 for m, acc in levels.items() for t in ("mnist_subset", "mnist_m")])


def test_peft_vs_full():
    a = peft_vs_full.analyse
    held = _peft({"fine_tune": .80, "bitfit": .75, "vpt_shallow": .77, "vpt_deep": .85},
                 {"fine_tune": .9, "bitfit": .85})
    assert statuses(a, held) == [HELD] * 5
    failed = _peft({"fine_tune": .80, "bitfit": .85, "vpt_shallow": .77, "vpt_deep": .70},
                   {"fine_tune": .9, "bitfit": .95})
    assert peft_statuses(failed) == [FAILED] * 5
    chance = _peft(dict.fromkeys(("fine_tune", "bitfit", "vpt_shallow", "vpt_deep"), .2),
                   dict.fromkeys(("fine_tune", "bitfit"), .2))
    assert peft_statuses(chance) == [UNTESTABLE] * 5


# experiments whose verdict tests live in their own file (rows built to hold and to fail, statuses asserted)
OWN_FILES = {"transferability": "test_exp_transferability.py", "soups": "test_exp_soups.py",
             "regularizers": "test_exp_regularizers.py", "few_shot_curves": "test_exp_new.py",
             "better_models_transfer": "test_exp_new.py"}


def test_every_registered_experiment_has_a_verdict_test():
    tested = {"layer_transfer", "cyclical_lr", "data_size", "lp_ft", "domain_similarity", "class_imbalance",
              "decision_matrix", "surgical", "peft_vs_full"}
    here = pathlib.Path(__file__).parent
    elsewhere = {name for name, f in OWN_FILES.items() if (here / f).is_file() and name in (here / f).read_text()}
    assert set(registry.names()) <= tested | elsewhere, set(registry.names()) - tested - elsewhere


# ------------------------------------------------------------------------------- the README and the index

def test_readme_shows_ours_the_papers_and_the_outcome_old_summaries_included():
    v = verdict.greater("VPT-deep beats full FT", "vpt_deep - fine_tune", stats.mean_ci([0.002, 0.004, 0.003]),
                        delta=0.01, published="+0.030 (Table 1)")
    table = readme.verdict_table([v])
    assert "| claim | ours | published | outcome |" in table and "**equivalent within ±0.01**" in table
    old = {"claim": "c", "figure": "x = +0.1", "status": verdict.HELD}  # a summary.json written before `published`
    exp = registry.get("lp_ft")[0]
    index = readme.index(HERE, [exp], {"lp_ft": {"verdicts": [old, v.to_dict()]}})
    assert "1 held, 1 equivalent of 2" in index and "| lp_ft | VPT-deep beats full FT |" in index
    assert "+0.030 (Table 1)" in index and "lp_ft/README.md#what-differs-from-the-paper" in index


# ------------------------------------------------------------------------------------------ the source seed

def test_the_source_models_seed_follows_the_runs():
    base = common.with_source(common.small_base("s"))
    assert base.source.seed == C.RUN_SEED
    runs = [C.apply_overrides(base, {"seed": s}) for s in (0, 1)]
    assert [r.source.seed for r in runs] == [0, 1]
    assert C.config_hash(runs[0].source) != C.config_hash(runs[1].source)  # one source model per seed
    fixed = C.apply_overrides(base, {"seed": 1, "source.seed": 7})  # a source.seed >= 0 stays as set
    assert fixed.source.seed == 7
    plain = C.base_config()  # a user's config: copy_config(c) gives the source c's seed, fixed over a seed sweep
    plain.source = C.copy_config(plain)
    plain.init = "source"
    assert C.apply_overrides(plain, {"seed": 2}).source.seed == 0
    with pytest.raises(ConfigError, match="seed"):
        C.validate(C.apply_overrides(C.base_config(), {"seed": -1}))  # only a source's seed may be -1
    assert math.isclose(common.CHANCE, 0.2)
