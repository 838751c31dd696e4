"""Participant-disjoint, stratified splits and cutting WindowSets by participant."""

from __future__ import annotations

import numpy as np
import pytest

from fedneuro.data.harmonise import HarmonisationReport, WindowSet
from fedneuro.data.splits import select_participants, split_participants, split_window_set

pytestmark = pytest.mark.filterwarnings("error")

IDS = [f"sub-{i:03d}" for i in range(1, 21)]
LABELS = [0] * 12 + [1] * 8


def test_split_is_disjoint_stratified_and_complete() -> None:
    train, test = split_participants(IDS, LABELS, test_fraction=0.25, seed=0)
    assert not set(train) & set(test) and sorted(train + test) == IDS
    label = dict(zip(IDS, LABELS))
    assert sorted(label[p] for p in test) == [0, 0, 0, 1, 1]  # round(12*.25), round(8*.25)
    assert {label[p] for p in train} == {0, 1}
    assert train == sorted(train) and test == sorted(test)


def test_split_is_deterministic_and_order_free() -> None:
    a = split_participants(IDS, LABELS, test_fraction=0.3, seed=5)
    b = split_participants(IDS[::-1], LABELS[::-1], test_fraction=0.3, seed=5)
    c = split_participants(IDS, LABELS, test_fraction=0.3, seed=6)
    assert a == b and a != c


def test_every_class_on_both_sides_even_when_small() -> None:
    ids, labels = ["a", "b", "c", "d", "e"], [0, 0, 1, 1, 1]
    for frac in (0.01, 0.99):
        train, test = split_participants(ids, labels, test_fraction=frac, seed=1)
        lab = dict(zip(ids, labels))
        assert {lab[p] for p in train} == {lab[p] for p in test} == {0, 1}


def test_split_errors_are_clear() -> None:
    with pytest.raises(ValueError, match=r"class\(es\) \{2: 1\}.*fewer than 2 participants"):
        split_participants(["a", "b", "c", "d", "e"], [0, 0, 1, 1, 2], test_fraction=0.3, seed=0)
    with pytest.raises(ValueError, match="'test_fraction'.*got 1.0 instead"):
        split_participants(IDS, LABELS, test_fraction=1.0, seed=0)
    with pytest.raises(ValueError, match=r"'participant_ids'.*\['a'\] appear more than once"):
        split_participants(["a", "a", "b", "c"], [0, 0, 1, 1], test_fraction=0.5, seed=0)
    with pytest.raises(ValueError, match="same length"):
        split_participants(["a", "b"], [0], test_fraction=0.5, seed=0)


def _toy_windows() -> WindowSet:
    participant = np.repeat(np.arange(6), [2, 3, 1, 2, 2, 1])
    labels = np.array([0, 1, 0, 1, 0, 1])
    X = np.arange(len(participant) * 2 * 4, dtype=np.float32).reshape(-1, 2, 4)
    return WindowSet(
        X=X,
        y=labels[participant].astype(np.int64),
        participant=participant.astype(np.int64),
        participant_ids=[f"p{i}" for i in range(6)],
        report=HarmonisationReport(),
    )


def test_subset_reindexes_participants() -> None:
    ws = _toy_windows()
    sub = select_participants(ws, ["p4", "p1"])
    assert sub.participant_ids == ["p1", "p4"]
    assert len(sub) == 5 and sub.participant.tolist() == [0, 0, 0, 1, 1]
    np.testing.assert_array_equal(sub.X, ws.X[np.isin(ws.participant, [1, 4])])
    assert sub.participant_labels.tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"'participant_ids'.*\['nobody'\]"):
        ws.subset(["p1", "nobody"])
    # A cohort member whose windows were all rejected is known: skipped, not an error.
    ws.report.without_windows["p9"] = "every window was rejected or refused"
    assert ws.subset(["p1", "p9"]).participant_ids == ["p1"]


def test_split_window_set(data_windows: dict[str, WindowSet]) -> None:
    ws = data_windows["hospital-b"]
    train, test = split_window_set(ws, test_fraction=0.3, seed=0)
    assert not set(train.participant_ids) & set(test.participant_ids)
    assert len(train) + len(test) == len(ws)
    assert set(train.y.tolist()) == set(test.y.tolist()) == {0, 1}
    assert {r.participant_id for r in test.report.recordings} == set(test.participant_ids)
