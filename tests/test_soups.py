"""Model soups, WiSE-FT and the path between runs (tl_research/analysis/soups.py, `python -m tl_research.soup`)
on a real sweep's workdir: a source on digits 0-4, then two fine-tuned seeds and a linear probe on digits 5-9.

The evaluations are checked against the runs' own records (result.json, written by the trainer at the end of
each run): a one-ingredient soup is that run, WiSE-FT's endpoints are the probe and the fine-tuned run."""
import json

import numpy as np
import pytest

from tl_research import config as C
from tl_research.analysis import soups
from tl_research.cli import soup as soup_cli
from tl_research.sweeps import sweep

from conftest import tiny


@pytest.fixture(scope="module")
def workdir(data_dir, tmp_path_factory):
    base = tiny(data_dir, **{"data.classes": (5, 6, 7, 8, 9), "train.steps": 8, "schedule.lr": 0.05})
    source = C.copy_config(base)
    source.data.classes = (0, 1, 2, 3, 4)
    base.init, base.source = "source", source
    points = [{"seed": 0}, {"seed": 1}, {"seed": 0, "frozen_depth": "all"}]
    d = tmp_path_factory.mktemp("soups") / "sweep"
    rows = sweep.run_sweep(base, points, d, progress=False, echo=lambda *_: None)
    assert all(r["status"] == "done" for r in rows), rows
    return d


def _recorded(d, run_id):
    return json.loads((d / run_id / "result.json").read_text())["metrics"]


def test_soups_wise_ft_and_path_against_the_runs_records(workdir, capsys):
    assert soup_cli.main([str(workdir)]) == 0
    rows = {(r["model"], r["alpha"]): r for r in soups.make(workdir, echo=lambda *_: None)}  # from evals.json
    ft = sorted(r.run_id for r in soups.runs(workdir) if r.trained_units)
    probe = next(r.run_id for r in soups.runs(workdir) if not r.trained_units)
    assert len(ft) == 2
    for rid in ft:  # each ingredient re-evaluated equals what its run recorded
        rec, got = _recorded(workdir, rid), rows[(f"run {rid}", "")]
        for k in ("val_accuracy", "test_accuracy", "val_loss"):
            assert got[k] == pytest.approx(rec[k], abs=1e-6), k
    wise = {a: r for (m, a), r in rows.items() if m.startswith("wise_ft")}
    best = max(ft, key=lambda rid: (_recorded(workdir, rid)["val_accuracy"], rid))
    assert wise[0.0]["test_accuracy"] == pytest.approx(_recorded(workdir, probe)["test_accuracy"], abs=1e-6)
    assert wise[1.0]["test_loss"] == pytest.approx(_recorded(workdir, best)["test_loss"], abs=1e-6)
    assert wise[0.0]["test_loss"] != pytest.approx(wise[1.0]["test_loss"], abs=1e-3)  # two different models
    path = [r for (m, _), r in sorted(rows.items(), key=lambda kv: str(kv[0])) if m.startswith("path")]
    assert len(path) == len(soups.ALPHAS)
    uniform = rows[("uniform soup", "")]
    assert uniform["members"] == 2 and uniform["val_loss"] not in {rows[(f"run {r}", "")]["val_loss"] for r in ft}
    table = (workdir / "soups" / "soups.md").read_text()
    assert "greedy soup" in table and "WiSE-FT, alpha 0.5" in table and "Loss barrier" in table


def test_a_soup_of_one_run_is_that_run_and_the_averages_are_the_formulas(workdir):
    ing = soups.runs(workdir, ["seed=1", "frozen_depth=0"])
    assert len(ing) == 1
    w = ing[0].weights()
    one = soups.average([w])
    assert all(np.array_equal(one[c][k], w[c][k]) for c in w for k in w[c])
    a, b = ({"params": {"x": np.array([1.0, 2.0])}}, {"params": {"x": np.array([3.0, 6.0])}})
    np.testing.assert_allclose(soups.interpolate(a, b, 0.25)["params"]["x"], [1.5, 3.0])
    assert soups.barrier([1.0, 3.0, 1.0], (0.0, 0.5, 1.0)) == 2.0
    # greedy keeps an ingredient only when the held-out score does not fall
    scores = {("a",): 0.5, ("a", "b"): 0.4, ("a", "c"): 0.6}
    assert soups.greedy(["a", "b", "c"], lambda m: scores[tuple(m)]) == ["a", "c"]


def test_runs_that_cannot_be_averaged_are_refused_in_one_line(workdir, tmp_path, capsys):
    assert soup_cli.main([str(workdir), "--select", "seed=7"]) == 2
    assert "no run matches" in capsys.readouterr().err
    other = tmp_path / "w"
    other.mkdir()
    for rid in ("seed-0", "seed-1"):
        (other / rid).symlink_to(workdir / rid)
    cfg = json.loads((workdir / "seed-1" / "config.json").read_text())
    cfg["model"]["width"] = 8  # recorded as another architecture
    (other / "seed-1").unlink()
    (other / "seed-1").mkdir()
    for f in ("result.json", "weights"):
        (other / "seed-1" / f).symlink_to(workdir / "seed-1" / f)
    (other / "seed-1" / "config.json").write_text(json.dumps(cfg))
    assert soup_cli.main([str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "differs in its model" in err


def test_bn_recompute_reestimates_mixtures_only_and_a_stored_make_builds_no_model(workdir, monkeypatch):
    """bn_stats="recompute": every run is evaluated as trained (the same stored evaluation as "average"), a
    mixture under its own key with BatchNorm statistics from the training split; the re-estimated statistics
    do not depend on the ones the weights carried (momentum 0: each running statistic is replaced). With every
    evaluation stored, make builds no model (loop.Training is never called)."""
    rows = soups.make(workdir, wise=False, path=False, bn_stats="recompute", echo=lambda *_: None)
    plain = {r["model"]: r for r in soups.make(workdir, wise=False, path=False,  
                                               echo=lambda *_: None)}
    got = {r["model"]: r for r in rows}
    done = json.loads((workdir / "soups" / "evals.json").read_text())
    assert sum(k.endswith(" bn-recompute") for k in done) == 1  # the uniform soup of the two runs
    for model, r in got.items():
        if model.startswith("run "):
            assert r == plain[model]
    assert got["uniform soup"]["val_loss"] != plain["uniform soup"]["val_loss"]
    assert (workdir / "soups" / "soups_bn_recompute.csv").is_file() and (workdir / "soups" / "soups.csv").is_file()
    ing = soups.runs(workdir, ["frozen_depth=0"])
    ev = soups.Evaluations(ing[0].config, workdir / "soups", workdir, "recompute")
    try:
        w = soups.average([i.weights() for i in ing])
        zeroed = {**w, "batch_stats": {k: np.zeros_like(v) for k, v in w["batch_stats"].items()}}
        a, b = ev.recompute_stats(w)["batch_stats"], ev.recompute_stats(zeroed)["batch_stats"]
        assert a.keys() == w["batch_stats"].keys()
        assert all(np.allclose(a[k], b[k], atol=1e-6) for k in a)
        assert not all(np.allclose(a[k], w["batch_stats"][k], atol=1e-3) for k in a)
    finally:
        ev.close()
    from tl_research.run import loop
    monkeypatch.setattr(loop, "Training", lambda *a, **kw: (_ for _ in ()).throw(AssertionError("built")))
    again = soups.make(workdir, wise=False, path=False, bn_stats="recompute", echo=lambda *_: None)
    assert again == rows
