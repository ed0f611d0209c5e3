"""Metrics: rating (MSE, RMSE, MAE), binary (accuracy, AUC, log loss).

All functions take NumPy arrays and compute in float64.

Example
-------
>>> import numpy as np
>>> from recjax.evaluation import rmse, accuracy
>>> rmse(np.array([1.0, 3.0]), np.array([2.0, 3.0]))
0.7071067811865476
>>> accuracy(np.array([2.0, -1.0, 0.5]), np.array([1, 0, 0]))
0.6666666666666666
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

__all__ = ["mse", "rmse", "mae", "accuracy", "auc", "log_loss", "rating_metrics", "binary_metrics"]


def _pair(predictions, targets) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(predictions, np.float64).ravel()
    t = np.asarray(targets, np.float64).ravel()
    if p.shape != t.shape:
        raise ValueError(f"predictions ({p.size}) and targets ({t.size}) differ in length")
    if p.size == 0:
        raise ValueError("no predictions to score")
    return p, t


def mse(predictions, targets) -> float:
    """Mean squared error."""
    p, t = _pair(predictions, targets)
    return float(np.mean((p - t) ** 2))


def rmse(predictions, targets) -> float:
    """Root mean squared error."""
    return float(np.sqrt(mse(predictions, targets)))


def mae(predictions, targets) -> float:
    """Mean absolute error."""
    p, t = _pair(predictions, targets)
    return float(np.mean(np.abs(p - t)))


def accuracy(logits, labels) -> float:
    """Share of examples whose logit sign (> 0 means class 1) matches the {0, 1} label."""
    p, t = _pair(logits, labels)
    return float(np.mean((p > 0) == (t > 0.5)))


def auc(scores, labels) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties count half); NaN with one class."""
    s, t = _pair(scores, labels)
    positive = t > 0.5
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(logits, labels) -> float:
    """Mean binary cross-entropy of logits against {0, 1} labels (nats)."""
    z, t = _pair(logits, labels)
    # log(1 + e^z) - t z, computed stably
    return float(np.mean(np.logaddexp(0.0, z) - t * z))


def rating_metrics(predictions, targets, prefix: str = "") -> dict[str, float]:
    """``{prefix}mse``, ``rmse`` and ``mae``."""
    return {f"{prefix}mse": mse(predictions, targets), f"{prefix}rmse": rmse(predictions, targets),
            f"{prefix}mae": mae(predictions, targets)}


def binary_metrics(logits, labels, prefix: str = "") -> dict[str, float]:
    """``{prefix}accuracy``, ``auc`` and ``log_loss`` of logits."""
    return {f"{prefix}accuracy": accuracy(logits, labels), f"{prefix}auc": auc(logits, labels),
            f"{prefix}log_loss": log_loss(logits, labels)}
