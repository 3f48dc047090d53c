"""Paper scale and the check command: every experiment's paper.py dry-runs (its datasets, weights, runs,
GPU-hours and missing inputs, reading no data) and passes config validation on mock TFDS data with random
weights; the cost model's arithmetic; the experiments command's flags refused in one line; the check command's
comparison of two summaries, and its rerun into a temporary directory that leaves the committed files alone."""
import json
import os
import pathlib

import pytest

from tl_research.experiments import __main__ as cli
from tl_research.experiments import check, costs, dry_run, registry, runner
from tl_research.experiments.spec import Experiment

# the paper.py files validated here; every other experiment's is validated by its own test (surgical's and
# peft_vs_full's in tests/test_experiments.py, transferability's in tests/test_exp_transferability.py)
OURS = ("layer_transfer", "cyclical_lr", "data_size", "lp_ft", "domain_similarity", "class_imbalance",
        "decision_matrix")


def _flops(model_cfg, size, channels=3):
    return 1e9 * (size / 224) ** 2  # a stand-in for XLA's count (checked on its own below)


def _covering(points: list[dict], ignored=("label", "schedule.lr")) -> list[dict]:
    """The points that each bring a (key, value) no earlier one has, the free-text label and the LR's value (any
    positive number passes) apart: every value of every other swept key, once."""
    seen, out = set(), []
    for p in points:
        pairs = {(k, repr(v)) for k, v in p.items() if k not in ignored}
        if pairs - seen:
            seen |= pairs
            out.append(p)
    return out


def _paper_experiments():
    return [runner.at_scale(e, "paper") for e in registry.EXPERIMENTS if (runner.ROOT / e.name / "paper.py").is_file()]


def _validate(exp, points: list[dict], tmp_path) -> None:
    """config validation of `points` of exp's paper.py on mock TFDS data laid out with the datasets' real split
    sizes, with random weights in place of the converted ones. Mock splits hold 64 examples, so the batch is 8,
    per_class 1 and train_examples 16 here; the sizes themselves are the dry run's."""
    from test_experiments import _split_metadata
    from test_vtab import _mock_tfds
    from tl_research import config as config_lib
    module = runner.load_module(exp)
    base = module.get_config()
    plan = dry_run.plan(base, points, flops=_flops)
    data_dir = str(tmp_path / exp.name)
    with _mock_tfds(data_dir, 64):
        _split_metadata(data_dir, {d.tfds: d.sizes for d in plan.datasets.values() if d.tfds})
        for p in points:
            cfg = config_lib.apply_overrides(base, p)
            small = {"data.data_dir": data_dir, "data.batch_size": 8,
                     **({"data.per_class": 1} if cfg.data.per_class else {}),
                     **({"data.train_examples": 16} if cfg.data.train_examples else {}),
                     **({"init": "scratch"} if dry_run.weights_of(cfg) else {})}
            if cfg.init == "source":
                small.update({"source.data.data_dir": data_dir, "source.data.batch_size": 8})
            config_lib.validate(config_lib.apply_overrides(base, {**p, **small}))


def test_every_paper_config_dry_runs(tmp_path, monkeypatch):
    """Each paper.py (any experiment that has one joins): the dry run names every dataset with its TFDS name
    and split sizes, each weights path, as many runs as the sweep has, a GPU-hours figure for every run, and
    one missing-input line per unprepared dataset and per absent weights path (an empty data dir, no weights
    here); a sweep of over 100 runs is dry-run on every value of every key it sets (a config copy costs
    milliseconds). Config validation on mock data: the long test below (building the abstract models, ResNet-50
    and ViT-B/16 among them, costs seconds)."""
    from test_experiments import covering
    monkeypatch.chdir(tmp_path)  # weights/... are relative paths: absent here
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "empty"))
    experiments = _paper_experiments()
    assert set(OURS) | {"surgical", "peft_vs_full"} <= {e.name for e in experiments}
    for exp in experiments:
        module = runner.load_module(exp)
        base, points = module.get_config(), module.get_sweep()
        points = points if len(points) <= 100 else covering(points)
        lines = []
        plan = dry_run.report(exp.name, base, points, getattr(module, "WEIGHTS", None), echo=lines.append,
                              flops=_flops)
        text = "\n".join(lines)
        assert plan.runs == len(points) and f"{len(points)} run(s)" in lines[0], exp.name
        assert plan.unestimated == 0 and plan.hours["A100"] >= plan.hours["H100"] > 0, exp.name
        assert "size unknown" not in text and "estimated GPU-hours" in text, exp.name
        tfds_sets = [d for d in plan.datasets.values() if d.tfds]
        assert tfds_sets and all(d.problem.startswith("not prepared in") for d in tfds_sets), exp.name
        assert len(plan.missing) == len(tfds_sets) + len(plan.weights), exp.name
        assert all(f"weights {w} " in text and "missing" in text for w in plan.weights), exp.name
    assert not os.path.exists(tmp_path / "empty") and not os.path.exists(tmp_path / "runs")  # nothing read, written


@pytest.mark.long  # every value of every swept key of the 7 paper configs: about 15 s (6 large abstract models)
def test_paper_configs_validate_every_swept_value_on_mock_data(tmp_path):
    """Every value of every key OURS' sweeps set (one seed; labels and LR values apart) passes config validation
    on mock data with random weights."""
    for name in OURS:
        exp = runner.at_scale(registry.get(name)[0], "paper")
        points = runner.load_module(exp).get_sweep()
        _validate(exp, _covering([p for p in points if p.get("seed") == points[0].get("seed")]), tmp_path)


def test_cost_model_counts_steps_evaluations_and_flops(tmp_path):
    """XLA's count of a forward pass is the convolutions' multiply-adds (x 2) within the padding's share; a run's
    steps come from its epochs over its training subset, evaluations once an epoch, a frozen backbone costs
    a third, two_phase's head phase too; split sizes come from a prepared dataset's metadata when it is there."""
    from tl_research.config import base_config
    from tl_research.data import pipeline
    c = base_config()
    c.model.stage_sizes, c.model.width = (1,), 4
    convs = 2 * 16 * 16 * (9 * 3 * 4 + 2 * 9 * 4 * 4)  # stem + one basic block at 16x16
    assert 0.85 * convs <= costs.forward_flops(c.model, 16) <= 1.15 * convs
    c.data.batch_size, c.data.eval_batch_size, c.train.steps, c.train.epochs, c.train.eval_every = 10, 50, 0, 2.0, 0
    cost = costs.run_cost(c, train_n=95, val_n=40, test_n=60, extra_n=30, size=32, channels=3, flops=lambda *a: 1e9)
    assert (cost.steps, cost.train_images, cost.eval_images, cost.eval_batches) == (20, 200.0, 2 * 40 + 60 + 30, 4)
    rate = costs.PEAK_TFLOPS["A100"]["float32"] * 1e12 * costs.UTILISATION["conv"]["float32"]
    expected = max(20 * costs.STEP_FLOOR_S, 200 * 3e9 / rate) + max(4 * costs.STEP_FLOOR_S, 170e9 / rate)
    assert cost.seconds("A100") == pytest.approx(expected + costs.RUN_OVERHEAD_S)
    c.frozen_depth = "all"
    assert costs.run_cost(c, 95, 40, 60, 0, 32, 3, lambda *a: 1e9).train_factor == costs.FROZEN_FACTOR
    c.frozen_depth, c.strategy.name, c.strategy.boundary_steps = 0, "two_phase", 5
    assert costs.run_cost(c, 95, 40, 60, 0, 32, 3, lambda *a: 1e9).train_factor == pytest.approx((5 + 15 * 3) / 20)
    d = dry_run.Dataset("cifar10", "cifar10", str(tmp_path), sizes={"train": 50000, "test": 10000}, classes=10)
    assert [d.size(s) for s in ("train[:45000]", "train[45000:]", "test", "train[:10%]+test", "val")] == \
        [45000, 5000, 10000, 15000, None]
    data = pipeline.default_config()
    data.classes, data.per_class, data.imbalance_ratio = (0, 1, 2, 3, 4), 100, 10.0
    assert dry_run.training_examples(data, d, 45000) == pytest.approx(sum(100 * 10 ** (-k / 4) for k in range(5)))
    info = tmp_path / "cifar10" / "3.0.2" / "dataset_info.json"
    info.parent.mkdir(parents=True)
    splits = [{"name": "train", "shardLengths": ["7", "3"]}, {"name": "test", "shardLengths": ["4"]}]
    info.write_text(json.dumps({"fileFormat": "tfrecord", "splits": splits}))
    seen = dry_run.describe("cifar10", str(tmp_path))
    assert seen.sizes == {"train": 10, "test": 4} and "--overwrite" in seen.problem
    info.write_text(json.dumps({"fileFormat": "array_record", "splits": splits}))
    assert dry_run.describe("cifar10", str(tmp_path)).problem == ""
    assert "no TFDS dataset" in dry_run.describe("no_such_dataset_xyz", str(tmp_path)).problem


def test_command_refuses_bad_flags_in_one_line_and_dry_runs(tmp_path, capsys, monkeypatch):
    """Each bad flag or combination: exit code 2 and one `error:` line naming the flag, before any work; a dry
    run prints the datasets and the missing inputs and writes nothing."""
    bad = {"--jobs": ["run", "lp_ft", "--jobs", "-2"], "--scale": ["run", "lp_ft", "--scale", "huge"],
           "--dry_run": ["report", "lp_ft", "--dry_run"], "--slurm.partition": ["run", "lp_ft", "--slurm.partition", "p"],
           "--jobs ": ["run", "lp_ft", "--launcher", "slurm", "--jobs", "2"],
           "--scale ": ["check", "lp_ft", "--scale", "paper"], "--tolerance": ["run", "lp_ft", "--tolerance", "0.1"],
           "--tolerance ": ["check", "lp_ft", "--tolerance", "-1"], "--launcher": ["run", "lp_ft", "--launcher", "pbs"],
           "--launcher ": ["run", "lp_ft", "--launcher", "slurm", "--slurm.partition", "gpu"]}  # no sbatch
    from tl_research.sweeps import slurm_launcher
    monkeypatch.setattr(slurm_launcher.shutil, "which", lambda name: None)
    monkeypatch.setattr(runner, "run", lambda *a, **kw: pytest.fail("a refused command trained"))
    for flag, argv in bad.items():
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {flag.strip()}"), (argv, err)
    root = tmp_path / "experiments"
    (root / "tiny").mkdir(parents=True)
    tiny = Experiment("tiny", "t", "q", "p", "d", "c", analyse=None)
    with pytest.raises(Exception, match="has no paper.py"):
        runner.at_scale(tiny, "paper", root)
    monkeypatch.setattr(costs, "forward_flops", _flops)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "cyclical_lr", "--scale", "paper", "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert "cifar10: train[:45000] 45,000 | train[45000:] 5,000 | test 10,000" in out and "missing (1)" in out
    assert not (tmp_path / "runs").exists()


def _summary(*verdicts):
    return {"name": "x", "verdicts": [{"claim": c, "figure": f, "status": s} for c, f, s in verdicts]}


def test_check_compares_statuses_and_figures():
    fig = "A - B = {:+.3f} [95% CI {:+.3f}, {:+.3f}; n=3, paired by seed] (claimed > 0)"
    committed = _summary(("a beats b", fig.format(0.10, 0.05, 0.15), "held"),
                         ("steps", "steps(x) - steps(y) = +30.0 [95% CI -19.7, +79.7; n=3]", "within noise"))
    lines, code = check.compare(committed, committed)
    assert code == 0 and [line.split(":")[0] for line in lines] == [check.SAME] * 2
    near = _summary(("a beats b", fig.format(0.11, 0.06, 0.16), "held"),
                    ("steps", "steps(x) - steps(y) = +30.5 [95% CI -19.5, +80.1; n=3]", "within noise"))
    assert check.compare(committed, near, tolerance=0.02)[1] == 0  # 0.01 apart; 0.5 step of 30 (relative)
    flipped = _summary(("a beats b", fig.format(0.10, -0.01, 0.21), "within noise"), committed["verdicts"][1].values())
    lines, code = check.compare(committed, flipped)
    assert code == 1 and lines[0].startswith(check.FLIPPED) and "committed held, now within noise" in lines[0]
    drifted = _summary(("a beats b", fig.format(0.20, 0.15, 0.25), "held"), committed["verdicts"][1].values())
    lines, code = check.compare(committed, drifted, tolerance=0.02)
    assert code == 1 and lines[0].startswith(check.DRIFTED) and check.compare(committed, drifted, 0.2)[1] == 0
    lines, code = check.compare(committed, _summary(committed["verdicts"][0].values(), ("new", "x = +1", "held")))
    assert code == 1 and [line.split(":")[0] for line in lines] == [check.SAME, check.MISSING, check.NEW]


def test_check_reruns_into_a_temporary_directory(tmp_path, monkeypatch, capsys):
    """check runs the experiment with the committed root's config into a temporary workdir and report folder
    (removed afterwards), leaves the committed summary.json as it was, and returns 1 on a status flip."""
    root = tmp_path / "experiments"
    (root / "tiny").mkdir(parents=True)
    committed = _summary(("a beats b", "a - b = +0.100 [95% CI +0.050, +0.150; n=3]", "held"))
    (root / "tiny" / runner.SUMMARY).write_text(json.dumps(committed))
    before = (root / "tiny" / runner.SUMMARY).read_bytes()
    seen = {}

    def fake_run(exp, experiments, *, root, out, workdir, **kw):
        seen.update(root=root, out=pathlib.Path(out), workdir=pathlib.Path(workdir))
        (pathlib.Path(out) / exp.name).mkdir(parents=True)
        now = _summary(("a beats b", "a - b = +0.101 [95% CI +0.049, +0.152; n=3]", seen.get("status", "held")))
        (pathlib.Path(out) / exp.name / runner.SUMMARY).write_text(json.dumps(now))

    monkeypatch.setattr(runner, "run", fake_run)
    tiny = Experiment("tiny", "t", "q", "p", "d", "c", analyse=None)
    assert check.check(tiny, [tiny], root=root) == 0
    assert seen["root"] == root and root not in seen["out"].parents and not seen["out"].exists()
    assert not seen["workdir"].exists() and (root / "tiny" / runner.SUMMARY).read_bytes() == before
    seen["status"] = "did not hold"
    assert check.check(tiny, [tiny], root=root) == 1
    assert "STATUS DIFFERS: a beats b: committed held, now did not hold" in capsys.readouterr().out


def test_readmes_at_paper_scale_name_the_scale_and_the_machine(tmp_path):
    from tl_research.experiments import readme
    from tl_research.experiments.spec import Analysis
    digits = registry.get("lp_ft")[0]
    paper = runner.at_scale(digits, "paper")
    assert readme.command(digits) == "python -m tl_research.experiments run lp_ft"
    assert readme.command(paper, "report") == "python -m tl_research.experiments report lp_ft --scale paper"
    summaries = {"lp_ft": {"verdicts": [], "wall_time_s": 60.0, "ran_on": "SLURM partition gpu, 8 GPU(s) per node"}}
    index = readme.index(tmp_path, [paper], summaries)
    assert "papers' scale" in index and "built-in MNIST" not in index and "`python -m tl_research.experiments run lp_ft --scale paper`" in index
    assert "built-in MNIST" in readme.index(tmp_path, [digits], summaries)
    rows = [{"run_id": "a", "status": "done", "seed": 0, "test_accuracy": 0.5}]
    page = readme.render(paper, Analysis([], [], lambda path: None), summaries["lp_ft"], rows)
    assert "[`paper.py`](paper.py)" in page and "on SLURM partition gpu, 8 GPU(s) per node)" in page
    assert "report lp_ft --scale paper" in page
    old = readme.render(digits, Analysis([], [], lambda path: None), {"wall_time_s": 60.0}, rows)
    assert "analysis included, on a shared 2-core CPU)" in old  # a summary from before the machine was recorded
