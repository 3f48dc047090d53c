"""Transferability scores (tl_research.evals.transferability) against hand-computed cases and LogME's reference
code, their rank statistics (tl_research.analysis.rank_correlation), and report.transferability and the ranking
command (python -m tl_research.transferability) on one tiny sweep."""
import math

import numpy as np
import pandas as pd
import pytest

from tl_research.analysis import rank_correlation as rc
from tl_research.evals import transferability as T


# ---------------------------------------------------------------------------------------------- LEEP, NCE

def test_leep_equals_the_formula_on_a_tiny_joint_distribution():
    theta = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])  # source softmax over 2 source classes
    y = np.array([0, 1, 1])
    # by hand: P(y, z) = 1/3 [[.8, .2], [.9, 1.1]]; P(z) = [1.7, 1.3] / 3; P(y | z) = joint / P(z)
    eep = [0.8 * 0.8 / 1.7 + 0.2 * 0.2 / 1.3,  # image 0 (y=0): sum_z theta(z) P(y=0 | z)
           0.3 * 0.9 / 1.7 + 0.7 * 1.1 / 1.3,  # image 1 (y=1)
           0.6 * 0.9 / 1.7 + 0.4 * 1.1 / 1.3]  # image 2 (y=1)
    assert T.leep(theta, y) == pytest.approx(np.mean(np.log(eep)), abs=1e-12)
    assert T.leep(T.softmax(np.log(theta)), y) == pytest.approx(np.mean(np.log(eep)), abs=1e-12)
    with pytest.raises(ValueError, match="softmax"):
        T.leep(np.log(theta), y)  # logits, not probabilities


def test_nce_equals_the_conditional_entropy_by_hand():
    z = np.array([0, 0, 1, 1, 1, 2])  # source hard labels
    y = np.array([0, 1, 1, 1, 0, 0])
    # z=0: y 1/2, 1/2; z=1: y=1 2/3, y=0 1/3; z=2: y=0 always
    want = 2 / 6 * math.log(1 / 2) + 2 / 6 * math.log(2 / 3) + 1 / 6 * math.log(1 / 3) + 1 / 6 * math.log(1)
    assert T.nce(z, y) == pytest.approx(want, abs=1e-12)
    assert T.nce(y + 7, y) == 0.0  # z determines y
    assert T.nce(np.zeros(6), y) == pytest.approx(-math.log(2), abs=1e-12)  # z says nothing: -H(Y), Y fair


# ---------------------------------------------------------------------------------------------- H-score

def test_hscore_against_its_formula():
    # 1-D by hand: centred f = -3, -1, 1, 3 (variance 5); class means -2, 2 (between-class variance 4)
    assert T.hscore(np.array([[0.0], [2.0], [4.0], [6.0]]), [0, 0, 1, 1]) == pytest.approx(0.8, abs=1e-12)
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 4)
    f = rng.normal(size=(12, 3)) + np.eye(3)[y] * 2.0
    g = np.stack([f[y == c].mean(axis=0) for c in y])  # E[f | y] per example
    want = np.trace(np.linalg.inv(np.cov(f, rowvar=False)) @ np.cov(g, rowvar=False))
    assert T.hscore(f, y) == pytest.approx(want, rel=1e-10)


def test_shrunk_hscore_uses_the_ledoit_wolf_estimate():
    from sklearn.covariance import LedoitWolf
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 10)
    f = rng.normal(size=(20, 6)) @ rng.normal(size=(6, 6)) + np.eye(2)[y] @ rng.normal(size=(2, 6))
    lw = LedoitWolf().fit(f)
    cov, a = T.ledoit_wolf(f - f.mean(axis=0))
    assert a == pytest.approx(lw.shrinkage_, rel=1e-10) and 0 < a < 1
    np.testing.assert_allclose(cov, lw.covariance_, rtol=1e-10, atol=1e-12)
    fc = f - f.mean(axis=0)
    between = sum(np.outer(fc[y == c].mean(0), fc[y == c].mean(0)) * np.mean(y == c) for c in (0, 1))
    assert T.hscore(f, y, shrinkage=True) == pytest.approx(np.trace(np.linalg.inv(cov) @ ((1 - a) * between)),
                                                           rel=1e-10)


# ---------------------------------------------------------------------------------------------- LogME

def _reference_logme(f, y):
    """LogME as published (github.com/thuml/LogME, LogME.py's ICML-2021 `each_evidence`, numba removed): the
    eigenvalues of F^T F, 11 iterations at most, stop at a 1% change of alpha / beta, eps = 1e-5."""
    fh, f = f, f.T
    d, n = f.shape
    v, s, vh = np.linalg.svd(f @ fh, full_matrices=True)
    out = []
    for c in range(int(y.max()) + 1):
        y_ = (y == c).astype(np.float64)
        eps, alpha, beta = 1e-5, 1.0, 1.0
        lam, tmp = 1.0, vh @ (f @ y_)
        for _ in range(11):
            gamma = (s / (s + lam)).sum()
            m = v @ (tmp * beta / (alpha + beta * s))
            alpha_de = (m * m).sum()
            alpha = gamma / (alpha_de + eps)
            beta_de = ((y_ - fh @ m) ** 2).sum()
            beta = (n - gamma) / (beta_de + eps)
            new_lam = alpha / beta
            if np.abs(new_lam - lam) / lam < 0.01:
                break
            lam = new_lam
        evidence = (d / 2.0 * np.log(alpha) + n / 2.0 * np.log(beta) - 0.5 * np.sum(np.log(alpha + beta * s))
                    - beta / 2.0 * (beta_de + eps) - alpha / 2.0 * (alpha_de + eps) - n / 2.0 * np.log(2 * np.pi))
        out.append(evidence / n)
    return float(np.mean(out))


@pytest.mark.parametrize("n,d", [(80, 12), (30, 50)], ids=["N>D", "N<D"])
def test_logme_matches_the_reference_implementation(n, d):
    rng = np.random.default_rng(n)
    y = rng.integers(0, 4, n)
    f = rng.normal(size=(n, d)) + np.eye(4)[y] @ rng.normal(size=(4, d))
    ref = _reference_logme(f, y)
    assert T.logme(f, y, tol=0.01, max_iter=11) == pytest.approx(ref, abs=1e-9)  # its stopping rule
    assert T.logme(f, y) == pytest.approx(ref, rel=1e-2)  # iterated to convergence: the evidence is flat there


def test_logme_rises_with_a_more_informative_feature():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 300)
    noise = rng.normal(size=(300, 3))
    scores = [T.logme(np.eye(3)[y] + sigma * noise, y) for sigma in (4.0, 2.0, 1.0, 0.5, 0.25)]
    assert all(a < b for a, b in zip(scores, scores[1:])), scores


def test_logme_of_dead_features_is_the_closed_form():
    # F = 0 (a dead layer): y ~ N(0, 1/beta), beta maximised at N / |y|^2 (+ eps, as the reference)
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    n = len(y)
    want = np.mean([0.5 * math.log(n / (k + 1e-5)) - 0.5 - 0.5 * math.log(2 * math.pi) for k in (3, 2, 5)])
    assert T.logme(np.zeros((n, 4)), y) == pytest.approx(want, abs=1e-12)


# ---------------------------------------------------------------------------------------------- statistics

def test_rank_agreement_exact_permutations_and_bootstrap():
    perfect = rc.agreement([1, 2, 3, 4], [0.1, 0.2, 0.5, 0.9], "spearman")
    # 4! = 24 relabellings, two of which reach |rho| = 1 (this order and its reverse)
    assert (perfect.n, perfect.value, perfect.p) == (4, 1.0, pytest.approx(2 / 24))
    assert perfect.low <= 1.0 and perfect.high == 1.0 and perfect.resamples > 0
    tau = rc.agreement([1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 5, 4, 6, 8, 7], "weighted_tau", permutations=200,
                      bootstrap=200)
    assert 0.5 < tau.value < 1.0 and 1 / 201 <= tau.p < 0.05 and tau.low <= tau.value <= tau.high
    assert math.isnan(rc.agreement([1, 2], [1, 2], "spearman").value)  # fewer than 3 units
    assert rc.agreement([1, 2, 3, 4], [0.1, 0.2, 0.5, 0.9], "spearman") == perfect  # deterministic


def test_weighted_tau_of_many_rows_at_once_equals_scipys():
    """The permutation test and the bootstrap compute the weighted tau of thousands of rows at once; ties (which
    a bootstrap resample always has) and constant sides (NaN) as scipy.stats.weightedtau."""
    from scipy import stats
    rng = np.random.default_rng(0)
    for n in (3, 6, 11):
        a, b = rng.integers(0, 3, (40, n)).astype(float), rng.integers(0, 3, (40, n)).astype(float)
        a[:20] = rng.random((20, n))  # no ties on one side in half the rows
        want = [stats.weightedtau(x, y).statistic if np.ptp(x) and np.ptp(y) else np.nan for x, y in zip(a, b)]
        np.testing.assert_allclose(rc.STATISTICS["weighted_tau"](a, b), want, atol=1e-12)


def test_per_layer_table_finds_the_best_depth_and_the_regret():
    from tl_research.analysis import transferability_report as report
    key = {"candidate_key": "c", "target_key": "t", "units": 3}
    scores = pd.DataFrame([{**key, "depth": k, "logme": v} for k, v in ((1, -0.9), (2, -0.3), (3, -0.5))])
    meas = pd.DataFrame([{**key, "candidate": "C", "target": "T", "setting": "all", "depth": k, "value": v, "n": 2}
                         for k, v in ((0, 0.99), (1, 0.7), (2, 0.8), (3, 0.9))])
    row = report.per_layer(scores, meas, ("logme",)).iloc[0]
    assert row["depths"] == "1,2,3" and row["best measured depth"] == "3 (0.900)"
    assert row["score's best depth"] == "2 (0.800)" and row["regret"] == "0.100"


# ---------------------------------------------------------------------------------------------- sweep, command

SETTINGS = 'c.report.transferability = ("logme", "leep", "nce", "hscore", "hscore_lw", "fewshot", "similarity")'
SWEEP = 'return product(axis("frozen_depth", ["all"]))'


def _penultimate_features(cfg, weights_dir):
    """(features, labels) of the target's training split under the source model: FeatureExtractor's, the
    features the few-shot evaluator and the similarity read."""
    from tl_research.checkpoints import weights as weights_lib
    from tl_research.cli.fewshot_command import split_features
    from tl_research.data import pipeline
    from tl_research.run.features import FeatureExtractor
    weights, meta = weights_lib.load_weights(weights_dir)
    data = pipeline.load(cfg.data, meta, seed=cfg.seed)
    return split_features(FeatureExtractor(cfg.source.model, weights, meta, data.image_shape[2]), data, data.train,
                          64, 1)


def test_sweep_writes_scores_and_the_command_ranks_weights(tmp_path, data_dir, capsys):
    import launch
    from conftest import transfer_config
    from tl_research import config as config_lib
    from tl_research.checkpoints import weights as weights_lib
    from tl_research.cli import transferability as command
    from tl_research.sweeps import sweep
    path, workdir = tmp_path / "tr.py", tmp_path / "w"
    path.write_text(transfer_config("tr", data_dir, sweep=SWEEP, settings=SETTINGS, steps=2, eval_every=2,
                                    log_every=2))
    args = ["--config", str(path), "--workdir", str(workdir), "--no_progress"]
    assert launch.main([*args, "--config.report.transferability=('logme', 'bogus')"]) == 2  # before any work
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: config.report.transferability=") and "\n" not in err
    assert not (workdir / "results.csv").exists()

    assert launch.main(args) == 0
    assert "1 (candidate, target) pair(s), 1 scored" in capsys.readouterr().out
    frame = pd.read_csv(workdir / "transferability.csv")
    assert list(frame["depth"]) == [1, 2, 3] and list(frame["penultimate"]) == [False, False, True]
    assert frame[["logme", "hscore", "hscore_lw", "fewshot"]].notna().all().all()  # every depth unit
    head = ["leep", "nce", "similarity"]
    assert frame.loc[:1, head].isna().all().all() and frame.loc[2, head].notna().all()  # the model's own
    cfg = config_lib.load_module(str(path)).get_config()
    weights_dir = sweep.source_dir(workdir, cfg.source) / "weights"
    x, y = _penultimate_features(cfg, weights_dir)
    top = frame.iloc[2]
    assert top["examples"] == len(y) and top["logme"] == pytest.approx(T.logme(x, y), rel=1e-5)
    assert top["hscore"] == pytest.approx(T.hscore(x, y), rel=1e-4)
    assert top["leep"] < 0 and top["nce"] <= 0 and 0 < top["similarity"] <= 1
    table = (workdir / "transferability.md").read_text()
    # one pair, one depth: nothing to rank (the tables' content: test_per_layer_table..., the rank statistics)
    assert ("| all | linear probe (frozen_depth=all) | logme, leep, nce, hscore, hscore_lw, fewshot, similarity | "
            "1 (1 x 1) | too few pairs (3+) |" in table) and "Per layer: no pair measured at two" in table

    # the command: the source (from the sweep's cache), a run directory, and weights without a classifier
    w, meta = weights_lib.load_weights(weights_dir)
    headless = tmp_path / "headless"
    weights_lib.save_weights(headless, {c: {k: v for k, v in t.items() if not k.startswith("head.")}
                                        for c, t in w.items()}, meta)
    out = tmp_path / "rank.csv"
    names = [str(weights_dir.parent), str(workdir / "frozen_depth-all"), str(headless)]
    assert command.main([*args[:4], "--weights", ",".join(names), "--out", str(out), "--layers",
                         "--scores", "logme,leep,nce,hscore,fewshot"]) == 0
    printed = capsys.readouterr().out
    assert f"note: {headless}: no LEEP or NCE: the weights hold no classifier" in printed
    assert "2 scored, 1 read from" in printed and "| 1 | " in printed and "| depth (of units) |" in printed
    ranked = pd.read_csv(out)
    assert len(ranked) == 9 and ranked[ranked["candidate"] == str(headless)][["leep", "nce"]].isna().all().all()
    source = ranked[ranked["candidate"] == names[0]].reset_index(drop=True)
    assert np.allclose(source[["logme", "fewshot", "leep"]], frame[["logme", "fewshot", "leep"]], equal_nan=True)

    for bad, key in ((["--weights", str(tmp_path / "none")], "--weights="),
                     (["--weights", names[0], "--scores", "logme,bogus"], "--scores=")):
        assert command.main([*args[:4], *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {key}") and "\n" not in err
