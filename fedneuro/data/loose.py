"""Loose-file sites: EEG files anywhere under a folder, listed in a recordings table.

A site that does not keep BIDS puts ``recordings.tsv`` (tab-separated) or
``recordings.csv`` (comma-separated) at its root::

    path                          participant_id   task   line_freq   events
    ward3/p01_night.edf           P01              rest   50          n/a
    ward3/p02.vhdr                P02              rest   50          ward3/p02_events.tsv

``path`` (relative to the table's folder, or absolute) and ``participant_id`` are required;
``task``, ``session``, ``run``, ``line_freq`` (Hz, for the notch: EDF, BDF, BrainVision and
EEGLAB do not store it) and ``events`` (a BIDS-style events file for event-locked windows;
without it the file's own annotations are used) are optional. Labels and consent come from
``participants.tsv`` beside the table, as in BIDS; without one, the table's own label and
consent columns are used, and must agree across a participant's rows.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from fedneuro.data.errors import BIDSDatasetError

__all__ = ["RECORDINGS_TABLES", "TableRow", "find_recordings_table", "read_recordings_table"]

RECORDINGS_TABLES: tuple[str, ...] = ("recordings.tsv", "recordings.csv")
_REQUIRED = ("path", "participant_id")
_NA = frozenset({"", "n/a"})


@dataclass(frozen=True)
class TableRow:
    """One row of the recordings table; ``path``/``events`` resolved against its folder."""

    lineno: int
    path: Path
    participant_id: str
    task: str | None
    line_freq: float | None
    events: Path | None
    row: dict[str, str] = field(hash=False, compare=False)


def find_recordings_table(root: Path) -> Path | None:
    """The recordings table at ``root``, if the site uses the loose layout."""
    for name in RECORDINGS_TABLES:
        if (Path(root) / name).is_file():
            return Path(root) / name
    return None


def _opt(row: dict[str, str], key: str) -> str | None:
    value = row.get(key, "").strip()
    return None if value in _NA else value


def read_recordings_table(table: Path) -> list[TableRow]:
    """Parse a recordings table; every malformed row is listed in one ``BIDSDatasetError``."""
    table = Path(table)
    delimiter = "," if table.suffix.lower() == ".csv" else "\t"
    with table.open(encoding="utf-8-sig", newline="") as fh:
        rows = [r for r in csv.reader(fh, delimiter=delimiter) if any(c.strip() for c in r)]
    if len(rows) < 2:
        raise BIDSDatasetError(
            f"{table} lists no recordings: it needs a header line with the columns "
            f"{list(_REQUIRED)} and one row per recording file."
        )
    header = [h.strip() for h in rows[0]]
    missing = [c for c in _REQUIRED if c not in header]
    if missing:
        sep = "commas" if delimiter == "," else "tabs"
        raise BIDSDatasetError(
            f"{table} lacks the column(s) {missing} (columns found: {header}). The header "
            f"needs 'path' and 'participant_id', separated by {sep}."
        )
    out: list[TableRow] = []
    problems: list[str] = []
    seen: dict[Path, int] = {}
    for lineno, cells in enumerate(rows[1:], start=2):
        if len(cells) != len(header):
            problems.append(f"line {lineno} has {len(cells)} fields, the header {len(header)}")
            continue
        row = {h: c.strip() for h, c in zip(header, cells)}
        raw_path, pid = _opt(row, "path"), _opt(row, "participant_id")
        if raw_path is None or pid is None:
            problems.append(f"line {lineno} has no path or no participant_id")
            continue
        path = (table.parent / raw_path).resolve()
        if path in seen:
            problems.append(f"line {lineno} repeats the path {raw_path!r} of line {seen[path]}")
            continue
        seen[path] = lineno
        line_freq: float | None = None
        if (lf := _opt(row, "line_freq")) is not None:
            try:
                line_freq = float(lf)
            except ValueError:
                line_freq = -1.0
            if not line_freq > 0:
                problems.append(f"line {lineno}: line_freq {lf!r} is not a frequency in Hz")
                continue
        events = _opt(row, "events")
        out.append(
            TableRow(
                lineno=lineno,
                path=path,
                participant_id=pid,
                task=_opt(row, "task"),
                line_freq=line_freq,
                events=(table.parent / events).resolve() if events else None,
                row=row,
            )
        )
    if problems:
        raise BIDSDatasetError(
            f"{table} is malformed: " + "; ".join(problems) + ". Fix these rows (one row per "
            "recording file, n/a for unknown values)."
        )
    return out


def participant_rows(
    table: Path, rows: list[TableRow], columns: list[str]
) -> list[dict[str, str]]:
    """One participants.tsv-like row per participant, from the table's ``columns``.

    Raises ``BIDSDatasetError`` when a column is missing or a participant's rows disagree.
    """
    missing = [c for c in columns if c not in rows[0].row]
    if missing:
        raise BIDSDatasetError(
            f"{table.parent / 'participants.tsv'} not found, and {table.name} lacks the "
            f"column(s) {missing} to take its place (columns found: {list(rows[0].row)}). Add "
            "participants.tsv (participant_id and those columns), or add them to the table."
        )
    merged: dict[str, dict[str, str]] = {}
    problems = []
    for r in rows:
        values = {"participant_id": r.participant_id, **{c: r.row[c] for c in columns}}
        first = merged.setdefault(r.participant_id, values)
        clash = [c for c in columns if first[c] != values[c]]
        if clash:
            problems.append(
                f"{r.participant_id!r} line {r.lineno}: {clash} differ from an earlier row"
            )
    if problems:
        raise BIDSDatasetError(
            f"{table}: a participant's label/consent must be the same on all of their rows: "
            + "; ".join(problems) + "."
        )
    return list(merged.values())
