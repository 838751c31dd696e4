"""Metrics of held-out predictions, with confidence intervals by bootstrap over participants.

Windows of one participant are correlated, so resampling windows would understate the
uncertainty: every interval here resamples *participants* with replacement and keeps all
their windows (a cluster bootstrap), and reports the percentile interval.

Point estimates come from scikit-learn where it has the metric (balanced accuracy, AUROC,
Cohen's κ, macro-F1, MAE, R²). The bootstrap needs each metric on ~1000 resamples per
evaluation set, which scikit-learn's input checks make slow (~5 ms per resample), so the
resamples use the same formulas on weighted counts (a resample = integer weights on windows:
how often each window's participant was drawn), all resamples of a chunk as one matrix
product. With unit weights these equal scikit-learn's values; tests assert it.

A resample that lacks a class present in the evaluated set is *degenerate* (AUROC, κ and
balanced accuracy change meaning or are undefined): it is skipped and counted in
``BootstrapInfo.n_degenerate``; intervals come from the remaining resamples, and are left
out (``None``) when fewer than ``min_used_fraction`` of the resamples remain.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

Level = Literal["window", "participant"]
Task = Literal["classification", "regression"]

CLASSIFICATION_METRICS: tuple[str, ...] = ("balanced_accuracy", "auroc", "cohen_kappa", "macro_f1", "ece")
REGRESSION_METRICS: tuple[str, ...] = ("mae", "r2")
#: Metrics where smaller is better; the worst site is then the one with the largest value.
LOWER_IS_BETTER: frozenset[str] = frozenset({"ece", "mae"})
METRIC_LABELS: dict[str, str] = {
    "balanced_accuracy": "balanced accuracy",
    "auroc": "AUROC",
    "cohen_kappa": "Cohen's κ",
    "macro_f1": "macro-F1",
    "ece": "ECE",
    "mae": "MAE",
    "r2": "R²",
}

# Bound the (resamples × windows) weight matrix of one chunk to ~16 MB of float64.
_CHUNK_CELLS = 2_000_000


class MetricValue(BaseModel):
    """One metric: the point estimate and its percentile bootstrap interval (``None`` = undefined)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None


class BootstrapInfo(BaseModel):
    """How the intervals of a :class:`MetricSet` were computed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unit: Literal["participant"] = "participant"
    n_boot: int = Field(description="resamples drawn")
    n_used: int = Field(description="resamples that entered the intervals")
    n_degenerate: int = Field(description="resamples skipped: a class (or, for R², all variance) missing")
    confidence: float
    seed: int
    min_used_fraction: float


class MetricSet(BaseModel):
    """Metrics of one evaluation set (a site's test participants, or several sites pooled)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: Task
    level: Level = Field(description="'window': one prediction per window; 'participant': mean probability per participant")
    n_samples: int
    n_participants: int
    n_classes: int | None = None
    ece_bins: int | None = Field(default=None, description="equal-width confidence bins of the ECE")
    metrics: dict[str, MetricValue]
    bootstrap: BootstrapInfo | None = None
    notes: list[str] = Field(default_factory=list)

    def value(self, name: str) -> float | None:
        metric = self.metrics.get(name)
        return None if metric is None else metric.value


class LevelMetrics(BaseModel):
    """Window-level and participant-level metrics of the same predictions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: MetricSet
    participant: MetricSet | None = Field(
        default=None, description="absent when a participant's windows carry several classes (event-locked labels)"
    )


class SiteSummary(BaseModel):
    """A metric across sites: the unweighted mean (each hospital counts once) and the worst site."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: float | None
    worst: float | None
    worst_site: str | None
    n_sites: int


# --------------------------------------------------------------------------- input checks
def _check_inputs(y_true: np.ndarray, participant: np.ndarray, n: int, what: str) -> None:
    if y_true.ndim != 1 or len(y_true) != n:
        raise ValueError(
            f"Invalid value for the 'y_true' parameter: expected a 1-D array of length {n} (one per "
            f"row of {what}), got shape {y_true.shape}"
        )
    if participant.shape != (n,):
        raise ValueError(
            f"Invalid value for the 'participant' parameter: expected one participant per row of {what} "
            f"(shape ({n},)), got shape {participant.shape}"
        )
    if n == 0:
        raise ValueError("no predictions to evaluate: the evaluation set is empty (does the site have test participants?)")


def _check_proba(y_true: np.ndarray, proba: np.ndarray) -> int:
    if proba.ndim != 2 or proba.shape[1] < 2:
        raise ValueError(
            f"Invalid value for the 'proba' parameter: expected (n, n_classes ≥ 2) class probabilities, "
            f"got shape {proba.shape}"
        )
    if not np.isfinite(proba).all() or (proba < 0).any() or not np.allclose(proba.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError(
            "Invalid value for the 'proba' parameter: rows must be finite, non-negative and sum to 1 "
            "(pass softmax probabilities, not logits)"
        )
    n_classes = proba.shape[1]
    if not np.issubdtype(y_true.dtype, np.integer) or y_true.min() < 0 or y_true.max() >= n_classes:
        raise ValueError(
            f"Invalid value for the 'y_true' parameter: expected integer class indices in [0, {n_classes}) "
            f"to match proba's {n_classes} columns, got values in [{y_true.min()}, {y_true.max()}]"
        )
    return n_classes


# --------------------------------------------------------------------------- participant level
def participant_mean(values: np.ndarray, participant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted participant keys, mean of ``values``' rows per participant)."""
    keys, codes = np.unique(participant, return_inverse=True)
    values = np.asarray(values, dtype=np.float64)
    flat = values.reshape(len(values), -1)
    sums = np.zeros((len(keys), flat.shape[1]))
    np.add.at(sums, codes, flat)
    means = sums / np.bincount(codes, minlength=len(keys))[:, None]
    return keys, means.reshape((len(keys), *values.shape[1:]))


def participant_labels(y_true: np.ndarray, participant: np.ndarray) -> np.ndarray | None:
    """Each participant's label (sorted by key), or ``None`` when someone's windows disagree."""
    keys, codes = np.unique(participant, return_inverse=True)
    lo = np.full(len(keys), np.iinfo(np.int64).max)
    hi = np.full(len(keys), np.iinfo(np.int64).min)
    y = np.asarray(y_true, dtype=np.int64)
    np.minimum.at(lo, codes, y)
    np.maximum.at(hi, codes, y)
    return None if (hi != lo).any() else lo


# --------------------------------------------------------------------------- weighted formulas
def _ece_bins(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    # Bin b holds confidences in (edge_b, edge_b+1] with edges np.linspace(0, 1, M + 1); a
    # confidence of exactly 0 goes to bin 0. searchsorted on the edges, not ceil(c·M), so that
    # 0.3 lands in (0.2, 0.3] although 0.3·10 = 3.0000000000000004 in floating point.
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, *, n_bins: int = 10) -> float:
    """Top-label ECE with ``n_bins`` equal-width bins of the predicted class's probability.

    ECE = Σ_b (n_b / n) · |accuracy_b − mean confidence_b|, where bin b holds the predictions
    whose confidence lies in (b/M, (b+1)/M] (bin 0 also takes 0); empty bins contribute 0.
    """
    y_true, proba = np.asarray(y_true), np.asarray(proba, dtype=np.float64)
    _check_proba(y_true, proba)
    return float(classification_scores(y_true, proba, n_bins=n_bins)["ece"][0])


def _weighted_auc(weights: np.ndarray, positive: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC (ties count ½) per row of ``weights``; equals sklearn's trapezoidal ROC AUC."""
    order = np.argsort(score, kind="mergesort")
    ranked = score[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    w = weights[:, order]
    pos = np.add.reduceat(w * positive[order], starts, axis=1)
    neg = np.add.reduceat(w * ~positive[order], starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    numerator = (pos * (below + 0.5 * neg)).sum(axis=1)
    denominator = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def classification_scores(
    y_true: np.ndarray, proba: np.ndarray, *, weights: np.ndarray | None = None, n_bins: int = 10
) -> dict[str, np.ndarray]:
    """Every classification metric for each row of ``weights`` (b, n); ``None`` = one row of ones.

    Integer weights are how often each sample is repeated, so a row is one bootstrap
    resample. Undefined values are NaN. Same definitions as scikit-learn: balanced accuracy
    averages recall over the classes present in ``y_true``; macro-F1 averages over the
    classes in ``y_true`` or the predictions; AUROC is binary (class 1's probability) for 2
    classes, else the macro one-vs-rest mean, undefined unless every class is present.
    """
    n, n_classes = proba.shape
    w = np.ones((1, n)) if weights is None else np.asarray(weights, dtype=np.float64)
    pred = proba.argmax(axis=1)
    cells = np.zeros((n, n_classes * n_classes))
    cells[np.arange(n), y_true * n_classes + pred] = 1.0
    confusion = (w @ cells).reshape(len(w), n_classes, n_classes)
    diag = np.diagonal(confusion, axis1=1, axis2=2)
    rows, cols = confusion.sum(axis=2), confusion.sum(axis=1)
    total = rows.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        present = rows > 0
        recall = np.where(present, diag / np.where(present, rows, 1), 0.0)
        balanced = recall.sum(axis=1) / present.sum(axis=1)
        observed = diag.sum(axis=1) / total
        expected = (rows * cols).sum(axis=1) / total**2
        kappa = np.where(expected < 1, (observed - expected) / (1 - expected), np.nan)
        seen = (rows + cols) > 0
        f1 = np.where(seen, 2 * diag / np.where(seen, rows + cols, 1), 0.0).sum(axis=1) / seen.sum(axis=1)
        confidence = proba.max(axis=1)
        bins = np.zeros((n, n_bins))
        bins[np.arange(n), _ece_bins(confidence, n_bins)] = 1.0
        correct = (pred == y_true).astype(np.float64)
        gap = w @ (bins * correct[:, None]) - w @ (bins * confidence[:, None])
        ece = np.abs(gap).sum(axis=1) / total
    if n_classes == 2:
        auroc = _weighted_auc(w, y_true == 1, proba[:, 1])
    else:
        per_class = np.stack([_weighted_auc(w, y_true == k, proba[:, k]) for k in range(n_classes)])
        auroc = per_class.mean(axis=0)  # NaN when any class is absent, as in sklearn
    return {"balanced_accuracy": balanced, "auroc": auroc, "cohen_kappa": kappa, "macro_f1": f1, "ece": ece}


def regression_scores(y_true: np.ndarray, y_pred: np.ndarray, *, weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """MAE and R² for each row of ``weights`` (sklearn's weighted definitions; R² NaN if y is constant)."""
    w = np.ones((1, len(y_true))) if weights is None else np.asarray(weights, dtype=np.float64)
    y, e = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64) - np.asarray(y_true, np.float64)
    total = w.sum(axis=1)
    mean = (w @ y) / total
    residual = w @ e**2
    spread = (w * (y[None, :] - mean[:, None]) ** 2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(spread > 0, 1 - residual / np.where(spread > 0, spread, 1), np.nan)
    return {"mae": (w @ np.abs(e)) / total, "r2": r2}


# --------------------------------------------------------------------------- scikit-learn point estimates
def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _sklearn_classification(y_true: np.ndarray, proba: np.ndarray, n_bins: int) -> dict[str, float | None]:
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, f1_score, roc_auc_score

    pred = proba.argmax(axis=1)
    n_classes = proba.shape[1]
    with warnings.catch_warnings():
        # sklearn warns (and returns NaN) for undefined cases; we report those as None.
        warnings.simplefilter("ignore")
        values: dict[str, float | None] = {
            "balanced_accuracy": _finite(balanced_accuracy_score(y_true, pred)),
            "cohen_kappa": _finite(cohen_kappa_score(y_true, pred)),
            "macro_f1": _finite(f1_score(y_true, pred, average="macro")),
        }
        if len(np.unique(y_true)) < n_classes:
            values["auroc"] = None
        elif n_classes == 2:
            values["auroc"] = _finite(roc_auc_score(y_true, proba[:, 1]))
        else:
            values["auroc"] = _finite(
                roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=list(range(n_classes)))
            )
    values["ece"] = _finite(classification_scores(y_true, proba, n_bins=n_bins)["ece"][0])
    return values


# --------------------------------------------------------------------------- bootstrap
def participant_resamples(participant: np.ndarray, *, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Chunks (b, n) of window weights: each row draws participants with replacement and keeps all
    their windows, so a window's weight is how often its participant was drawn."""
    _, codes = np.unique(participant, return_inverse=True)
    n_units = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, _CHUNK_CELLS // max(len(codes), 1)))
    uniform = np.full(n_units, 1.0 / n_units)
    for start in range(0, n_boot, chunk):
        # Multinomial counts are exactly the draw counts of n_units draws with replacement.
        counts = rng.multinomial(n_units, uniform, size=min(chunk, n_boot - start))
        yield counts[:, codes].astype(np.float64)


def _percentile_interval(
    samples: dict[str, list[np.ndarray]], names: Sequence[str], *, confidence: float, needed: int
) -> dict[str, tuple[float | None, float | None]]:
    out: dict[str, tuple[float | None, float | None]] = {}
    tail = 100 * (1 - confidence) / 2
    for name in names:
        values = np.concatenate(samples[name]) if samples[name] else np.zeros(0)
        values = values[np.isfinite(values)]
        if len(values) < needed:
            out[name] = (None, None)
        else:
            low, high = np.percentile(values, [tail, 100 - tail])
            out[name] = (float(low), float(high))
    return out


def _check_bootstrap(n_boot: int, confidence: float, min_used_fraction: float) -> None:
    if n_boot < 0:
        raise ValueError(f"Invalid value for the 'n_boot' parameter: {n_boot}; it must be ≥ 0 (0 = no intervals)")
    if not 0 < confidence < 1:
        raise ValueError(f"Invalid value for the 'confidence' parameter: {confidence}; it must be in (0, 1), e.g. 0.95")
    if not 0 < min_used_fraction <= 1:
        raise ValueError(f"Invalid value for the 'min_used_fraction' parameter: {min_used_fraction}; it must be in (0, 1]")


def classification_metrics(
    y_true: np.ndarray,
    proba: np.ndarray,
    participant: np.ndarray,
    *,
    level: Level = "window",
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    n_bins: int = 10,
    min_used_fraction: float = 0.5,
) -> MetricSet:
    """Balanced accuracy, AUROC, Cohen's κ, macro-F1 and ECE of ``proba`` (n, n_classes), with
    percentile intervals from ``n_boot`` participant resamples (seeded by ``seed``).

    ``participant`` gives each row's participant (any hashable-as-array keys); at participant
    level pass one row per participant (see :func:`participant_level`).
    """
    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=np.float64)
    participant = np.asarray(participant)
    _check_inputs(y_true, participant, len(proba), "proba")
    n_classes = _check_proba(y_true, proba)
    _check_bootstrap(n_boot, confidence, min_used_fraction)
    if n_bins < 1:
        raise ValueError(f"Invalid value for the 'n_bins' parameter: {n_bins}; it must be ≥ 1 (10 is usual)")
    y_true = y_true.astype(np.int64)
    point = _sklearn_classification(y_true, proba, n_bins)
    notes = []
    present = np.unique(y_true)
    if len(present) < n_classes:
        notes.append(
            f"only class(es) {present.tolist()} of {n_classes} occur in this set: AUROC is undefined"
        )
    samples: dict[str, list[np.ndarray]] = {name: [] for name in CLASSIFICATION_METRICS}
    used = degenerate = 0
    onehot = np.zeros((len(y_true), n_classes))
    onehot[np.arange(len(y_true)), y_true] = 1.0
    for weights in participant_resamples(participant, n_boot=n_boot, seed=seed):
        # Skip resamples that lost a class the set has: the metric would change meaning.
        keep = ((weights @ onehot)[:, present] > 0).all(axis=1)
        degenerate += int((~keep).sum())
        used += int(keep.sum())
        if keep.any():
            for name, values in classification_scores(y_true, proba, weights=weights[keep], n_bins=n_bins).items():
                samples[name].append(values)
    needed = max(1, math.ceil(min_used_fraction * n_boot))
    if n_boot and used < needed:
        notes.append(
            f"{degenerate} of {n_boot} resamples lacked a class: too few left for intervals "
            f"(need {needed}); add test participants"
        )
    intervals = _percentile_interval(samples, CLASSIFICATION_METRICS, confidence=confidence, needed=needed)
    metrics = {
        name: MetricValue(
            value=point[name],
            ci_low=intervals[name][0] if point[name] is not None else None,
            ci_high=intervals[name][1] if point[name] is not None else None,
        )
        for name in CLASSIFICATION_METRICS
    }
    return MetricSet(
        task="classification",
        level=level,
        n_samples=len(y_true),
        n_participants=len(np.unique(participant)),
        n_classes=n_classes,
        ece_bins=n_bins,
        metrics=metrics,
        bootstrap=BootstrapInfo(n_boot=n_boot, n_used=used, n_degenerate=degenerate, confidence=confidence,
                                seed=seed, min_used_fraction=min_used_fraction) if n_boot else None,
        notes=notes,
    )


def regression_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    participant: np.ndarray,
    *,
    level: Level = "window",
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    min_used_fraction: float = 0.5,
) -> MetricSet:
    """MAE and R² with participant-bootstrap intervals; a resample whose targets are all equal
    (R² undefined) is degenerate: skipped and counted."""
    from sklearn.metrics import mean_absolute_error, r2_score

    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    participant = np.asarray(participant)
    _check_inputs(y_true, participant, len(y_pred), "y_pred")
    if y_pred.shape != y_true.shape or not (np.isfinite(y_true).all() and np.isfinite(y_pred).all()):
        raise ValueError(
            f"Invalid value for the 'y_pred' parameter: expected finite values of shape {y_true.shape} "
            f"(one per target), got shape {y_pred.shape}"
        )
    _check_bootstrap(n_boot, confidence, min_used_fraction)
    point = {
        "mae": _finite(mean_absolute_error(y_true, y_pred)),
        "r2": _finite(r2_score(y_true, y_pred, force_finite=False)) if len(y_true) > 1 else None,
    }
    samples: dict[str, list[np.ndarray]] = {name: [] for name in REGRESSION_METRICS}
    used = degenerate = 0
    for weights in participant_resamples(participant, n_boot=n_boot, seed=seed):
        scores = regression_scores(y_true, y_pred, weights=weights)
        keep = np.isfinite(scores["r2"])
        degenerate += int((~keep).sum())
        used += int(keep.sum())
        for name in REGRESSION_METRICS:
            samples[name].append(scores[name][keep])
    needed = max(1, math.ceil(min_used_fraction * n_boot))
    notes = [] if not n_boot or used >= needed else [
        f"{degenerate} of {n_boot} resamples had constant targets: too few left for intervals (need {needed})"
    ]
    intervals = _percentile_interval(samples, REGRESSION_METRICS, confidence=confidence, needed=needed)
    return MetricSet(
        task="regression",
        level=level,
        n_samples=len(y_true),
        n_participants=len(np.unique(participant)),
        metrics={
            name: MetricValue(value=point[name], ci_low=intervals[name][0] if point[name] is not None else None,
                              ci_high=intervals[name][1] if point[name] is not None else None)
            for name in REGRESSION_METRICS
        },
        bootstrap=BootstrapInfo(n_boot=n_boot, n_used=used, n_degenerate=degenerate, confidence=confidence,
                                seed=seed, min_used_fraction=min_used_fraction) if n_boot else None,
        notes=notes,
    )


def participant_level(
    y_true: np.ndarray, proba: np.ndarray, participant: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(labels, mean probability, keys) with one row per participant, sorted by key; ``None``
    when a participant's windows carry different labels (no single label to score)."""
    labels = participant_labels(y_true, participant)
    if labels is None:
        return None
    keys, mean_proba = participant_mean(proba, participant)
    return labels, mean_proba, keys


def evaluate_predictions(
    y_true: np.ndarray,
    proba: np.ndarray,
    participant: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    n_bins: int = 10,
) -> LevelMetrics:
    """Window-level metrics, and participant-level ones on the mean probability per participant.

    Both levels bootstrap the same participants (same seed), so their intervals are comparable.
    """
    window = classification_metrics(y_true, proba, participant, level="window", n_boot=n_boot, seed=seed,
                                    confidence=confidence, n_bins=n_bins)
    per_participant = participant_level(np.asarray(y_true), np.asarray(proba), np.asarray(participant))
    if per_participant is None:
        return LevelMetrics(window=window.model_copy(update={"notes": [
            *window.notes, "participants' windows carry different labels: no participant-level metrics"]}))
    labels, mean_proba, keys = per_participant
    return LevelMetrics(
        window=window,
        participant=classification_metrics(labels, mean_proba, keys, level="participant", n_boot=n_boot,
                                           seed=seed, confidence=confidence, n_bins=n_bins),
    )


def summarise_sites(per_site: Mapping[str, MetricSet]) -> dict[str, SiteSummary]:
    """Per metric: unweighted mean over sites and the worst site (lowest, or highest for ECE/MAE)."""
    names = sorted({name for metrics in per_site.values() for name in metrics.metrics})
    out: dict[str, SiteSummary] = {}
    for name in names:
        values = {site: m.value(name) for site, m in sorted(per_site.items())}
        defined = {site: v for site, v in values.items() if v is not None}
        if not defined:
            out[name] = SiteSummary(mean=None, worst=None, worst_site=None, n_sites=0)
            continue
        pick = max if name in LOWER_IS_BETTER else min
        worst_site = pick(defined, key=lambda s: defined[s])
        out[name] = SiteSummary(mean=float(np.mean(list(defined.values()))), worst=defined[worst_site],
                                worst_site=worst_site, n_sites=len(defined))
    return out
