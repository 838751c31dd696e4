"""Participant-disjoint, label-stratified train/test splits.

Windows of one participant are strongly correlated: splitting windows rather than
participants would leak and inflate every test metric.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from fedneuro.data.windowset import WindowSet

__all__ = ["select_participants", "split_participants", "split_window_set"]


def split_participants(
    participant_ids: Sequence[str],
    labels: Sequence[int],
    *,
    test_fraction: float,
    seed: int,
) -> tuple[list[str], list[str]]:
    """Split participants into (train, test), stratified by label, both sorted.

    Each class puts ``round(n_class * test_fraction)`` participants in test, at least one
    and at most ``n_class - 1``, so every class appears on both sides. The result depends
    only on the (id, label) pairs and ``seed``, not on their input order.
    """
    ids = [str(p) for p in participant_ids]
    labs = [int(lab) for lab in labels]
    if len(ids) != len(labs):
        raise ValueError(
            f"participant_ids ({len(ids)}) and labels ({len(labs)}) must have the same length."
        )
    dupes = sorted({p for p in ids if ids.count(p) > 1})
    if dupes:
        raise ValueError(
            f"Invalid value for the 'participant_ids' parameter: {dupes} appear more than once."
        )
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(
            f"Invalid value for the 'test_fraction' parameter: must be in (0, 1), got "
            f"{test_fraction!r} instead."
        )
    by_class: dict[int, list[str]] = {}
    for pid, lab in zip(ids, labs):
        by_class.setdefault(lab, []).append(pid)
    too_small = {c: len(m) for c, m in sorted(by_class.items()) if len(m) < 2}
    if too_small:
        raise ValueError(
            f"Cannot split: class(es) {too_small} (class index: participants) have fewer than "
            "2 participants, so they cannot appear in both train and test. Add participants "
            "or merge/drop those classes in data.classes."
        )
    rng = np.random.default_rng(seed)
    train: list[str] = []
    test: list[str] = []
    for _, members in sorted(by_class.items()):
        members = sorted(members)
        n_test = min(max(int(round(len(members) * test_fraction)), 1), len(members) - 1)
        order = rng.permutation(len(members))
        test.extend(members[i] for i in order[:n_test])
        train.extend(members[i] for i in order[n_test:])
    return sorted(train), sorted(test)


def select_participants(ws: WindowSet, participant_ids: Iterable[str]) -> WindowSet:
    """The windows of ``participant_ids`` only (same as ``ws.subset``)."""
    return ws.subset(participant_ids)


def split_window_set(
    ws: WindowSet, *, test_fraction: float, seed: int
) -> tuple[WindowSet, WindowSet]:
    """Participant-disjoint (train, test) split of a site's windows, stratified by the
    participants' labels. With event-locked windows (a participant's windows carry several
    classes) there is no participant label to stratify by: the split is participant-disjoint
    only."""
    labels = [0] * len(ws.participant_ids) if ws.mixed_labels else ws.participant_labels.tolist()
    train_ids, test_ids = split_participants(
        ws.participant_ids, labels, test_fraction=test_fraction, seed=seed
    )
    return ws.subset(train_ids), ws.subset(test_ids)
