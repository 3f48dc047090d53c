"""The experiments' machinery: intervals and verdicts follow the numbers (a claim the numbers contradict reads
"did not hold"), and the command runs a tiny experiment, resumes it, and writes its README, plot and index."""
import math
import pathlib

import pytest

from tl_research.experiments import __main__ as cli
from tl_research.experiments import data_size, layer_transfer, lp_ft, runner, stats, verdict
from tl_research.experiments.spec import Analysis, Experiment

CONFIG = '''
from tl_research.config import base_config, axis, product
def get_config():
    c = base_config()
    c.name = "tiny_experiment"
    c.data.name = "sklearn_digits"
    c.data.data_dir = {data_dir!r}
    c.data.classes = (0, 1, 2)
    c.data.batch_size = 32
    c.data.eval_batch_size = 64
    c.model.stage_sizes = (1,)
    c.model.width = 4
    c.train.steps = 3
    c.train.eval_every = 3
    c.train.log_every = 3
    c.wandb.mode = "disabled"
    c.report.x = "schedule.lr"
    return c
def get_sweep():
    return product(axis("seed", [0, 1]), axis("schedule.lr", [0.05, 1e-6]))
'''


def _analyse(rows, workdir):
    from tl_research.experiments import tables
    df = tables.done(rows)
    trained, frozen = (stats.per_seed(df, "test_accuracy", {"schedule.lr": lr}) for lr in (0.05, 1e-6))
    v = verdict.greater("training beats not training", "lr 0.05 - lr 1e-6", stats.paired_difference(trained, frozen))
    return Analysis([tables.ci_table(df, "test_accuracy", [], "schedule.lr", "Test accuracy")], [v],
                    lambda path: pathlib.Path(path).write_bytes(b"png"))


TINY = Experiment(name="tiny", title="Tiny", question="q", published="p", differences="d", claim="c",
                  analyse=_analyse)


def test_student_t_interval_and_pairing():
    e = stats.mean_ci([1.0, 2.0, 3.0])  # t_{0.975, 2} = 4.303, s = 1
    assert e.mean == 2.0 and e.n == 3
    assert e.high - e.mean == pytest.approx(4.3027 / math.sqrt(3), rel=1e-4)
    import pandas as pd
    a, b = pd.Series({0: 0.9, 1: 0.8, 2: 0.7}), pd.Series({0: 0.5, 1: 0.4, 2: 0.3, 3: 0.0})
    d = stats.paired_difference(a, b)  # seed 3 has no partner: left out
    assert d.n == 3 and d.mean == pytest.approx(0.4) and d.low == pytest.approx(0.4) and d.paired


def test_verdict_reads_held_did_not_hold_and_within_noise():
    up, down, straddle = (stats.mean_ci(v) for v in ([0.1, 0.12, 0.11], [-0.1, -0.12, -0.11], [0.1, -0.1, 0.02]))
    assert verdict.greater("c", "x", up).status == verdict.HELD
    assert verdict.greater("c", "x", down).status == verdict.FAILED
    assert verdict.greater("c", "x", straddle).status == verdict.NOISE
    assert verdict.less("c", "x", down).status == verdict.HELD
    assert verdict.less("c", "x", up).status == verdict.FAILED
    assert verdict.greater("c", "x", up, threshold=0.5).status == verdict.FAILED
    assert verdict.greater("c", "x", stats.mean_ci([0.3])).status == verdict.NOISE  # one seed: no interval
    assert verdict.greater("c", "x", stats.mean_ci([])).status == verdict.NOT_RUN
    assert verdict.greater("c", "x", down).line().startswith("DID NOT HOLD: c: x = -0.110 [95% CI")


def _rows(acc):
    """Synthetic results rows: acc maps a setting (dict) to its accuracy per seed."""
    return [{"run_id": f"{i}-{s}", "status": "done", "seed": str(s), **{k: str(v) for k, v in where.items()},
             **{k: str(v) for k, v in values[s].items()}}
            for i, (where, values) in enumerate(acc) for s in range(3)]


def _data_size_rows(fine_tune_small: float):
    jitter = (0.0, 0.01, -0.01)
    acc = []
    for label, small, large in (("linear probe", 0.5, 0.80), ("fine-tune", fine_tune_small, 0.95),
                                ("scratch", 0.30, 0.94)):
        for k, level in ((1, small), (350, large)):
            acc.append(({"label": label, "data.per_class": k},
                        [{"test_accuracy": level + j} for j in jitter]))
    return _rows(acc)


def test_data_size_verdicts_follow_the_numbers():
    holds = data_size.analyse(_data_size_rows(fine_tune_small=0.45), pathlib.Path("."))
    assert [v.status for v in holds.verdicts] == [verdict.HELD] * 3
    fails = data_size.analyse(_data_size_rows(fine_tune_small=0.20), pathlib.Path("."))
    assert fails.verdicts[0].status == verdict.FAILED  # the gain grows with data here: the claim fails
    assert "did not hold" in fails.verdicts[0].line().lower()


def test_layer_transfer_verdicts_follow_the_numbers():
    def rows(anb_top):
        acc = [({"label": "AnB", "frozen_depth": n}, [{"test_accuracy": v + j} for j in (0, .01, .02)])
               for n, v in {1: .95, 2: .94, 3: .93, 4: anb_top}.items()]
        acc += [({"label": "BnB", "frozen_depth": n}, [{"test_accuracy": .95 + j} for j in (0, .02, .01)])
                for n in (1, 2, 3, 4)]
        acc += [({"label": lab, "frozen_depth": 0}, [{"test_accuracy": v + j} for j in (0, .01, .02)])
                for lab, v in (("AnB+", .96), ("BnB+", .96), ("baseB", .94))]
        return _rows(acc)
    held = layer_transfer.analyse(rows(0.80), pathlib.Path(".")).verdicts
    assert [v.status for v in held] == [verdict.HELD, verdict.HELD, verdict.NOISE, verdict.HELD]
    failed = layer_transfer.analyse(rows(0.99), pathlib.Path(".")).verdicts
    assert failed[0].status == verdict.FAILED and failed[3].status == verdict.FAILED


def test_lp_ft_reads_the_extra_test_sets():
    def arm(label, id_acc, ood):
        return ({"label": label}, [{"test_accuracy": id_acc + j, "test_mnist_m_accuracy": ood + j,
                                    "test_mnist_m_balanced_accuracy": 0.0, "test_mnist_inverted_accuracy": ood - j}
                                   for j in (0, .01, -.01)])
    rows = _rows([arm("LP", .80, .50), arm("FT", .90, .40), arm("LP-FT", .91, .60)])
    out = lp_ft.analyse(rows, pathlib.Path("."))
    assert [v.status for v in out.verdicts] == [verdict.HELD] * 4
    assert "mnist_m" in out.tables[0] and "balanced" not in out.tables[0]


def test_command_runs_resumes_and_writes_the_readme(tmp_path, data_dir, capsys):
    root = tmp_path / "experiments"
    (root / "tiny").mkdir(parents=True)
    (root / "tiny" / "config.py").write_text(CONFIG.format(data_dir=data_dir))
    workdir = tmp_path / "w"
    out = runner.run(TINY, [TINY], root=root, workdir=workdir, echo=print)
    assert len(out.verdicts) == 1
    readme = (root / "tiny" / "README.md").read_text()
    assert "Test accuracy" in readme and "schedule.lr=0.05" in readme and "[95% CI" in readme
    assert "empty workdir, on a shared" in readme  # no source model to count in its wall time
    assert (root / "tiny" / "plot.png").exists() and "[tiny](tiny/README.md)" in (root / "README.md").read_text()
    first = runner.read_summary(root / "tiny")
    assert first["wall_time_s"] > 0 and first["verdicts"][0]["status"] in (verdict.HELD, verdict.FAILED, verdict.NOISE)
    capsys.readouterr()
    runner.run(TINY, [TINY], root=root, workdir=workdir, echo=print)  # resumes: nothing left to train
    assert "4 of 4 runs already" in capsys.readouterr().out
    assert runner.read_summary(root / "tiny")["wall_time_s"] == first["wall_time_s"]
    assert (root / "tiny" / "README.md").read_text() == readme  # deterministic from the same results
    runner.report(TINY, [TINY], root=root, workdir=workdir, wall_time=12.0, echo=print)
    assert "0 min 12 s" in (root / "tiny" / "README.md").read_text()


def test_command_line_refuses_bad_input_in_one_line(tmp_path, capsys):
    assert cli.main(["run", "no_such_experiment"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "layer_transfer" in err
    assert cli.main(["report", "lp_ft", "--workdir", str(tmp_path / "empty")]) == 2
    assert "holds no results" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["frobnicate"])
    assert e.value.code == 2
    assert cli.main(["list"]) == 0 and "decision_matrix" in capsys.readouterr().out


def test_line_plot_draws_each_reference_level_in_its_own_colour(tmp_path, monkeypatch):
    from tl_research.experiments import plots
    seen = {}
    monkeypatch.setattr(plots, "_finish", lambda ax, fig, *a: seen.update(ax=ax))
    est = lambda *v: stats.mean_ci(list(v))
    plots.lines({"AnB": [(1, est(.9, .92)), (2, est(.8, .82))]}, tmp_path / "p.png", xlabel="n", ylabel="acc",
                title="t", references={"baseB": est(.7, .72), "AnB+": est(.95, .96), "empty": est()})
    levels = [line for line in seen["ax"].lines if line.get_label() in ("baseB", "AnB+", "empty")]
    assert [line.get_label() for line in levels] == ["baseB", "AnB+"]  # a level without runs is left out
    colours = {line.get_color() for line in levels} | {seen["ax"].containers[0].lines[0].get_color()}
    assert len(colours) == 3 and levels[0].get_linestyle() != levels[1].get_linestyle()
    assert all(float(t).is_integer() for t in seen["ax"].get_xticks())  # n = 1, 2: no tick at 1.5
    plots.lines({"FT": [(1, est(.5, .6)), (10, est(.8, .82)), (350, est(.9, .92))]}, tmp_path / "q.png", xlabel="k",
                ylabel="acc", title="t", logx=True)
    assert [t.get_text() for t in seen["ax"].get_xticklabels()] == ["1", "10", "350"]  # not 10^0, 10^1
