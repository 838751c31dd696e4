"""Events for event-locked windows: BIDS ``events.tsv`` files and file annotations.

Onsets are seconds from the recording's first sample. A value maps to a study class by
exact match, else by the part after the last ``/`` (BrainVision markers read as
``"Comment/target"`` or ``"Stimulus/S  1"``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fedneuro.data.errors import EventsError

if TYPE_CHECKING:
    import mne

__all__ = ["Event", "class_of", "events_from_annotations", "read_events_tsv"]

_NA = frozenset({"", "n/a"})


@dataclass(frozen=True)
class Event:
    """One event: ``onset`` and ``duration`` in seconds, ``value`` as text (None if n/a)."""

    onset: float
    duration: float
    value: str | None


def read_events_tsv(path: Path, column: str | None) -> list[Event]:
    """Read a BIDS events file (tab-separated, columns ``onset``, ``duration`` and ``column``).

    ``column=None`` checks the structure only (values are None). Raises ``EventsError``
    naming the file, line and column for: an empty file, a missing column, a ragged row, a
    non-numeric, infinite or negative onset, or a negative duration (every problem at once).
    """
    path = Path(path)
    with path.open(encoding="utf-8-sig", newline="") as fh:
        rows = [r for r in csv.reader(fh, delimiter="\t") if any(c.strip() for c in r)]
    if not rows:
        raise EventsError(
            f"{path.name}: the events file is empty; it needs a header line (onset, duration, "
            f"{column or 'trial_type'}) and one row per event. Delete it if there are no events."
        )
    header = [h.strip() for h in rows[0]]
    needed = ["onset"] + ([column] if column else [])
    missing = [c for c in needed if c not in header]
    if missing:
        hint = (
            f" Set data.event_column in the study file to the column holding the event "
            f"values (one of {header})."
            if column and column in missing and "onset" not in missing
            else ""
        )
        raise EventsError(
            f"{path.name}: lacks the column(s) {missing} (columns found: {header}).{hint}"
        )
    problems: list[str] = []
    events: list[Event] = []
    for lineno, cells in enumerate(rows[1:], start=2):
        if len(cells) != len(header):
            problems.append(f"line {lineno} has {len(cells)} fields, the header {len(header)}")
            continue
        row = dict(zip(header, (c.strip() for c in cells)))
        onset = _number(row["onset"])
        if onset is None or not math.isfinite(onset) or onset < 0:
            problems.append(f"line {lineno}: onset {row['onset']!r} is not a number >= 0")
            continue
        duration = _number(row.get("duration", "0")) if row.get("duration") not in _NA else 0.0
        if duration is None or duration < 0:
            problems.append(f"line {lineno}: duration {row.get('duration')!r} is not >= 0")
            continue
        value = row[column] if column else None
        events.append(Event(onset, duration, None if value in _NA else value))
    if problems:
        raise EventsError(
            f"{path.name} is malformed: " + "; ".join(problems[:10])
            + (f" (and {len(problems) - 10} more)" if len(problems) > 10 else "")
            + ". Fix these rows (tab-separated, onset in seconds from the first sample)."
        )
    return events


def _number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def events_from_annotations(raw: mne.io.BaseRaw) -> list[Event]:
    """The annotations of ``raw`` as events (onset from the first sample, in seconds)."""
    ann = raw.annotations
    if not len(ann):
        return []
    # MNE keeps annotation onsets on the acquisition clock (first_samp included).
    offset = raw.first_time
    return [
        Event(float(o) - offset, float(d), str(v))
        for o, d, v in zip(ann.onset, ann.duration, ann.description)
    ]


def class_of(value: str | None, classes: Mapping[str, int]) -> str | None:
    """The key of ``classes`` that ``value`` names, or None."""
    if value is None:
        return None
    if value in classes:
        return value
    tail = value.rsplit("/", 1)[-1].strip()
    return tail if tail in classes else None
