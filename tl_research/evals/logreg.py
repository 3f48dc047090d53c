"""Fixed-feature logistic regression probe (Kornblith, Shlens, Le 2019, *Do Better ImageNet Models Transfer
Better?*, arXiv 1805.08974, Section 3 and Appendix A.3): an L2-regularised multinomial logistic regression
fit by L-BFGS on the frozen penultimate features of the whole training split, its inverse regularisation
strength C chosen by validation accuracy from a log-spaced grid, then refit on training plus validation with
that C and scored on test.

scikit-learn's LogisticRegression (lbfgs) is the solver. Features are standardised with the training split's
mean and standard deviation first (the solver's conditioning; C is searched over a grid wide enough that
this changes which C is chosen, not how well the best C does). Deterministic: L-BFGS from zero weights.
"""
from __future__ import annotations

import math

import ml_collections
import numpy as np

# Kornblith et al. search 45 log-spaced values of C from 1e-6 to 1e5; 12 over the same range by default here
C_GRID = tuple(float(c) for c in np.logspace(-6, 5, 12))


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        cs=C_GRID,  # the grid of C (inverse L2 strength) searched on the validation split
        max_iter=1000,  # L-BFGS iterations per fit
        max_examples=0,  # at most this many training examples (a seeded stratified draw); 0 = all
    ))


def _fit(x, y, c: float, max_iter: int):
    import warnings
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a weakly regularised fit may stop at max_iter
        return LogisticRegression(C=c, solver="lbfgs", max_iter=max_iter).fit(x, y)


def probe(train_x, train_y, val_x, val_y, test_x, test_y, *, cs=C_GRID, max_iter: int = 1000) -> dict:
    """{"accuracy": test accuracy of the refit, "val_accuracy": the best C's validation accuracy, "c": that C}.
    Ties between values of C go to the strongest regularisation (the smallest C)."""
    train_x, val_x, test_x = (np.asarray(a, np.float64) for a in (train_x, val_x, test_x))
    mean, std = train_x.mean(0), train_x.std(0)
    std = np.where(std > 0, std, 1.0)
    z = lambda a: (a - mean) / std  # noqa: E731
    best_c, best_acc = math.nan, -1.0
    for c in sorted(float(c) for c in cs):
        acc = float((_fit(z(train_x), train_y, c, max_iter).predict(z(val_x)) == np.asarray(val_y)).mean())
        if acc > best_acc:
            best_c, best_acc = c, acc
    both_x, both_y = np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y])
    model = _fit(z(both_x), both_y, best_c, max_iter)
    return {"accuracy": float((model.predict(z(test_x)) == np.asarray(test_y)).mean()),
            "val_accuracy": best_acc, "c": best_c}
