"""Transferability scores: how well a source model suits a target, from its frozen features (or its source
classifier's predictions) on the target's labelled training images, without fine-tuning. Pure numpy, float64,
deterministic; higher is better for every score.

    logme(features, labels)        You et al. 2021 (ICML, arXiv 2102.11005), LogME: the maximum evidence of a
                                   Bayesian linear regression from the features to each class's one-hot column,
                                   per example, averaged over classes
    leep(source_probs, labels)     Nguyen et al. 2020 (ICML, arXiv 2002.12462), LEEP: the mean log-likelihood of
                                   the "expected empirical predictor" built from the source classifier's softmax
                                   over its own classes on the target images
    nce(source_labels, labels)     Tran et al. 2019 (ICCV, arXiv 1908.08142), NCE: -H(Y | Z), Z the source
                                   classifier's hard label
    hscore(features, labels)       Bao et al. 2019 (ICIP), H-score: tr(cov(f)^-1 cov(E[f | y])); with
                                   shrinkage=True the Ledoit-Wolf-regularised one of Ibrahim et al. 2022
                                   (ICLR, arXiv 2110.06893)

LogME, as the paper's Algorithm 1 and the reference code (github.com/thuml/LogME): for each class c, y = the
0/1 column of c, prior w ~ N(0, alpha^-1 I), noise ~ N(0, beta^-1); MacKay's fixed point

    gamma = sum_i beta s_i / (alpha + beta s_i),   alpha <- gamma / |m|^2,   beta <- (N - gamma) / |y - F m|^2

(s_i the eigenvalues of F^T F, m the posterior mean), from alpha = beta = 1 until alpha / beta changes by
less than `tol` (relative), then the log evidence per example

    L = D/2 log alpha + N/2 log beta - 1/2 log|alpha I + beta F^T F| - beta/2 |y - F m|^2 - alpha/2 |m|^2
        - N/2 log 2 pi.

It is computed from one thin SVD of F (not the eigenvalues of F^T F, which square its condition number),
with the D - rank(F) zero eigenvalues' terms cancelled in closed form (log|A| = (D - r) log alpha +
sum_{i<r} log(alpha + beta s_i)), so N < D costs nothing extra and rank-deficient features (a dead layer)
give a finite score. `eps` = 1e-5 is added to the two denominators as the reference code does, which keeps
alpha and beta finite when a feature set fits a class exactly.
"""
from __future__ import annotations

import math

import numpy as np

SCORES = ("logme", "leep", "nce", "hscore")  # this module's; the report adds "fewshot" and "similarity"
LOGME_TOL, LOGME_MAX_ITER, LOGME_EPS = 1e-6, 100, 1e-5


def _labels(labels, n: int) -> tuple[np.ndarray, int]:
    """(index of each example's class among the classes present, number of classes present)."""
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} examples")
    classes, index = np.unique(labels, return_inverse=True)
    return index.reshape(-1), len(classes)


def _features(features) -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or not len(f):
        raise ValueError(f"features must be (N, D) with N > 0, got shape {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError("features hold NaN or inf")
    return f


# ---------------------------------------------------------------------------------------------- LogME

def logme_evidence(features, targets, *, tol: float = LOGME_TOL, max_iter: int = LOGME_MAX_ITER,
                   eps: float = LOGME_EPS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(evidence per example, alpha, beta), one of each per column of `targets` (N, K) (or (N,): one column),
    by the fixed-point iteration of the module docstring."""
    f = _features(features)
    n = f.shape[0]
    y = np.asarray(targets, dtype=np.float64).reshape(n, -1)
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    rank = int(np.sum(s > s.max(initial=0.0) * max(f.shape) * np.finfo(np.float64).eps))
    sigma = (s[:rank] ** 2)[:, None]  # (r, 1): the nonzero eigenvalues of F^T F
    x2 = (u[:, :rank].T @ y) ** 2  # (r, K): y's energy along each left singular vector
    rest = np.maximum((y ** 2).sum(axis=0) - x2.sum(axis=0), 0.0)  # outside F's column space
    k = y.shape[1]
    alpha, beta = np.ones(k), np.ones(k)
    m2, res2, active = np.zeros(k), np.zeros(k), np.ones(k, dtype=bool)
    for _ in range(max_iter):
        t = alpha / beta
        shrink = t / (t + sigma)  # (r, K)
        gamma = (sigma / (sigma + t)).sum(axis=0)
        m2_new = (sigma * x2 / (t + sigma) ** 2).sum(axis=0)  # |m|^2
        res2_new = (x2 * shrink ** 2).sum(axis=0) + rest  # |y - F m|^2
        alpha_new, beta_new = gamma / (m2_new + eps), (n - gamma) / (res2_new + eps)
        t_new = alpha_new / beta_new
        m2 = np.where(active, m2_new, m2)
        res2 = np.where(active, res2_new, res2)
        alpha, beta = np.where(active, alpha_new, alpha), np.where(active, beta_new, beta)
        active &= ~((np.abs(t_new - t) < tol * t) | (t_new == t))
        if not active.any():
            break
    log_det = np.log1p(beta * sigma / alpha).sum(axis=0)  # log|A| - D log alpha
    evidence = (n / 2.0 * np.log(beta) - 0.5 * log_det - beta / 2.0 * (res2 + eps) - alpha / 2.0 * (m2 + eps)
                - n / 2.0 * math.log(2 * math.pi))
    return evidence / n, alpha, beta


def logme(features, labels, **kw) -> float:
    """LogME (You et al. 2021): the per-example log evidence of each class's one-hot column, averaged over the
    classes present in `labels`. Keyword arguments go to logme_evidence (tol, max_iter, eps)."""
    f = _features(features)
    index, c = _labels(labels, len(f))
    onehot = np.zeros((len(f), c))
    onehot[np.arange(len(f)), index] = 1.0
    return float(np.mean(logme_evidence(f, onehot, **kw)[0]))


# ---------------------------------------------------------------------------------------------- LEEP, NCE

def softmax(logits) -> np.ndarray:
    """Row-wise softmax in float64 (stable: the row maximum subtracted first)."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def leep(source_probs, labels) -> float:
    """LEEP (Nguyen et al. 2020). theta (N, Cs): the source classifier's softmax on each target image. With the
    empirical joint P(y, z) = 1/N sum_{i: y_i = y} theta_i(z) and P(y | z) = P(y, z) / P(z),

        LEEP = 1/N sum_i log sum_z P(y_i | z) theta_i(z)."""
    p = np.asarray(source_probs, dtype=np.float64)
    if p.ndim != 2 or not len(p):
        raise ValueError(f"source_probs must be (N, Cs), got shape {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("source_probs rows must be probabilities (the softmax, not the logits: see softmax())")
    index, c = _labels(labels, len(p))
    joint = np.zeros((c, p.shape[1]))
    np.add.at(joint, index, p / len(p))
    pz = joint.sum(axis=0)
    keep = pz > 0  # a source class no image gives any probability adds nothing
    conditional = joint[:, keep] / pz[keep]  # P(y | z)
    eep = (p[:, keep] * conditional[index]).sum(axis=1)
    return float(np.mean(np.log(eep)))


def nce(source_labels, labels) -> float:
    """NCE (Tran et al. 2019): -H(Y | Z) = sum_{y, z} P(y, z) log P(y | z), the empirical joint of the target
    label y and the source classifier's hard label z over the target images (0 when z determines y)."""
    z = np.asarray(source_labels).reshape(-1)
    index, c = _labels(labels, len(z))
    zs, zi = np.unique(z, return_inverse=True)
    joint = np.zeros((c, len(zs)))
    np.add.at(joint, (index, zi.reshape(-1)), 1.0 / len(z))
    pz = np.broadcast_to(joint.sum(axis=0), joint.shape)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log(joint[nz] / pz[nz])))


# ---------------------------------------------------------------------------------------------- H-score

def ledoit_wolf(x) -> tuple[np.ndarray, float]:
    """(the Ledoit-Wolf shrunk covariance (1 - a) S + a tr(S)/D I, the shrinkage a) of centred rows `x`, S =
    x^T x / N (Ledoit & Wolf 2004, as scikit-learn's ledoit_wolf with assume_centered=True)."""
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    emp = x.T @ x / n
    mu = np.trace(emp) / d
    delta = np.sum((emp - mu * np.eye(d)) ** 2) / d  # |S - mu I|_F^2 / D
    x2 = x ** 2
    beta = (np.sum(x2.T @ x2) / n - np.sum(emp ** 2)) / (d * n)  # the estimate of |S - Sigma|_F^2 / D
    a = 0.0 if delta == 0 else min(beta, delta) / delta
    return (1.0 - a) * emp + a * mu * np.eye(d), float(a)


def hscore(features, labels, *, shrinkage: bool = False) -> float:
    """H-score (Bao et al. 2019): tr(cov(f)^+ cov(E[f | y])), the between-class covariance against the
    feature covariance (pseudo-inverse, numpy's default cut-off). shrinkage=True: Ibrahim et al. 2022's
    regularised H-score, tr(cov_a(f)^-1 (1 - a) cov(E[f | y])) with cov_a the Ledoit-Wolf estimate of
    shrinkage a. Both covariances normalised by N (the ratio does not depend on it)."""
    f = _features(features)
    f = f - f.mean(axis=0)
    index, c = _labels(labels, len(f))
    counts = np.bincount(index, minlength=c).astype(np.float64)
    means = np.zeros((c, f.shape[1]))
    np.add.at(means, index, f)
    means /= counts[:, None]
    between = (means * (counts / len(f))[:, None]).T @ means  # sum_c n_c/N mu_c mu_c^T (overall mean 0)
    if shrinkage:
        cov, a = ledoit_wolf(f)
        return float(np.trace(np.linalg.pinv(cov, hermitian=True) @ ((1.0 - a) * between)))
    cov = f.T @ f / len(f)
    return float(np.trace(np.linalg.pinv(cov, hermitian=True) @ between))
