"""Evaluation metrics: hand-computed values, agreement with scikit-learn, participant bootstrap."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import (
    balanced_accuracy_score,
    cohen_kappa_score,
    f1_score,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
)

from fedneuro.evaluation.metrics import (
    CLASSIFICATION_METRICS,
    MetricSet,
    classification_metrics,
    classification_scores,
    evaluate_predictions,
    expected_calibration_error,
    participant_level,
    participant_resamples,
    regression_metrics,
    regression_scores,
    summarise_sites,
)
from fedneuro.metrics import balanced_accuracy, confusion_counts


def _binary(p1: list[float]) -> np.ndarray:
    p = np.asarray(p1, dtype=np.float64)
    return np.c_[1 - p, p]


def _random_case(rng: np.random.Generator, n: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, n_classes, n)
    logits = np.round(rng.normal(size=(n, n_classes)) + 1.5 * np.eye(n_classes)[y], 1)  # rounding makes ties
    proba = np.exp(logits)
    return y, proba / proba.sum(axis=1, keepdims=True)


def _cohort(rng: np.random.Generator, n_participants: int, windows: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A classifier that is right about 75% of the time; participants' windows share a label."""
    labels = np.arange(n_participants) % 2
    participant = np.repeat(np.arange(n_participants), windows)
    y = labels[participant]
    score = np.clip(0.5 + 0.25 * (2 * y - 1) + rng.normal(0, 0.25, len(y)), 0.01, 0.99)
    return y, _binary(score.tolist()), participant


# --------------------------------------------------------------------------- point values
def test_hand_computed_values() -> None:
    y = np.array([0, 0, 1, 1])
    proba = _binary([0.1, 0.6, 0.4, 0.9])  # predictions 0, 1, 0, 1
    m = classification_metrics(y, proba, np.arange(4), n_boot=0)
    assert m.value("balanced_accuracy") == pytest.approx(0.5)  # recall 1/2 in each class
    assert m.value("auroc") == pytest.approx(0.75)  # 3 of the 4 (positive, negative) pairs ordered
    assert m.value("cohen_kappa") == pytest.approx(0.0)  # observed 0.5 = expected 0.5
    assert m.value("macro_f1") == pytest.approx(0.5)  # F1 = 2·1/(2·1 + 1 + 1) in each class
    # confidences 0.9 (both right) and 0.6 (both wrong): (|2 − 1.8| + |0 − 1.2|) / 4
    assert m.value("ece") == pytest.approx(0.35)
    assert m.bootstrap is None and all(v.ci_low is None for v in m.metrics.values())


def test_ece_bins_are_equal_width_and_right_closed() -> None:
    # 0.3 belongs to (0.2, 0.3], 0.35 to (0.3, 0.4]: two bins, |1 − 0.3| + |0 − 0.35| over 2.
    proba = np.array([[0.3, 0.25, 0.25, 0.2], [0.35, 0.25, 0.2, 0.2]])
    assert expected_calibration_error(np.array([0, 1]), proba, n_bins=10) == pytest.approx(0.525)
    # One bin holding both would average them: |1 − 0.65| / 2.
    assert expected_calibration_error(np.array([0, 1]), proba, n_bins=1) == pytest.approx(0.175)
    perfectly_calibrated = _binary([0.8] * 5)
    assert expected_calibration_error(np.array([1, 1, 1, 1, 0]), perfectly_calibrated) == pytest.approx(0.0)


@pytest.mark.parametrize("n_classes", [2, 3, 4])
def test_vectorised_formulas_equal_scikit_learn(n_classes: int) -> None:
    rng = np.random.default_rng(n_classes)
    for _ in range(40):
        y, proba = _random_case(rng, int(rng.integers(6, 80)), n_classes)
        pred = proba.argmax(axis=1)
        ours = {k: v[0] for k, v in classification_scores(y, proba).items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert ours["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-12)
            assert ours["balanced_accuracy"] == pytest.approx(balanced_accuracy(confusion_counts(y, pred, n_classes)))
            assert ours["cohen_kappa"] == pytest.approx(cohen_kappa_score(y, pred), abs=1e-12, nan_ok=True)
            assert ours["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-12)
        if len(np.unique(y)) == n_classes:
            expected = (roc_auc_score(y, proba[:, 1]) if n_classes == 2
                        else roc_auc_score(y, proba, multi_class="ovr", average="macro"))
            assert ours["auroc"] == pytest.approx(expected, abs=1e-12)
        else:
            assert np.isnan(ours["auroc"])
        point = classification_metrics(y, proba, np.arange(len(y)), n_boot=0)
        for name in CLASSIFICATION_METRICS:
            value = point.value(name)
            assert (value is None and np.isnan(ours[name])) or value == pytest.approx(ours[name], abs=1e-12)


def test_integer_weights_equal_repeating_the_samples() -> None:
    """A bootstrap row (weights = draw counts) scores like the resample written out in full."""
    rng = np.random.default_rng(3)
    y, proba = _random_case(rng, 30, 3)
    weights = rng.integers(0, 4, size=(5, 30)).astype(float)
    weighted = classification_scores(y, proba, weights=weights)
    for row in range(5):
        index = np.repeat(np.arange(30), weights[row].astype(int))
        repeated = classification_scores(y[index], proba[index])
        for name in CLASSIFICATION_METRICS:
            np.testing.assert_allclose(weighted[name][row], repeated[name][0], atol=1e-12, equal_nan=True)
    target, pred = rng.normal(size=30), rng.normal(size=30)
    weighted_r = regression_scores(target, pred, weights=weights)
    for row in range(5):
        index = np.repeat(np.arange(30), weights[row].astype(int))
        assert weighted_r["mae"][row] == pytest.approx(mean_absolute_error(target[index], pred[index]))
        assert weighted_r["r2"][row] == pytest.approx(r2_score(target[index], pred[index]))


def test_regression_point_values_equal_scikit_learn() -> None:
    target = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([1.5, 2.0, 2.0, 5.0])
    m = regression_metrics(target, pred, np.arange(4), n_boot=0)
    assert m.value("mae") == pytest.approx(0.625)  # (0.5 + 0 + 1 + 1) / 4
    assert m.value("r2") == pytest.approx(1 - 2.25 / 5.0)
    assert m.value("r2") == pytest.approx(r2_score(target, pred))


# --------------------------------------------------------------------------- bootstrap
def test_resamples_draw_whole_participants() -> None:
    participant = np.array([5, 5, 5, 9, 9, 2])
    rows = np.concatenate(list(participant_resamples(participant, n_boot=300, seed=1)))
    assert rows.shape == (300, 6)
    # A participant's windows always share a weight, and every row draws 3 participants.
    assert (rows[:, 0] == rows[:, 1]).all() and (rows[:, 1] == rows[:, 2]).all() and (rows[:, 3] == rows[:, 4]).all()
    assert (rows[:, [0, 3, 5]].sum(axis=1) == 3).all()
    assert len({tuple(r) for r in rows}) > 5  # not one resample repeated


def test_interval_contains_the_estimate_and_narrows_with_more_participants() -> None:
    rng = np.random.default_rng(0)
    small = classification_metrics(*_cohort(rng, 16), n_boot=500, seed=1)
    large = classification_metrics(*_cohort(rng, 400), n_boot=500, seed=1)
    for m in (small, large):
        for name, value in m.metrics.items():
            assert value.ci_low is not None and value.ci_high is not None, name
            assert value.ci_low <= value.value <= value.ci_high, name
    for name in ("balanced_accuracy", "auroc", "cohen_kappa", "macro_f1"):
        width = {k: m.metrics[name].ci_high - m.metrics[name].ci_low for k, m in (("small", small), ("large", large))}
        assert width["large"] < width["small"] / 2, (name, width)


def test_windows_of_a_participant_are_not_independent_evidence() -> None:
    """Resampling participants, not windows: many windows of few participants stay uncertain."""
    rng = np.random.default_rng(4)
    participant = np.repeat(np.arange(12), 50)
    y = (np.arange(12) % 2)[participant]
    # Each participant is easy or hard as a whole: their windows err together.
    margin = rng.normal(0.15, 0.25, 12)[participant] + rng.normal(0, 0.05, len(y))
    proba = _binary(np.clip(0.5 + (2 * y - 1) * margin, 0.01, 0.99).tolist())
    by_participant = classification_metrics(y, proba, participant, n_boot=400, seed=0).metrics["balanced_accuracy"]
    by_window = classification_metrics(y, proba, np.arange(len(y)), n_boot=400, seed=0).metrics["balanced_accuracy"]
    assert by_participant.value == by_window.value
    assert (by_participant.ci_high - by_participant.ci_low) > (by_window.ci_high - by_window.ci_low)


def test_bootstrap_is_deterministic_by_seed() -> None:
    y, proba, participant = _cohort(np.random.default_rng(2), 30)
    a = classification_metrics(y, proba, participant, n_boot=300, seed=11)
    b = classification_metrics(y, proba, participant, n_boot=300, seed=11)
    c = classification_metrics(y, proba, participant, n_boot=300, seed=12)
    assert a == b
    assert a.metrics["balanced_accuracy"].value == c.metrics["balanced_accuracy"].value
    assert any(a.metrics[n].ci_low != c.metrics[n].ci_low or a.metrics[n].ci_high != c.metrics[n].ci_high
               for n in CLASSIFICATION_METRICS)


def test_degenerate_resamples_are_skipped_and_counted() -> None:
    # One positive participant among three: (2/3)^3 ≈ 30% of resamples miss the class.
    y = np.array([1, 1, 0, 0, 0, 0])
    participant = np.array([0, 0, 1, 1, 2, 2])
    proba = _binary([0.8, 0.7, 0.4, 0.2, 0.6, 0.1])
    m = classification_metrics(y, proba, participant, n_boot=1000, seed=5)
    rows = np.concatenate(list(participant_resamples(participant, n_boot=1000, seed=5)))
    no_positive, no_negative = rows[:, :2].sum(axis=1) == 0, rows[:, 2:].sum(axis=1) == 0
    assert m.bootstrap is not None
    assert m.bootstrap.n_degenerate == int((no_positive | no_negative).sum())
    assert 250 < m.bootstrap.n_degenerate < 420  # (2/3)^3 + (1/3)^3 ≈ 33%
    assert m.bootstrap.n_used + m.bootstrap.n_degenerate == 1000
    # The skipped resamples would have a balanced accuracy of 2/3 or 1/2 (negatives' recall
    # alone) and an undefined AUROC; the kept ones are all full-class resamples.
    assert m.metrics["auroc"].ci_low is not None
    strict = classification_metrics(y, proba, participant, n_boot=1000, seed=5, min_used_fraction=0.9)
    assert strict.metrics["balanced_accuracy"].ci_low is None and strict.metrics["balanced_accuracy"].value is not None
    assert any("lacked a class" in note for note in strict.notes)


def test_a_set_with_one_class_has_no_auroc_and_does_not_crash() -> None:
    m = classification_metrics(np.zeros(6, dtype=int), _binary([0.1, 0.2, 0.7, 0.3, 0.4, 0.2]),
                               np.repeat([0, 1, 2], 2), n_boot=100)
    assert m.value("auroc") is None and m.metrics["auroc"].ci_low is None
    assert m.value("balanced_accuracy") == pytest.approx(5 / 6)
    assert any("AUROC is undefined" in note for note in m.notes)
    assert m.bootstrap is not None and m.bootstrap.n_degenerate == 0


def test_regression_resamples_with_constant_targets_are_degenerate() -> None:
    m = regression_metrics(np.array([1.0, 1.0, 3.0]), np.array([1.5, 1.0, 2.0]), np.array([0, 0, 1]), n_boot=400, seed=0)
    # Two participants: half the resamples draw the same one twice, whose targets are constant.
    assert m.bootstrap is not None and 150 < m.bootstrap.n_degenerate < 250
    assert m.value("mae") == pytest.approx(0.5)


# --------------------------------------------------------------------------- participant level, sites, JSON
def test_participant_level_averages_probabilities() -> None:
    y = np.array([1, 1, 0, 0, 0])
    proba = _binary([0.9, 0.2, 0.4, 0.3, 0.8])
    labels, mean_proba, keys = participant_level(y, proba, np.array(["b", "b", "a", "a", "c"]))
    assert keys.tolist() == ["a", "b", "c"] and labels.tolist() == [0, 1, 0]
    np.testing.assert_allclose(mean_proba[:, 1], [0.35, 0.55, 0.8])
    both = evaluate_predictions(y, proba, np.array(["b", "b", "a", "a", "c"]), n_boot=50)
    assert both.participant is not None and both.participant.n_samples == 3
    assert both.participant.value("balanced_accuracy") == pytest.approx(0.75)  # a right, b right, c wrong
    mixed = evaluate_predictions(np.array([0, 1, 0, 1]), _binary([0.2, 0.7, 0.1, 0.9]), np.array([0, 0, 1, 1]), n_boot=0)
    assert mixed.participant is None and any("different labels" in n for n in mixed.window.notes)


def test_worst_site_is_lowest_or_highest_for_errors() -> None:
    def site(bacc: float, ece: float) -> MetricSet:
        return MetricSet.model_validate({
            "task": "classification", "level": "window", "n_samples": 1, "n_participants": 1,
            "metrics": {"balanced_accuracy": {"value": bacc}, "ece": {"value": ece}}})

    summary = summarise_sites({"a": site(0.9, 0.05), "b": site(0.6, 0.30), "c": site(0.75, 0.10)})
    assert summary["balanced_accuracy"].worst_site == "b" and summary["balanced_accuracy"].worst == 0.6
    assert summary["balanced_accuracy"].mean == pytest.approx(0.75)
    assert summary["ece"].worst_site == "b" and summary["ece"].worst == 0.30


def test_metric_set_round_trips_through_json() -> None:
    y, proba, participant = _cohort(np.random.default_rng(1), 10)
    m = evaluate_predictions(y, proba, participant, n_boot=100)
    text = m.model_dump_json()
    assert "NaN" not in text
    assert type(m).model_validate_json(text) == m


def test_bad_inputs_name_the_parameter_and_the_fix() -> None:
    with pytest.raises(ValueError, match="'proba' parameter.*softmax probabilities, not logits"):
        classification_metrics(np.array([0, 1]), np.array([[2.0, -1.0], [0.5, 3.0]]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"'y_true' parameter: expected integer class indices in \[0, 2\)"):
        classification_metrics(np.array([0, 2]), _binary([0.1, 0.9]), np.array([0, 1]))
    with pytest.raises(ValueError, match="'participant' parameter"):
        classification_metrics(np.array([0, 1]), _binary([0.1, 0.9]), np.array([0]))
    with pytest.raises(ValueError, match="'n_boot' parameter"):
        classification_metrics(np.array([0, 1]), _binary([0.1, 0.9]), np.array([0, 1]), n_boot=-1)
    with pytest.raises(ValueError, match="evaluation set is empty"):
        classification_metrics(np.zeros(0, dtype=int), np.zeros((0, 2)), np.zeros(0))
