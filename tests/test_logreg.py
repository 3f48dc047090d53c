"""The fixed-feature logistic regression probe (Kornblith et al. 2019): C chosen on validation, refit on train +
validation, scored on test; as an evaluator of a run."""
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from tl_research import config as config_lib
from tl_research.core.errors import ConfigError
from tl_research.evals import logreg
from tl_research.run import trainer


def _blobs(n, informative, rng, classes=4, dims=6):
    """Gaussian classes (the same means in every split) that differ along the first `informative` dimensions."""
    means = np.zeros((classes, dims))
    means[:, :informative] = np.random.default_rng(99).normal(0, 1.5, (classes, dims))[:, :informative]
    y = rng.integers(0, classes, n)
    return means[y] + rng.normal(0, 1, (n, dims)), y


def test_c_is_the_validation_argmax_and_the_refit_on_train_and_val_is_what_is_scored():
    splits = [_blobs(n, 2, np.random.default_rng(s)) for s, n in ((1, 80), (2, 60), (3, 200))]
    (tx, ty), (vx, vy), (sx, sy) = splits
    cs = (1e-4, 1e-2, 1.0, 100.0)
    out = logreg.probe(tx, ty, vx, vy, sx, sy, cs=cs)
    # the reference: scikit-learn directly, on features standardised by the training split
    mean, std = tx.mean(0), tx.std(0)
    z = lambda a: (a - mean) / std  # noqa: E731
    val = [(LogisticRegression(C=c, max_iter=1000).fit(z(tx), ty).predict(z(vx)) == vy).mean() for c in cs]
    best = cs[int(np.argmax(val))]  # argmax: the first (smallest C) of tied values
    refit = LogisticRegression(C=best, max_iter=1000).fit(z(np.concatenate([tx, vx])), np.concatenate([ty, vy]))
    assert out["c"] == best and out["val_accuracy"] == pytest.approx(max(val))
    assert out["accuracy"] == pytest.approx((refit.predict(z(sx)) == sy).mean())
    assert len(set(np.round(val, 6))) > 1  # the grid's values of C differ, so choosing among them matters
    # a more informative feature space probes better (the probe can tell features apart)
    rich = [_blobs(n, 6, np.random.default_rng(s)) for s, n in ((1, 80), (2, 60), (3, 200))]
    assert logreg.probe(*rich[0], *rich[1], *rich[2], cs=cs)["accuracy"] > out["accuracy"] + 0.1, (out, val)


def test_a_run_reports_the_probe_and_a_bad_grid_is_one_line(tiny_config, tmp_path):
    cfg = tiny_config(frozen_depth="all", **{"train.steps": 4, "train.eval_every": 4})
    cfg.evals.logreg = dict(type="logreg", cs=(0.01, 1.0, 100.0))
    result = trainer.run(cfg, tmp_path / "run", progress=False)
    assert result.status == "done", result.reason
    m = result.metrics
    assert m["logreg_c"] in (0.01, 1.0, 100.0) and 0.4 < m["logreg_accuracy"] <= 1.0  # 5 classes: chance 0.2
    bad = tiny_config()
    bad.evals.logreg = dict(type="logreg", cs=())
    with pytest.raises(ConfigError) as e:
        config_lib.validate(bad)
    assert "config.evals.logreg.cs=()" in str(e.value) and "\n" not in str(e.value)
