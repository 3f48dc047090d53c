"""The experiments' machinery: intervals and verdicts follow the numbers (a claim the numbers contradict reads
"did not hold"), and the command runs a tiny experiment, resumes it, and writes its README, plot and index."""
import dataclasses
import json
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
    assert verdict.greater("c", "x", stats.mean_ci([0.3])).status == verdict.NOT_TESTABLE  # one seed: no interval
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
    def rows(anb_top):  # by n = transfer_depth (the units copied), baseB at -1 (the B network itself)
        acc = [({"label": "AnB", "transfer_depth": n}, [{"test_accuracy": v + j} for j in (0, .01, .02)])
               for n, v in {1: .95, 2: .94, 3: .93, 4: anb_top}.items()]
        acc += [({"label": "BnB", "transfer_depth": n}, [{"test_accuracy": .95 + j} for j in (0, .02, .01)])
                for n in (1, 2, 3, 4)]
        acc += [({"label": lab, "transfer_depth": n}, [{"test_accuracy": v + j} for j in (0, .01, .02)])
                for lab, v in (("AnB+", .96), ("BnB+", .96)) for n in (1, 2, 3, 4)]
        acc += [({"label": "baseB", "transfer_depth": -1}, [{"test_accuracy": .94 + j} for j in (0, .01, .02)])]
        return _rows(acc)
    held = layer_transfer.analyse(rows(0.80), pathlib.Path(".")).verdicts
    assert [v.status for v in held] == [verdict.HELD, verdict.HELD, verdict.EQUIVALENT, verdict.HELD]  # BnB flat
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
    # no source model to count in its wall time; the machine that ran it named
    assert f"empty workdir, analysis included, on {runner.host_text()})" in readme
    assert (root / "tiny" / "plot.png").exists() and "[tiny](tiny/README.md)" in (root / "README.md").read_text()
    first = runner.read_summary(root / "tiny")
    assert first["wall_time_s"] > 0 and first["verdicts"][0]["status"] in (verdict.HELD, verdict.FAILED, verdict.NOISE)
    capsys.readouterr()
    runner.run(TINY, [TINY], root=root, workdir=workdir, echo=print)  # resumes: nothing left to train
    assert "4 of 4 runs already" in capsys.readouterr().out
    again = runner.read_summary(root / "tiny")
    assert again["wall_time_s"] == first["wall_time_s"] and again["ran_on"] == first["ran_on"] == runner.host_text()
    assert (root / "tiny" / "README.md").read_text() == readme  # deterministic from the same results
    older = {k: v for k, v in again.items() if k != "ran_on"}  # a summary written before the machine was recorded
    (root / "tiny" / runner.SUMMARY).write_text(json.dumps(older))
    runner.run(TINY, [TINY], root=root, workdir=workdir, echo=print)  # resumed: the old wall time, no machine
    assert runner.read_summary(root / "tiny") == older
    seen = {}  # an analysis of (rows, workdir, module) gets the config module; each row its run's class count

    def with_module(rows, workdir, module):
        seen.update(classes={r["num_classes"] for r in rows}, module=module)
        return _analyse(rows, workdir)
    runner.report(dataclasses.replace(TINY, analyse=with_module), [TINY], root=root, workdir=workdir, wall_time=12.0,
                  echo=print)
    assert "0 min 12 s" in (root / "tiny" / "README.md").read_text()
    assert seen["classes"] == {"3"} and seen["module"].get_config().name == "tiny_experiment"


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


def _surgical_rows(first_gain: float):
    """Synthetic rows of the surgical sweep: every arm on every target at two LRs. The better LR on validation is
    0.03, whose test accuracies are those given; at 0.1 validation is lower and full fine-tuning's test accuracy
    1, every other arm's 0 (read unselected, full fine-tuning would win everywhere)."""
    from tl_research.experiments import surgical
    level_acc = {"input": {"full": .80, "first": .80 + first_gain, "middle": .78, "last": .75, "head": .60},
                 "feature": {"full": .90, "first": .85, "middle": .92, "last": .91, "head": .80},
                 "label": {"full": .95, "first": .94, "middle": .95, "last": .96, "head": .98}}
    acc = []
    for level, name, classes in surgical.SHIFTS.values():
        for arm, a in level_acc[level].items():
            for lr, val, test in ((0.03, .9, a), (0.1, .5, 1.0 if arm == "full" else 0.0)):
                acc.append(({"label": arm, "data.name": name, "data.classes": classes, "schedule.lr": lr},
                            [{"test_accuracy": test + j, "val_accuracy": val, "trainable_params": 1000}
                             for j in (0, .01, -.01)]))
    return _rows(acc)


def test_surgical_verdicts_follow_the_numbers_at_the_lr_chosen_on_validation():
    from tl_research.experiments import surgical
    held = surgical.analyse(_surgical_rows(first_gain=0.05), pathlib.Path("."))
    assert [v.status for v in held.verdicts] == [verdict.HELD] * 6  # the LR of 0 test accuracy never chosen
    assert "mnist_subset 0-4 permuted" in held.tables[0] and "| 0.03 |" in held.tables[2]
    assert "0.1" not in held.tables[2]
    failed = surgical.analyse(_surgical_rows(first_gain=-0.05), pathlib.Path("."))
    assert [v.status for v in failed.verdicts[:2]] == [verdict.FAILED] * 2
    assert "first - middle" in failed.verdicts[1].figure  # the rival is the best other part, by its mean


def test_peft_vs_full_verdicts_and_methods_not_registered(capsys):
    from tl_research.experiments import peft_vs_full
    acc = [({"model.name": model, "strategy.name": m, "data.name": t},
            [{"test_accuracy": level + j, "trainable_params": n} for j in (0, .01, -.01)])
           for model, levels in (("vit_micro", {"fine_tune": (.80, 200000), "bitfit": (.75, 2000),
                                                "vpt_shallow": (.77, 1000), "vpt_deep": (.85, 5000)}),
                                 ("resnet_cifar", {"fine_tune": (.90, 77000), "bitfit": (.85, 1000),
                                                   "feature_extraction": (.70, 325)}))
           for m, (level, n) in levels.items() for t in ("mnist_subset", "mnist_m")]
    out = peft_vs_full.analyse(_rows(acc), pathlib.Path("."))
    assert [v.status for v in out.verdicts] == [verdict.HELD] * 5
    assert "| ResNet | feature_extraction | 325 |" in out.tables[0] and "vpt_deep 0.850 at 5,000" in out.headline
    # a method that is not a registered strategy is left out with one printed line, and VPT stays off a ResNet
    resnet = peft_vs_full.SOURCES["ResNet"]
    methods = ("fine_tune", "vpt_deep", "no_such_method")
    assert peft_vs_full.methods_for(None, resnet, methods, check=False) == ["fine_tune"]
    assert capsys.readouterr().out.count("no_such_method") == 1
    peft_vs_full.methods_for(None, resnet, methods, check=False)
    assert capsys.readouterr().out == ""  # said once per process


def _split_metadata(data_dir, sizes: dict) -> None:
    """Real split sizes for mocked builders (tfds.testing.mock_data reads a builder's dataset_info.json)."""
    import tensorflow_datasets as tfds
    for name, splits in sizes.items():
        b = tfds.builder(name, data_dir=str(data_dir))
        b.info.set_splits(tfds.core.SplitDict([tfds.core.SplitInfo(name=n, shard_lengths=[c], num_bytes=0)
                                               for n, c in splits.items()]))
        pathlib.Path(b.data_dir).mkdir(parents=True, exist_ok=True)
        b.info.write_to_directory(b.data_dir)


def covering(points: list[dict]) -> list[dict]:
    """The points that each bring a (key, value) no earlier one has: every value of every swept key, once."""
    seen, out = set(), []
    for p in points:
        pairs = {(k, repr(v)) for k, v in p.items()}
        if pairs - seen:
            seen |= pairs
            out.append(p)
    return out


def test_paper_scale_configs_validate_on_mock_data(tmp_path):
    """experiments/{surgical,peft_vs_full}/paper.py pass config validation (tl_research.config.validate) at every
    value of every key their sweeps set (every arm or method, LR, seed), on one target per shift level and one
    VTAB-1k task per group, on mock TFDS data laid out with the datasets' real split sizes, with random weights
    (init=scratch in place of the converted ViT-B/16). The other targets are the same builders' other configs
    (named below) and VTAB tasks (tests/test_vtab.py loads every one)."""
    import tensorflow_datasets as tfds
    from test_vtab import SPLIT_SIZES, _Batched
    from unittest import mock
    from tl_research import config as config_lib
    from tl_research.data import vtab
    from tl_research.experiments import peft_vs_full
    from tl_research.finetune import strategies
    surgical_paper = config_lib.load_module(str(runner.ROOT / "surgical" / "paper.py"))
    peft_paper = config_lib.load_module(str(runner.ROOT / "peft_vs_full" / "paper.py"))
    corrupted = {c.name for c in tfds.builder_cls("cifar10_corrupted").BUILDER_CONFIGS}
    assert {f"{c}_5" for c in surgical_paper.CORRUPTIONS} <= corrupted and len(surgical_paper.CORRUPTIONS) == 15
    assert peft_paper.TASKS == tuple(f"vtab:{t}" for t in vtab.VTAB_TASKS) and peft_paper.INIT != "scratch"
    checked = {surgical_paper: ("cifar10_corrupted/brightness_5", "cifar100", "cifar10"),
               peft_paper: ("vtab:cifar100", "vtab:eurosat", "vtab:dsprites_location")}
    sizes = {"cifar10": {"train": 50000, "test": 10000}, "cifar100": {"train": 50000, "test": 10000},
             "cifar10_corrupted/brightness_5": {"test": 10000}, **SPLIT_SIZES}
    validated = {}
    for module, init in ((surgical_paper, None), (peft_paper, "scratch")):
        data_dir = str(tmp_path / module.__name__)
        with tfds.testing.mock_data(num_examples=64, data_dir=data_dir):  # a split of 64 holds a batch of 64
            mocked = tfds.core.DatasetBuilder.as_data_source
            with mock.patch.object(tfds.core.DatasetBuilder, "as_data_source",
                                   lambda self, *a, **kw: _Batched(mocked(self, *a, **kw))):
                base = module.get_config()
                points = covering([p for p in module.get_sweep() if p["data.name"] in checked[module]])
                builders = [vtab.get(n[5:]).tfds_name if n.startswith("vtab:") else n for n in checked[module]]
                _split_metadata(data_dir, {b: sizes[b] for b in builders})
                overrides = {"data.data_dir": data_dir, **({"init": init} if init else {}),
                             **({"source.data.data_dir": data_dir} if base.init == "source" else {})}
                for p in points:
                    config_lib.validate(config_lib.apply_overrides(base, {**p, **overrides}))
                validated[module] = points
    assert {p["label"] for p in validated[surgical_paper]} == set(surgical_paper.ARMS)
    assert {p["strategy.name"] for p in validated[peft_paper]} == set(peft_vs_full.METHODS) & set(strategies.names())
    assert {p["seed"] for p in validated[peft_paper]} == set(peft_paper.SEEDS)
