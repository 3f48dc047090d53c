"""The regularizers experiment: Co-Tuning's calibrated category relationship against the paper's formula, the
analysis's verdicts on synthetic rows (a case that holds and one that fails), and the paper-scale config
(experiments/regularizers/paper.py) validated on mock TFDS data with a random ResNet-50 classifier."""
import functools
import json
import pathlib

import numpy as np
import pytest

from tl_research.experiments import regularizers as R
from tl_research.experiments import runner, verdict
from tl_research.finetune.regularizers import co_tuning as ct


def _source_probs(rng, labels, num_source: int, sharp: float) -> np.ndarray:
    """Source-model probabilities of examples of `labels`: target class c leans on source class c % num_source."""
    logits = rng.normal(size=(len(labels), num_source)) + sharp * np.eye(num_source)[labels % num_source]
    return ct.softmax(logits)


def test_calibrated_relationship_is_the_papers_formula():
    """You et al. 2020's calibrated relationship, as the authors' relationship_learning computes it: g, a
    multinomial logistic regression without intercept (sklearn's objective) from the source probabilities to the
    target label, C chosen by held-out accuracy (ties: the largest C), its logits temperature-scaled on the
    held-out data, p(y_t | y_s) = softmax(s * g(e_{y_s})), and Bayes' rule with the marginal p(y_s)."""
    from unittest import mock
    from sklearn.linear_model import LogisticRegression
    assert ct.C_GRID == (1e4, 3e3, 1e3, 3e2, 1e2, 3e1, 1e1, 3.0, 1.0, 3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4)
    rng = np.random.default_rng(5)
    n_t, n_s = 4, 6
    y_train, y_val = rng.integers(0, n_t, 120), rng.integers(0, n_t, 80)
    p_train, p_val = _source_probs(rng, y_train, n_s, 2.0), _source_probs(rng, y_val, n_s, 2.0)
    for c in (0.3, 30.0):  # g's fit is sklearn's minimiser
        ref = LogisticRegression(C=c, fit_intercept=False, tol=1e-12, max_iter=10000).fit(p_train, y_train)
        np.testing.assert_allclose(ct.fit_reverse(p_train, y_train, n_t, c).T, ref.coef_, atol=2e-5)
    grid = (1e3, 3.0, 1e-1, 1e-3)  # a part of the authors' grid, in their order (each fit takes time)
    with mock.patch.object(ct, "C_GRID", grid):
        rel, info = ct.calibrated_relationship(p_train, y_train, p_val, y_val, n_t)
    # the C: the authors' loop over the grid, keeping the first of the best validation accuracies
    w = {c: ct.fit_reverse(p_train, y_train, n_t, c) for c in grid}
    acc = [np.mean(np.argmax(p_val @ w[c], 1) == y_val) for c in grid]
    best = grid[int(np.argmax(acc))]
    assert best == 3.0 and acc[1:] == [0.85] * 3  # here three C tie: the first of them, not the largest C
    assert info["C"] == best and info["val_accuracy"] == pytest.approx(max(acc))
    # the scale: temperature scaling of g's held-out logits (the cross-entropy is smallest there)
    ce = lambda s: np.mean(-np.log(ct.softmax(s * (p_val @ w[best]))[np.arange(len(y_val)), y_val]))
    s = info["scale"]
    assert ce(s) <= min(ce(s * 0.99), ce(s * 1.01)) + 1e-12 and s != pytest.approx(1.0, abs=1e-3)
    # Bayes' rule, entry by entry: p(y_s | y_t) = p(y_t | y_s) p(y_s) / sum_s' p(y_t | s') p(s')
    marginal = np.concatenate([p_train, p_val]).mean(0)
    t_given_s = np.array([ct.softmax(s * w[best][i][None])[0] for i in range(n_s)])  # row i: g(one-hot i)
    expected = np.array([[t_given_s[i, t] * marginal[i] / sum(t_given_s[j, t] * marginal[j] for j in range(n_s))
                          for i in range(n_s)] for t in range(n_t)])
    np.testing.assert_allclose(rel, expected, rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(rel.sum(1), 1.0, rtol=1e-5)
    # calibrated, it is not the direct average of the source probabilities
    direct = ct.relationship(np.eye(n_t)[y_train].T @ p_train, np.bincount(y_train, minlength=n_t))
    assert np.abs(rel - direct).max() > 0.05


def _rows(gain_small: float, gain_large: float) -> list[dict]:
    """Synthetic results: plain fine-tuning at 0.80 / 0.85 / 0.90 over the fractions, each regulariser
    `gain_small` above it at 15%, `gain_large` at 100% (halfway at 30%), with seed noise."""
    noise = (0.0, 0.01, -0.01, 0.005, -0.005)
    out = []
    for method in R.METHODS:
        for fraction, plain in zip(R.FRACTIONS, (0.80, 0.85, 0.90)):
            g = 0.0 if method == R.PLAIN else {15: gain_small, 30: (gain_small + gain_large) / 2, 100: gain_large}[
                fraction]
            for seed, e in enumerate(noise):
                jitter = e * (1 + R.REGULARIZERS.index(method)) / 5 if method != R.PLAIN else 0.0
                out.append({"run_id": f"{method}-{fraction}-{seed}", "status": "done", "seed": str(seed),
                            "label": method, "data.train_examples": str(R.train_examples(fraction)),
                            "test_accuracy": str(plain + e + g + jitter)})
    return out


def test_verdicts_follow_the_numbers():
    held = R.analyse(_rows(0.05, 0.005), pathlib.Path("."))
    assert [v.status for v in held.verdicts] == [verdict.HELD] * 6
    assert "n=5 seeds, paired" in held.verdicts[0].figure and "+0.064" in held.verdicts[4].published and "gain over plain at 15%" in held.headline
    assert "l2_sp" in held.tables[1] and "mean of the five" in held.tables[1]
    failed = R.analyse(_rows(-0.05, 0.0), pathlib.Path("."))  # they hurt with few labels: both claims fail
    assert [v.status for v in failed.verdicts] == [verdict.FAILED] * 6
    assert R.analyse([], pathlib.Path(".")).verdicts[0].status == verdict.NOT_RUN


def test_paper_scale_config_validates_on_mock_data(tmp_path):
    """experiments/regularizers/paper.py passes config validation at every arm, label fraction and seed on mock
    caltech_birds2011 laid out with its real split sizes; Co-Tuning's check of the starting weights passes for a
    random ResNet-50 classifier (2048 features to ImageNet's 1,000 classes) and refuses weights without one."""
    import ml_collections
    import tensorflow_datasets as tfds
    from unittest import mock
    from test_experiments import _split_metadata, covering
    from test_vtab import _Batched
    from tl_research import config as config_lib, models
    from tl_research.core.errors import ConfigError
    built = models.abstract  # ResNet-50's shapes, built once for every check below (seconds each time)
    abstract = functools.lru_cache(lambda model_json, *a: built(ml_collections.ConfigDict(json.loads(model_json)), *a))
    paper = config_lib.load_module(str(runner.ROOT / "regularizers" / "paper.py"))
    weights_dir = tmp_path / "weights"  # stands for the converted ResNet-50 (its classifier is checked below)
    weights_dir.mkdir()
    data_dir = str(tmp_path / "tfds")
    points = covering(paper.get_sweep())
    mocked = tfds.core.DatasetBuilder.as_data_source
    with tfds.testing.mock_data(num_examples=2400, data_dir=data_dir), mock.patch.object(
            models, "abstract", lambda cfg, *a: abstract(cfg.to_json(), *a)):
        mocked = tfds.core.DatasetBuilder.as_data_source
        with mock.patch.object(tfds.core.DatasetBuilder, "as_data_source",
                               lambda self, *a, **kw: _Batched(mocked(self, *a, **kw))):
            _split_metadata(data_dir, {"caltech_birds2011": {"train": 5994, "test": 5794}})
            base = paper.get_config()
            overrides = {"data.data_dir": data_dir, "init": str(weights_dir)}
            for p in points:
                config_lib.validate(config_lib.apply_overrides(base, {**p, **overrides}))
        cfg = config_lib.apply_overrides(base, {**overrides, "strategy.regularizer": "co_tuning"})
        kernel = np.random.default_rng(0).normal(size=(2048, 1000)).astype(np.float32)
        ct.check_weights(cfg, {"params": {ct.CLASSIFIER + ".kernel": kernel}})
        with pytest.raises(ConfigError, match="no classifier"):
            ct.check_weights(cfg, {"params": {}})
    assert cfg.strategy.co_tuning_relationship == "calibrated" and cfg.strategy.co_tuning_source_scale < 1
    assert {p["label"] for p in points} == set(R.METHODS) and {p["seed"] for p in points} == set(paper.SEEDS)
    assert sorted({p["data.train_examples"] for p in points}) == [0, 719, 1438, 2398]
