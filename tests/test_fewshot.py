"""The closed-form few-shot probe (tl_research.evals.fewshot) against a direct ridge solution, and its command
(tl_research.cli.fewshot_command) against the library on the same features."""
import json

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from tl_research.evals import fewshot


def _blobs(n_per_class, dim, num_classes, seed, spread=1.0, draw=0):
    """Gaussian classes around random means (fixed by `seed`), `draw` picking the points: (x, y)."""
    means = np.random.default_rng(seed).normal(size=(num_classes, dim)) * 3.0
    y = np.repeat(np.arange(num_classes), n_per_class)
    noise = np.random.default_rng([seed, draw + 1]).normal(size=(len(y), dim))
    return (means[y] + spread * noise).astype(np.float32), y


# ---------------------------------------------------------------------------------------------- draw

def test_draw_gives_k_per_class_seeded_and_nested():
    labels = np.random.default_rng(0).integers(0, 4, size=400)
    one, five = fewshot.draw(labels, 1, seed=3, num_classes=4), fewshot.draw(labels, 5, seed=3, num_classes=4)
    assert np.bincount(labels[five], minlength=4).tolist() == [5, 5, 5, 5]
    assert np.bincount(labels[one], minlength=4).tolist() == [1, 1, 1, 1]
    assert set(one) <= set(five)  # the 5-shot draw of a seed holds its 1-shot draw
    assert np.array_equal(five, fewshot.draw(labels, 5, seed=3, num_classes=4))  # seeded
    assert not np.array_equal(five, fewshot.draw(labels, 5, seed=4, num_classes=4))  # the seed matters
    assert len(set(five)) == len(five)


def test_draw_takes_all_of_a_small_class():
    labels = np.array([0] * 10 + [1] * 2 + [2] * 10)
    idx = fewshot.draw(labels, 5, seed=0, num_classes=3)
    assert np.bincount(labels[idx], minlength=3).tolist() == [5, 2, 5]
    assert set(np.flatnonzero(labels == 1)) <= set(idx)


# ---------------------------------------------------------------------------------------------- lsr

def _ridge_predictions(train_x, train_y, test_x, num_classes, l2_reg):
    """The same model written directly: whitening on the training points, a bias column of
    fewshot.BIAS_CONSTANT, targets 2 * onehot - 1, and scikit-learn's ridge without its own intercept."""
    x, t = train_x.astype(np.float64), test_x.astype(np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-5
    bias = lambda a: np.hstack([a, np.full((len(a), 1), fewshot.BIAS_CONSTANT)])
    x, t = bias((x - mean) / std), bias((t - mean) / std)
    y = 2.0 * np.eye(num_classes)[train_y] - 1.0
    ridge = Ridge(alpha=l2_reg, fit_intercept=False, solver="cholesky").fit(x, y)
    return np.argmax(ridge.predict(t), axis=1)


@pytest.mark.parametrize("n_per_class,dim", [(40, 8), (2, 60)], ids=["primal n>=d", "dual n<d"])
def test_lsr_predicts_what_direct_ridge_predicts(n_per_class, dim):
    num_classes, l2 = 5, 2.0 ** 10
    # overlapping classes (40 to 60% accuracy), so that another linear rule predicts differently; features on
    # scales from 0.01 to 100 with offsets, so that a probe which skipped the whitening would too
    train_x, train_y = _blobs(n_per_class, dim, num_classes, seed=1, spread=8.0)
    test_x, test_y = _blobs(60, dim, num_classes, seed=1, spread=8.0, draw=1)
    scale, offset = np.logspace(-2, 2, dim, dtype=np.float32), np.linspace(-50, 50, dim, dtype=np.float32)
    train_x, test_x = train_x * scale + offset, test_x * scale + offset
    n, d = len(train_x), dim + 1  # the bias column counts
    assert (n >= d) == (n_per_class == 40)  # each case exercises the branch its id names
    want = _ridge_predictions(train_x, train_y, test_x, num_classes, l2)
    # accuracy against sklearn's predictions as labels is 1.0 exactly when every prediction agrees
    assert fewshot.lsr_accuracy(train_x, train_y, test_x, want, num_classes, l2) == 1.0
    # and the reference is not trivially constant, so agreement means something
    assert len(np.unique(want)) == num_classes
    assert fewshot.lsr_accuracy(train_x, train_y, test_x, test_y, num_classes, l2) == np.mean(want == test_y)


def test_lsr_strength_matters():
    """A ridge strength that swamps the data changes predictions; the test above would not notice an l2
    that is ignored."""
    train_x, train_y = _blobs(2, 60, 5, seed=2, spread=8.0)
    test_x, _ = _blobs(30, 60, 5, seed=2, spread=8.0, draw=1)
    weak, strong = (_ridge_predictions(train_x, train_y, test_x, 5, l2) for l2 in (1e-3, 2.0 ** 10))
    assert np.sum(weak != strong) > 5
    assert fewshot.lsr_accuracy(train_x, train_y, test_x, strong, 5, 2.0 ** 10) == 1.0
    assert fewshot.lsr_accuracy(train_x, train_y, test_x, weak, 5, 1e-3) == 1.0


def test_separable_features_give_full_accuracy_and_random_labels_chance():
    num_classes = 10
    x, y = _blobs(60, 32, num_classes, seed=3, spread=0.1)
    assert fewshot.lsr_accuracy(x[::2], y[::2], x[1::2], y[1::2], num_classes, 2.0 ** 10) == 1.0
    rng = np.random.default_rng(4)
    noise, labels = rng.normal(size=(4000, 32)).astype(np.float32), rng.integers(0, num_classes, 4000)
    acc = fewshot.lsr_accuracy(noise[:2000], labels[:2000], noise[2000:], labels[2000:], num_classes, 2.0 ** 10)
    assert abs(acc - 1 / num_classes) < 0.03  # 2,000 test points: std of chance accuracy about 0.007


def test_probe_returns_every_key_and_means_over_seeds():
    train_x, train_y = _blobs(30, 16, 4, seed=5, spread=3.0)
    test_x, test_y = _blobs(20, 16, 4, seed=5, spread=3.0, draw=1)
    out = fewshot.probe(train_x, train_y, test_x, test_y, 4, shots=(1, 5, 10, 25), seeds=3, l2_reg=2.0 ** 10)
    assert sorted(out) == sorted([f"{k}shot_accuracy{s}" for k in (1, 5, 10, 25) for s in ("", "_std")])
    accs = [fewshot.lsr_accuracy(train_x[i], train_y[i], test_x, test_y, 4, 2.0 ** 10)
            for i in (fewshot.draw(train_y, 5, s, 4) for s in range(3))]
    assert out["5shot_accuracy"] == pytest.approx(np.mean(accs))
    assert out["5shot_accuracy_std"] == pytest.approx(np.std(accs))
    assert out["1shot_accuracy_std"] > 0  # different seeds draw different shots


# ---------------------------------------------------------------------------------------------- command

CONFIG = '''
from tl_research.config import base_config, copy_config
def get_config():
    c = base_config()
    c.name = "fewshot"
    c.data.name = "sklearn_digits"
    c.data.data_dir = {data_dir!r}
    c.data.classes = (0, 1, 2, 3, 4)
    c.data.batch_size = 32
    c.data.eval_batch_size = 64
    c.model.stage_sizes = (1, 1)
    c.model.width = 4
    c.train.steps = 12
    c.train.eval_every = 6
    c.wandb.mode = "disabled"
    source = copy_config(c)
    c.data.classes = (5, 6, 7, 8, 9)
    c.init = "source"
    c.source = source
    return c
'''


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """(config file, workdir) with the config's source model trained into WORKDIR/sources/<hash>."""
    from tl_research import config as config_lib
    from tl_research.sweeps import sweep
    from tl_research.run import trainer
    root = tmp_path_factory.mktemp("fewshot")
    path = root / "fewshot_config.py"
    path.write_text(CONFIG.format(data_dir=data_dir))
    source = config_lib.load_module(str(path)).get_config().source
    workdir = root / "work"
    assert trainer.run(source, sweep.source_dir(workdir, source), progress=False).status == "done"
    return path, workdir


def _features(cfg, weights_dir, batch_size):
    """Features of the target's training and test splits, read independently of the command."""
    from tl_research.checkpoints import weights as weights_lib
    from tl_research.data import pipeline
    from tl_research.run.features import FeatureExtractor
    weights, meta = weights_lib.load_weights(weights_dir)
    data = pipeline.load(cfg.data, meta, seed=cfg.seed)
    ext = FeatureExtractor(cfg.model, weights, meta, data.image_shape[2])
    out = []
    for split in (data.train, data.test):
        batches = list(pipeline.eval_batches(data, split, batch_size))
        out.append(np.concatenate([ext(b["image"])[b["mask"]] for b in batches]))
        out.append(np.concatenate([b["label"][b["mask"]] for b in batches]))
    assert len(out[1]) == len(data.train) and len(out[3]) == len(data.test)
    return out, data.num_classes


def test_command_scores_the_source_model_as_the_probe_does(trained, tmp_path, capsys):
    from tl_research import config as config_lib
    from tl_research.cli import fewshot_command
    from tl_research.sweeps import sweep
    path, workdir = trained
    out = tmp_path / "fewshot.json"
    assert fewshot_command.main(["--config", str(path), "--workdir", str(workdir), "--shots", "1,3,10",
                                 "--seeds", "2", "--l2_reg", "64", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    cfg = config_lib.load_module(str(path)).get_config()
    (train_x, train_y, test_x, test_y), num_classes = _features(
        cfg, sweep.source_dir(workdir, cfg.source) / "weights", batch_size=7)
    want = fewshot.probe(train_x, train_y, test_x, test_y, num_classes, shots=(1, 3, 10), seeds=2, l2_reg=64.0)
    assert record["metrics"] == pytest.approx(want, abs=1e-9)
    assert (record["train_images"], record["test_images"]) == (len(train_y), len(test_y))
    assert record["data"]["classes"] == [5, 6, 7, 8, 9] and record["num_classes"] == 5
    printed = capsys.readouterr().out
    assert f"| 10 | {want['10shot_accuracy']:.3f} ± {want['10shot_accuracy_std']:.3f} |" in printed


def test_command_takes_weights_and_overrides(trained, capsys):
    from tl_research import config as config_lib
    from tl_research.cli import fewshot_command
    from tl_research.sweeps import sweep
    path, workdir = trained
    weights = sweep.source_dir(workdir, config_lib.load_module(str(path)).get_config().source) / "weights"
    assert fewshot_command.main(["--config", str(path), "--weights", str(weights),
                                 "--config.data.classes=(1,2,3)", "--shots=2", "--seeds=1"]) == 0
    written = sorted(weights.parent.glob("fewshot_sklearn_digits_*.json"))  # next to the weights directory
    assert len(written) == 1
    record = json.loads(written[0].read_text())
    assert record["data"]["classes"] == [1, 2, 3] and record["num_classes"] == 3
    assert sorted(record["metrics"]) == ["2shot_accuracy", "2shot_accuracy_std"]
    assert record["weights"] == str(weights)


@pytest.mark.parametrize("args,names", [
    (["--shots=0"], "--shots"),
    (["--seeds=0"], "--seeds"),
    (["--config.data.nme=x"], "data.name (the closest)"),
    (["--weights=/no/such/dir"], "--weights"),
    (["--workdir={empty}"], "python launch.py --config"),  # a source model not trained yet
])
def test_command_refuses_bad_input_in_one_line(trained, tmp_path, capsys, args, names):
    from tl_research.cli import fewshot_command
    path, _ = trained
    args = [a.format(empty=tmp_path / "empty") for a in args]
    assert fewshot_command.main(["--config", str(path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and names in err
    assert not (tmp_path / "empty").exists()
