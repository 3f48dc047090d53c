"""The domain_similarity column of a sweep (report.similarity) and the command: Cui et al.'s similarity on
the source model's features, 1 for the source's own training data, measured once and cached in the workdir."""
import json
import math

import pytest

import launch
from tl_research.analysis import results
from tl_research.cli import similarity_command
from conftest import transfer_config

SETTINGS = """
c.frozen_depth = "all"
c.report.x = "data.classes"
c.report.series = ("init",)
c.report.similarity = True
c.report.tables = ("similarity", "gain", "mean")
c.report.baseline = "init=scratch"
"""
# the source's own data (classes 0-4, its seed) and new classes; transfer and scratch
SWEEP = """return product(axis("data.classes", [(0, 1, 2, 3, 4), (5, 6, 7, 8, 9)]),
               [{"init": "source"}, {"init": "scratch", "frozen_depth": 0}])"""

SAME, OTHER = "(0, 1, 2, 3, 4)", "(5, 6, 7, 8, 9)"


@pytest.fixture
def config_file(tmp_path, data_dir):
    path = tmp_path / "sim.py"
    path.write_text(transfer_config("sim", data_dir, settings=SETTINGS, sweep=SWEEP))
    return path


def test_sweep_column_is_cached_and_the_command_agrees(config_file, tmp_path, capsys):
    workdir = tmp_path / "w"
    args = ["--config", str(config_file), "--workdir", str(workdir), "--no_progress"]
    assert launch.main([*args, "--config.report.similarity=False", "--config.report.tables=('mean',)"]) == 0
    assert "domain_similarity" not in results.read_rows(workdir / "results.csv")[0]
    # switched on after the sweep: measured for the finished runs, nothing retrained
    assert launch.main(args) == 0
    out = capsys.readouterr().out
    assert "4 of 4 runs already" in out and "2 (source, target) pair(s) measured" in out
    rows = {(r["data.classes"], r["init"]): r for r in results.read_rows(workdir / "results.csv")}
    same, other = float(rows[SAME, "source"]["domain_similarity"]), float(rows[OTHER, "source"]["domain_similarity"])
    assert same == pytest.approx(1.0, abs=1e-6)  # identical class means: EMD 0
    assert 0 < other < same
    assert rows[SAME, "scratch"]["domain_similarity"] == rows[OTHER, "scratch"]["domain_similarity"] == ""
    cached = sorted((workdir / "similarity").glob("*.json"))
    assert len(cached) == 2  # one per (source, target data)
    table = (workdir / "table.md").read_text()
    assert "by domain similarity" in table and "gain over init=scratch" in table
    first_line = [line for line in table.splitlines() if line.startswith(f"| {SAME}")][0]
    assert "| 1.0000 |" in first_line  # most similar first

    # a relaunch reads the cache: nothing measured, files untouched, the column kept
    stamps = [p.stat().st_mtime_ns for p in cached]
    assert launch.main(args) == 0
    assert "pair(s) measured" not in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in cached] == stamps
    again = {(r["data.classes"], r["init"]): r for r in results.read_rows(workdir / "results.csv")}
    assert float(again[OTHER, "source"]["domain_similarity"]) == other

    # the command reads the same cache; gamma is applied on reading
    out = tmp_path / "sims.json"
    assert similarity_command.main(["--config", str(config_file), "--workdir", str(workdir), "--gamma", "0.1",
                                   "--out", str(out)]) == 0
    assert "0 measured, 2 from" in capsys.readouterr().out
    measured = {tuple(r["target"]["classes"]): r for r in json.loads(out.read_text())}
    far = measured[(5, 6, 7, 8, 9)]
    assert math.exp(-0.01 * far["emd"]) == pytest.approx(other, abs=1e-6)
    assert far["similarity"] == pytest.approx(math.exp(-0.1 * far["emd"]))

    # --source: the same model named by its directory, measured afresh into another workdir: the same EMDs
    source_dir = next((workdir / "sources").iterdir())
    assert similarity_command.main(["--config", str(config_file), "--workdir", str(tmp_path / "w2"),
                                   "--source", str(source_dir)]) == 0
    assert "2 measured, 0 from" in capsys.readouterr().out
    fresh = {tuple(r["target"]["classes"]): r for r in json.loads((tmp_path / "w2" / "similarity.json").read_text())}
    assert fresh[(5, 6, 7, 8, 9)]["emd"] == pytest.approx(far["emd"], rel=1e-5)

    # report.similarity_features: one common extractor (here the scratch run of classes 5-9, relative to the
    # workdir) measures every pair: nothing retrained, two new pairs, the source's own data still at 1
    extractor = rows[OTHER, "scratch"]["run_id"]
    assert launch.main([*args, f"--config.report.similarity_features={extractor}"]) == 0
    assert "4 of 4 runs already" in (out := capsys.readouterr().out) and "2 (source, target) pair(s) measured" in out
    common = {(r["data.classes"], r["init"]): r for r in results.read_rows(workdir / "results.csv")}
    assert float(common[SAME, "source"]["domain_similarity"]) == pytest.approx(1.0, abs=1e-6)
    measured = [json.loads(p.read_text()) for p in (workdir / "similarity").glob("*.json")]
    emd = next(m["emd"] for m in measured if m["features"] == str((workdir / extractor / "weights").absolute())
               and m["target"]["classes"] == [5, 6, 7, 8, 9])
    assert float(common[OTHER, "source"]["domain_similarity"]) == pytest.approx(math.exp(-0.01 * emd), abs=1e-6)
    assert abs(emd - far["emd"]) > 1e-3  # another network's features: another distance
    # the reference: the extractor's class means of both training sets, and their EMD, computed here
    from tl_research.analysis import domain_similarity as ds
    from tl_research.checkpoints import weights as weights_lib
    from tl_research.data import pipeline
    from tl_research.evals import similarity
    from tl_research.run.features import FeatureExtractor
    net = ds.source_from_run_dir(workdir / extractor)
    weights, meta = weights_lib.load_weights(net.weights_dir)
    fx = FeatureExtractor(net.model, weights, meta, 1)
    cfg = json.loads((workdir / rows[OTHER, "source"]["run_id"] / "config.json").read_text())
    src = ds.source_of(__import__("ml_collections").ConfigDict(cfg), workdir)
    means = [fx.class_means(d, d.train, 64, 1) for d in (pipeline.load(src.data, meta, seed=src.seed),
                                                          pipeline.load(net.data, meta, seed=int(cfg["seed"])))]
    assert emd == pytest.approx(similarity.earth_movers_distance(*means[0], *means[1]), rel=1e-4)


@pytest.mark.parametrize("args, needle", [
    (["--config.init=torch:{weights}", "--config.report.tables=('mean',)"],
     "config.report.similarity=True is not allowed (init=torch:"),
    (["--config.report.tables=('similarity',)", "--config.report.similarity=False"], "config.report.tables="),
    (["--config.report.baseline=init=pretrained"], "config.report.baseline='init=pretrained'"),
])
def test_bad_report_settings_stop_before_any_work(config_file, tmp_path, capsys, args, needle):
    weights = tmp_path / "resnet.pth"
    weights.write_bytes(b"")
    workdir = tmp_path / "bad"
    assert launch.main(["--config", str(config_file), "--workdir", str(workdir), "--no_progress",
                        *[a.format(weights=weights) for a in args]]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and len(err.splitlines()) == 1
    assert not (workdir / "results.csv").exists()


def test_command_refuses_a_source_without_its_run(config_file, tmp_path, capsys):
    assert similarity_command.main(["--config", str(config_file), "--workdir", str(tmp_path / "w"),
                                   "--source", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--source=" in err and "run directory" in err
    assert similarity_command.main(["--config", str(config_file), "--gamma", "-1"]) == 2
    assert "--gamma=-1.0" in capsys.readouterr().err
