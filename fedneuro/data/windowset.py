"""A site's harmonised windows and what harmonisation did, per recording and per site."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["HarmonisationReport", "RecordingReport", "WindowSet"]


@dataclass(frozen=True)
class RecordingReport:
    """What harmonisation did to one recording.

    ``file`` is the path relative to the site root (the file name for an in-memory or
    directly harmonised recording); ``missing`` are montage channels absent from the file,
    ``interpolated`` those rebuilt (missing + flat). With event windows, ``n_events`` counts
    the events of a study class, ``n_events_outside`` those whose window left the
    recording and ``events_ignored`` the other values with their counts.
    """

    file: str
    source_sfreq: float
    channels_found: tuple[str, ...]
    interpolated: tuple[str, ...]
    dropped: tuple[str, ...]
    notched: tuple[float, ...]
    n_windows: int
    n_rejected: int
    scale: float | None
    participant_id: str | None = None
    duration_s: float = 0.0
    n_channels: int = 0
    missing: tuple[str, ...] = ()
    reference: str = "average"
    n_rejected_flat: int = 0
    n_rejected_extreme: int = 0
    n_events: int = 0
    n_events_outside: int = 0
    events_ignored: tuple[tuple[str, int], ...] = ()
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecordingReport:
        kwargs = dict(data)
        for f in dataclasses.fields(cls):
            value = kwargs.get(f.name)
            if isinstance(value, list):
                kwargs[f.name] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        return cls(**kwargs)


@dataclass
class HarmonisationReport:
    """Per-recording reports, refused recordings and participants left without windows."""

    recordings: list[RecordingReport] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    without_windows: dict[str, str] = field(default_factory=dict)
    cache_hits: int = 0

    @property
    def n_windows(self) -> int:
        return sum(r.n_windows for r in self.recordings)

    @property
    def n_rejected(self) -> int:
        return sum(r.n_rejected for r in self.recordings)

    def summary(self) -> str:
        """One line for logs."""
        interp = sorted({c for r in self.recordings for c in r.interpolated})
        return (
            f"{len(self.recordings)} recordings, {self.n_windows} windows kept, "
            f"{self.n_rejected} rejected, interpolated {interp or 'none'}, "
            f"{len(self.refused)} refused, {len(self.without_windows)} participants "
            f"without windows, {self.cache_hits} from cache"
        )


@dataclass
class WindowSet:
    """Windows of one site: ``X`` (n, C, T) float32, ``y`` and ``participant`` int64.

    ``participant[i]`` indexes ``participant_ids``; every listed participant has at
    least one window. With event-locked windows a participant's windows carry several
    classes.
    """

    X: np.ndarray
    y: np.ndarray
    participant: np.ndarray
    participant_ids: list[str]
    report: HarmonisationReport

    def __post_init__(self) -> None:
        n = len(self.X)
        if self.X.ndim != 3 or len(self.y) != n or len(self.participant) != n:
            raise ValueError(
                f"WindowSet needs X (n, C, T) with y and participant of length n; got X "
                f"{self.X.shape}, y {self.y.shape}, participant {self.participant.shape}."
            )

    def __len__(self) -> int:
        return len(self.X)

    @property
    def participant_labels(self) -> np.ndarray:
        """Class index of each entry of ``participant_ids`` (int64): the participant's label,
        or with event windows their most frequent class (ties: the lowest)."""
        n_classes = int(self.y.max()) + 1 if len(self.y) else 1
        counts = np.zeros((len(self.participant_ids), n_classes), dtype=np.int64)
        np.add.at(counts, (self.participant, self.y), 1)
        labels = counts.argmax(axis=1).astype(np.int64)
        labels[counts.sum(axis=1) == 0] = -1
        return labels

    @property
    def mixed_labels(self) -> bool:
        """True when some participant has windows of more than one class (event windows)."""
        if not len(self.y):
            return False
        lo = np.full(len(self.participant_ids), np.iinfo(np.int64).max)
        hi = np.full(len(self.participant_ids), -1)
        np.minimum.at(lo, self.participant, self.y)
        np.maximum.at(hi, self.participant, self.y)
        return bool((hi > lo).any())

    def subset(self, participant_ids: Iterable[str]) -> WindowSet:
        """The windows of the given participants (kept in this set's order).

        Ids listed in ``report.without_windows`` (known, but nothing usable) are skipped;
        any other id without windows is an error.
        """
        wanted = set(participant_ids)
        unknown = sorted(wanted - set(self.participant_ids) - set(self.report.without_windows))
        if unknown:
            raise ValueError(
                f"Invalid value for the 'participant_ids' parameter: {unknown} have no "
                f"windows in this set (known: {len(self.participant_ids)} participants)."
            )
        keep_ids = [p for p in self.participant_ids if p in wanted]
        old_to_new = np.full(len(self.participant_ids), -1, dtype=np.int64)
        for new, pid in enumerate(keep_ids):
            old_to_new[self.participant_ids.index(pid)] = new
        mask = old_to_new[self.participant] >= 0
        report = HarmonisationReport(
            recordings=[r for r in self.report.recordings if r.participant_id in wanted],
            refused=dict(self.report.refused),
            without_windows=dict(self.report.without_windows),
            cache_hits=self.report.cache_hits,
        )
        return WindowSet(
            X=self.X[mask],
            y=self.y[mask],
            participant=old_to_new[self.participant[mask]],
            participant_ids=keep_ids,
            report=report,
        )
