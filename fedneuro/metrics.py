"""Metric functions only (numpy), usable by training, federation and evaluation alike."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts, rows = true class, columns = predicted class."""
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return counts


def balanced_accuracy(confusion: np.ndarray) -> float:
    """Mean per-class recall over the classes present; pooled counts give the pooled value."""
    confusion = np.asarray(confusion)
    totals = confusion.sum(axis=1)
    present = totals > 0
    if not present.any():
        return float("nan")
    recalls = np.diag(confusion)[present] / totals[present]
    return float(recalls.mean())


def sum_confusions(confusions: Sequence[np.ndarray]) -> np.ndarray:
    return np.sum(np.stack([np.asarray(c) for c in confusions]), axis=0)
