"""launch.py end to end: a sweep writes its rows once, skips finished runs, survives a failing run, and
bad input stops it with one line before anything is written."""
import json
import pathlib

import pytest

import launch
from tl_research.analysis import results
from tl_research.core import timing
from conftest import transfer_config

SWEEP = """return product(axis("seed", [0, 1]), chain(product(axis("init", ["source"]), axis("frozen_depth", [0, "all"])),
               [{"init": "scratch", "frozen_depth": 0, "schedule.lr": 3e38}]))"""


@pytest.fixture
def config_file(tmp_path, data_dir):
    path = tmp_path / "mini.py"
    path.write_text(transfer_config("mini", data_dir, settings='c.report.series = ("init",)', sweep=SWEEP))
    return path


def test_sweep_writes_rows_table_plot_and_relaunch_skips(config_file, tmp_path, capsys):
    workdir = tmp_path / "w"
    assert launch.main(["--config", str(config_file), "--workdir", str(workdir), "--no_progress"]) == 0
    rows = results.read_rows(workdir / "results.csv")
    assert len(rows) == 6 and len({r["run_id"] for r in rows}) == 6
    done = [r for r in rows if r["status"] == "done"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(done) == 4 and len(failed) == 2  # the diverging scratch runs fail, the sweep goes on
    assert all("loss became" in r["reason"] for r in failed)
    for r in done:
        assert float(r["test_accuracy"]) > 0 and int(r["trainable_params"]) > 0
        assert {"seed", "init", "frozen_depth", "val_accuracy", "best_step", "wall_time"} <= set(r)
    assert (workdir / "table.md").read_text().count("±") >= 2
    assert (workdir / "plot.png").stat().st_size > 1000
    assert len(list((workdir / "sources").iterdir())) == 1  # one source model, shared by all runs
    out = capsys.readouterr().out
    assert out.count("test_accuracy=") == 4
    _check_timing(workdir, rows, out)
    # relaunch: nothing re-runs, nothing duplicated
    before = (workdir / "results.csv").read_text()
    assert launch.main(["--config", str(config_file), "--workdir", str(workdir), "--no_progress"]) == 0
    assert "6 of 6 runs already" in capsys.readouterr().out
    assert (workdir / "results.csv").read_text() == before
    assert json.loads((workdir / "timing.json").read_text())["runs"] == 7  # nothing trained: not rewritten


def _check_timing(workdir, rows, out):
    """DIR/timing.json: the six phases of the 7 runs this launch trained (the source, 4 done, 2 failed) plus
    `other` add up to their wall time, which is what the runs' own wall times add up to; one printed line per
    phase. No ratio between two timings is asserted: they move with the machine's load."""
    t = json.loads((workdir / "timing.json").read_text())
    assert t["runs"] == 7 and set(t["phases"]) == set(timing.PHASES)
    phases = sum(t["phases"].values())
    assert phases <= t["wall_s"] * 1.001 and phases + t["other"] == pytest.approx(t["wall_s"], abs=0.05)
    assert all(t["phases"][p] > 0 for p in ("data", "compilation", "training", "evaluation", "checkpoints")), t
    runs = [json.loads((workdir / r["run_id"] / "timing.json").read_text()) for r in rows]
    source = json.loads((next((workdir / "sources").iterdir()) / "timing.json").read_text())
    assert sum(r["wall_s"] for r in runs) + source["wall_s"] == pytest.approx(t["wall_s"], abs=0.05)
    for r, run in zip(rows, runs):  # every run recorded its timing and its row a wall time (no ratio of two
        assert run["wall_s"] > 0 and float(r["wall_time"]) > 0  # timings: they move with the machine's load)
    printed = [line.split() for line in out.splitlines() if line.endswith("%")]
    assert [row[0] for row in printed] == [*timing.PHASES, timing.OTHER], out


@pytest.mark.parametrize("args, needle", [
    (["--config.model.name=resnet9000"], "config.model.name='resnet9000' is not allowed; allowed: "),
    (["--config.frozen_depth=7"], "config.frozen_depth=7"),
    (["--config.data.name=no_such_dataset"], "config.data.name='no_such_dataset'"),
    (["--config.schedule.name=zigzag"], "config.schedule.name='zigzag'"),
    (["--config.data.classes=(3, 12)"], "config.data.classes=(3, 12)"),
    (["--config.model.widht=3"], "config.model.widht=3 is not allowed (no such key)"),
    (["--config.data.batch_size=0"], "config.data.batch_size=0"),
    (["--config.data.eval_batch_size=0"], "config.data.eval_batch_size=0"),
    (["--config.data.batch_size=100000"], "config.data.batch_size=100000 is not allowed; allowed: at most the"),
    (["--config.data.per_class=1000"], "config.data.per_class=1000"),
    (["--config.train.eval_every=-1"], "config.train.eval_every=-1"),
    (["--config.train.checkpoint_every=-2"], "config.train.checkpoint_every=-2"),
])
def test_bad_input_is_one_line_naming_the_key_and_writes_nothing(config_file, tmp_path, capsys, args, needle):
    workdir = tmp_path / "bad"
    code = launch.main(["--config", str(config_file), "--workdir", str(workdir), "--no_progress", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and needle in err and "allowed" in err
    assert not workdir.exists()


def test_a_workdir_of_another_config_is_not_overwritten(config_file, tmp_path, capsys):
    workdir = tmp_path / "w2"
    assert launch.main(["--config", str(config_file), "--workdir", str(workdir), "--no_progress",
                        "--config.train.steps=3"]) == 0
    before = (workdir / "results.csv").read_text()
    code = launch.main(["--config", str(config_file), "--workdir", str(workdir), "--no_progress",
                        "--config.train.steps=4"])
    assert code == 2 and "different config" in capsys.readouterr().err
    assert (workdir / "results.csv").read_text() == before


def test_bad_initial_weights_stop_the_sweep_before_the_source_trains(config_file, tmp_path, capsys):
    """An empty directory, weights of another width, and weights whose meta.json is cut short: one line
    naming config.init, before any training (the source model's included)."""
    from tl_research import config as C, models
    from tl_research.checkpoints import weights as weights_lib
    from tl_research.models.base import ModelMeta
    empty = tmp_path / "empty"
    empty.mkdir()
    other = C.base_config().model
    other.stage_sizes, other.width = (1, 1), 8  # the sweep's model has width 4
    wide = tmp_path / "wide"
    weights_lib.save_weights(wide, models.build(other, 5, 1, seed=0), ModelMeta())
    torn = tmp_path / "torn"
    other.width = 4
    weights_lib.save_weights(torn, models.build(other, 5, 1, seed=0), ModelMeta())
    (torn / "meta.json").write_text((torn / "meta.json").read_text()[:20])
    for init, needle in [(empty, "no weights found there"), (wide, "does not fit"), (torn, "JSONDecodeError")]:
        workdir = tmp_path / f"w_{init.name}"
        code = launch.main(["--config", str(config_file), "--workdir", str(workdir), "--no_progress",
                            f"--config.init={init}", "--config.frozen_depth=0"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        assert f"config.init='{init}'" in err and needle in err, err
        assert not workdir.exists()


def test_a_workdir_that_is_a_file_is_one_line(config_file, tmp_path, capsys):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    assert launch.main(["--config", str(config_file), "--workdir", str(not_a_dir), "--no_progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--workdir=" in err and "it is a file" in err


def test_a_workdir_is_refused_to_another_config_file_naming_the_one_it_was_made_with(config_file, tmp_path,
                                                                                      capsys):
    workdir = tmp_path / "w3"
    assert launch.main(["--config", str(config_file), "--workdir", str(workdir), "--no_progress",
                        "--config.train.steps=2", "--config.seed=0", "--config.frozen_depth=0"]) == 0
    before = (workdir / "results.csv").read_text()
    other = tmp_path / "other.py"  # another sweep: other run ids, so no run's config.json is in the way
    other.write_text(config_file.read_text().replace('c.name = "mini"', 'c.name = "other"'))
    code = launch.main(["--config", str(other), "--workdir", str(workdir), "--no_progress",
                        "--config.train.steps=2", "--config.seed=5"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "config 'mini'" in err, err
    assert (workdir / "results.csv").read_text() == before


def test_a_workdir_made_before_a_key_existed_resumes_when_the_key_keeps_the_old_behaviour(
        config_file, tmp_path, capsys, monkeypatch):
    """A key added to base_config() after a workdir was made (config.INTRODUCED, with the value that trains
    what the code trained before) neither refuses the workdir nor retrains its source model."""
    import json
    from tl_research import config as config_lib
    workdir = tmp_path / "old"
    args = ["--config", str(config_file), "--workdir", str(workdir), "--no_progress", "--config.train.steps=2"]
    assert launch.main(args) == 0
    before = (workdir / "results.csv").read_text()

    def without_key(tree):  # the files as a version without train.log_every wrote them
        tree.get("train", {}).pop("log_every", None)
        if isinstance(tree.get("source"), dict):
            without_key(tree["source"])
        return tree
    for path in [*workdir.glob("*/config.json"), *workdir.glob("sources/*/config.json")]:
        path.write_text(json.dumps(without_key(json.loads(path.read_text()))))
    claim = json.loads((workdir / "workdir.json").read_text())
    claim["fixed"].pop("train.log_every")
    claim["fixed"].pop("source.train.log_every")
    (workdir / "workdir.json").write_text(json.dumps(claim))
    capsys.readouterr()
    assert launch.main(args) == 2 and "different config" in capsys.readouterr().err  # today: another config

    from tl_research.config import run_identity  # where identity() reads INTRODUCED
    monkeypatch.setattr(run_identity, "INTRODUCED", {**config_lib.INTRODUCED, "train.log_every": 3})
    (source,) = (workdir / "sources").iterdir()
    cfg = config_lib.ml_collections.ConfigDict(json.loads((source / "config.json").read_text()))
    cfg.train.log_every = 3
    source.rename(source.with_name(config_lib.config_hash(cfg)))  # the hash the older version gave it
    assert config_lib.config_hash(cfg) != source.name
    assert launch.main(args) == 0
    out = capsys.readouterr().out
    assert "6 of 6 runs already" in out and "training source model" not in out
    assert (workdir / "results.csv").read_text() == before
