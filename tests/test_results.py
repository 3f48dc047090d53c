"""The report's extra tables on hand-made results rows: gains over a baseline paired by seed, targets ordered
by domain similarity, and the report keys checked before any run."""
import pytest

from tl_research import config as config_lib
from tl_research.analysis import results
from tl_research.core.errors import ConfigError


def _csv(row: dict) -> dict:
    return {k: str(v) for k, v in row.items()}  # as results.read_rows gives them


def _row(init, per_class, seed, acc, frozen_depth=0):
    return _csv({"run_id": f"{init}-{frozen_depth}-{per_class}-{seed}", "status": "done", "init": init,
                 "frozen_depth": frozen_depth, "data.per_class": per_class, "seed": seed, "test_accuracy": acc,
                 "train.steps": 40 + 2 * per_class})  # zipped with the data size


def _report(**kw):
    r = config_lib.base_config().report
    r.update(kw)
    return r


def test_gain_is_paired_by_seed_and_x_and_a_single_x_baseline_is_a_level():
    rows = [_row("scratch", 1, 0, 0.20), _row("scratch", 1, 1, 0.30), _row("scratch", 10, 0, 0.60),
            _row("scratch", 10, 1, 0.70),
            _row("source", 1, 0, 0.50, "all"), _row("source", 1, 1, 0.50, "all"),  # gains .30 and .20
            _row("source", 10, 0, 0.65, "all"), _row("source", 10, 1, 0.70, "all"),  # gains .05 and .00
            _row("source", 1, 0, 0.35, 0), {**_row("source", 10, 0, 0.9), "status": "failed"}]
    g = results.gains(rows, "data.per_class", ("init",), "test_accuracy", "init=scratch")
    cells = {(r["frozen_depth"], r["data.per_class"]): (r["mean"], r["std"], r["count"]) for _, r in g.iterrows()}
    assert cells[("all", 1)] == pytest.approx((0.25, 0.1 / 2 ** 0.5, 2))
    assert cells[("all", 10)] == pytest.approx((0.025, 0.05 / 2 ** 0.5, 2))
    assert cells[("0", 1)] == pytest.approx((0.15, 0.0, 1))  # the failed run is left out
    assert len(cells) == 3 and set(g["init"]) == {"source"}
    assert "train.steps" not in g and "train.steps" not in results.summarise(rows, "data.per_class", ("init",),
                                                                             "test_accuracy")
    md = results.to_markdown(g, "test_accuracy gain over init=scratch", "data.per_class")
    assert "| source | all | 0.250 ± 0.071 (2) | 0.025 ± 0.035 (2) |" in md

    # a reference measured at one x only (baseB at frozen depth 0) is the baseline at every x, still per seed
    ref = [_row("scratch", 5, 0, 0.5), _row("scratch", 5, 1, 0.7)] + [
        _row("source", 5, s, 0.6 + 0.2 * s, depth) for s in (0, 1) for depth in (0, 1, 2)]
    g = results.gains(ref, "frozen_depth", ("init",), "test_accuracy", "init=scratch")
    assert g["mean"].tolist() == pytest.approx([0.1] * 3) and g["std"].tolist() == pytest.approx([0.0] * 3)


def test_similarity_table_orders_targets_and_correlates():
    rows = []
    for name, sim, lp, ft in [("mnist_m", 0.90, 0.40, 0.80), ("mnist_subset", 0.99, 0.95, 0.97),
                              ("mnist_inverted", 0.93, 0.50, 0.90), ("digits_upsampled", 0.97, 0.70, 0.85)]:
        for seed in (0, 1):
            for depth, acc in (("all", lp), (0, ft)):
                rows.append(_csv({"run_id": f"{name}-{depth}-{seed}", "status": "done", "data.name": name,
                                  "frozen_depth": depth, "seed": seed, "test_accuracy": acc + 0.01 * seed,
                                  "domain_similarity": sim}))
    t = results.by_similarity(rows, "data.name", ("frozen_depth",), "test_accuracy")
    assert t["data.name"].tolist()[:4] == ["mnist_subset", "digits_upsampled", "mnist_inverted", "mnist_m"]
    assert t["domain_similarity"].tolist()[:4] == ["0.9900", "0.9700", "0.9300", "0.9000"]
    assert t["frozen_depth=all"].tolist()[:4] == ["0.955 ± 0.007 (2)", "0.705 ± 0.007 (2)", "0.505 ± 0.007 (2)",
                                                  "0.405 ± 0.007 (2)"]
    spearman = t[t["data.name"].str.startswith("Spearman")].iloc[0]
    assert spearman["frozen_depth=all"] == "+1.00"  # the probe's accuracy follows the similarity exactly
    assert spearman["frozen_depth=0"] == "+0.80"  # fine-tuning: ranks 4, 2, 3, 1 against 4, 3, 2, 1
    md = results.similarity_markdown(t, "data.name", "test_accuracy")
    assert md.index("| mnist_subset |") < md.index("| mnist_m |")


def test_report_keys_are_checked_and_write_report_writes_the_listed_tables(tmp_path):
    points = [{"init": "scratch"}, {"init": "source"}]
    results.check_report(_report(tables=("gain", "mean"), baseline="init=scratch"), points)
    bad = [(dict(tables=("mean", "median")), "report.tables"),
           (dict(tables=()), "report.tables"),
           (dict(tables=("similarity",)), "report.tables"),  # without report.similarity
           (dict(tables=("gain",), baseline="scratch"), "report.baseline"),
           (dict(tables=("gain",), baseline="seed=0"), "report.baseline"),  # not a series key
           (dict(tables=("gain",), baseline="init=imagenet"), "report.baseline")]  # not a swept value
    for fields, key in bad:
        with pytest.raises(ConfigError, match=rf"config\.{key}="):
            results.check_report(_report(**fields), points)

    rows = [_row("scratch", 1, 0, 0.2), _row("source", 1, 0, 0.5, "all")]
    report = _report(x="data.per_class", series=("init",), tables=("gain", "mean"), baseline="init=scratch")
    md = results.write_report(tmp_path, report, rows)
    assert md.index("gain over init=scratch") < md.index("test_accuracy: mean ± std")
    assert (tmp_path / "table.md").read_text() == md
    assert "gain over init=scratch" in (tmp_path / "table.tex").read_text()
    # the default report is the mean table alone, as before
    md = results.write_report(tmp_path, _report(x="data.per_class", series=("init",)), rows)
    assert md.startswith("test_accuracy: mean ± std") and "gain" not in md
