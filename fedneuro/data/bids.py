"""Read a site's BIDS dataset: participants, consent/label eligibility, recording paths.

This is the input side of the governance gate: eligibility is decided from
``participants.tsv`` alone, before any signal file is opened.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fedneuro.data.errors import BIDSDatasetError
from fedneuro.data.loose import find_recordings_table, participant_rows, read_recordings_table
from fedneuro.data.spec import DataSpec

if TYPE_CHECKING:
    from mne_bids import BIDSPath

__all__ = [
    "BIDSDatasetError",
    "EEG_EXTENSIONS",
    "EligibleCohort",
    "ParticipantRecord",
    "eligible_participants",
    "read_participants",
    "recordings_for",
]

logger = logging.getLogger(__name__)

#: Raw EEG formats mne-bids can read.
EEG_EXTENSIONS: tuple[str, ...] = (".edf", ".bdf", ".vhdr", ".set", ".fif")
_NA = frozenset({"", "n/a"})


@dataclass(frozen=True)
class ParticipantRecord:
    """One row of participants.tsv. ``label``/``consent`` are None when empty or n/a."""

    participant_id: str
    label: str | None
    consent: str | None
    row: Mapping[str, str] = field(hash=False)


@dataclass(frozen=True)
class EligibleCohort:
    """Participants allowed into training, sorted by id, with their class indices.

    ``excluded`` maps every other participant id to the reason it was left out. With
    ``label_source = "events"`` labels come from events, and ``labels`` are all -1.
    """

    participant_ids: tuple[str, ...]
    labels: tuple[int, ...]
    excluded: Mapping[str, str] = field(hash=False)

    def __post_init__(self) -> None:
        if len(self.participant_ids) != len(self.labels):
            raise ValueError(
                f"participant_ids ({len(self.participant_ids)}) and labels "
                f"({len(self.labels)}) must have the same length."
            )

    def __len__(self) -> int:
        return len(self.participant_ids)

    def label_of(self, participant_id: str) -> int:
        """Class index of an eligible participant."""
        try:
            return self.labels[self.participant_ids.index(participant_id)]
        except ValueError:
            raise KeyError(f"{participant_id!r} is not in the eligible cohort") from None


def _value(raw: str | None) -> str | None:
    value = (raw or "").strip()
    return None if value in _NA else value


def _required_columns(spec: DataSpec) -> list[str]:
    required = ["participant_id"]
    if spec.label_source == "participants":
        required.append(spec.label_column)
    if spec.consent_column is not None:
        required.append(spec.consent_column)
    return required


def read_participants(bids_root: Path, spec: DataSpec) -> list[ParticipantRecord]:
    """Read ``participants.tsv`` of a site (metadata only, no signal files).

    A loose-file site (``recordings.tsv`` at the root, see :mod:`fedneuro.data.loose`)
    without participants.tsv takes the label and consent columns from its recordings table.
    Raises ``BIDSDatasetError`` for a missing file, missing required columns (all listed
    at once, with the columns found), ragged rows or duplicate participant ids. The label
    column is required only with ``label_source = "participants"``.
    """
    bids_root = Path(bids_root)
    tsv = bids_root / "participants.tsv"
    if not bids_root.is_dir():
        raise BIDSDatasetError(
            f"Invalid value for the 'bids_root' parameter: {bids_root} is not a directory. "
            "Point it at the root of the site's BIDS dataset."
        )
    required = _required_columns(spec)
    if not tsv.is_file():
        table = find_recordings_table(bids_root)
        if table is not None:
            rows = participant_rows(table, read_recordings_table(table), required[1:])
            return _records(rows, spec, table)
        raise BIDSDatasetError(
            f"{tsv} not found. Every BIDS dataset must list its participants in "
            f"participants.tsv at the dataset root, with columns "
            + ", ".join(repr(c) if i else c for i, c in enumerate(required))
            + " (a loose-file site may instead put those columns in recordings.tsv)."
        )
    with tsv.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        lines = [r for r in reader if any(cell.strip() for cell in r)]
    if not lines:
        raise BIDSDatasetError(
            f"{tsv} is empty: it needs a header line and one row per participant."
        )
    header = [h.strip() for h in lines[0]]
    missing = [c for c in required if c not in header]
    if missing:
        raise BIDSDatasetError(
            f"{tsv} lacks the column(s) {missing} (columns found: {header}). Add them, or "
            "set data.label_column / data.consent_column in the study file to the columns "
            "that hold the label and the consent."
        )
    problems: list[str] = []
    rows: list[dict[str, str] | None] = []
    for lineno, cells in enumerate(lines[1:], start=2):
        if len(cells) != len(header):
            problems.append(f"line {lineno} has {len(cells)} fields, the header {len(header)}")
            rows.append(None)
            continue
        rows.append({h: c.strip() for h, c in zip(header, cells)})
    return _records(rows, spec, tsv, problems)


def _records(
    rows: Sequence[Mapping[str, str] | None],
    spec: DataSpec,
    source: Path,
    problems: list[str] | None = None,
) -> list[ParticipantRecord]:
    problems = list(problems or [])
    records: list[ParticipantRecord] = []
    seen: set[str] = set()
    label_col = spec.label_column if spec.label_source == "participants" else None
    for lineno, row in enumerate(rows, start=2):
        if row is None:
            continue
        pid = row["participant_id"]
        if not pid or pid in _NA:
            problems.append(f"line {lineno} has no participant_id")
            continue
        if pid in seen:
            problems.append(f"participant_id {pid!r} appears more than once (line {lineno})")
            continue
        seen.add(pid)
        records.append(
            ParticipantRecord(
                participant_id=pid,
                label=_value(row.get(label_col)) if label_col else None,
                consent=_value(row[spec.consent_column]) if spec.consent_column else None,
                row=dict(row),
            )
        )
    if problems:
        raise BIDSDatasetError(
            f"{source} is malformed: " + "; ".join(problems) + ". Fix these rows (tab-separated, "
            "one row per participant, n/a for unknown values)."
        )
    if not records:
        raise BIDSDatasetError(
            f"{source} lists no participants: add one row per participant below the header."
        )
    return records


def eligible_participants(records: Sequence[ParticipantRecord], spec: DataSpec) -> EligibleCohort:
    """Keep participants whose consent is in ``spec.consent_values`` and whose label is a
    class of the study; every other participant is excluded with a reason.

    Consent values match exactly (after stripping blanks): "Yes" is not "yes", because
    guessing at consent is not ours to do.
    """
    kept: list[tuple[str, int]] = []
    excluded: dict[str, str] = {}
    for rec in records:
        reasons = []
        if spec.consent_column is not None and rec.consent not in spec.consent_values:
            shown = "missing (n/a)" if rec.consent is None else repr(rec.consent)
            reasons.append(
                f"consent {shown} in column {spec.consent_column!r} is not one of "
                f"{spec.consent_values}"
            )
        if spec.label_source == "events":
            pass  # labels come from each recording's events
        elif rec.label is None:
            reasons.append(f"label column {spec.label_column!r} is empty (n/a)")
        elif rec.label not in spec.classes:
            reasons.append(
                f"label {rec.label!r} in column {spec.label_column!r} is not a study class "
                f"{sorted(spec.classes)}"
            )
        if reasons:
            excluded[rec.participant_id] = "; ".join(reasons)
        else:
            events_mode = spec.label_source == "events"
            label = -1 if events_mode else spec.classes[rec.label]  # type: ignore[index]
            kept.append((rec.participant_id, label))
    kept.sort()
    if excluded:
        logger.info("excluded %d of %d participants", len(excluded), len(records))
    return EligibleCohort(
        participant_ids=tuple(p for p, _ in kept),
        labels=tuple(lab for _, lab in kept),
        excluded=excluded,
    )


def _subject(participant_id: str) -> str:
    return participant_id.removeprefix("sub-")


def bids_paths_for(bids_root: Path, participant_id: str, spec: DataSpec) -> list[BIDSPath]:
    """EEG recordings of one participant as mne-bids ``BIDSPath`` objects, sorted.

    Only file names are listed; no recording is opened.
    """
    from mne_bids import find_matching_paths

    bids_root = Path(bids_root)
    if not (bids_root / f"sub-{_subject(participant_id)}").is_dir():
        return []
    paths = find_matching_paths(
        bids_root,
        subjects=_subject(participant_id),
        tasks=spec.task,
        datatypes="eeg",
        suffixes="eeg",
        extensions=list(EEG_EXTENSIONS),
    )
    return sorted(paths, key=lambda p: str(p.fpath))


def recordings_for(bids_root: Path, participant_id: str, spec: DataSpec) -> list[Path]:
    """Paths of the EEG recordings of ``participant_id`` (filtered by ``spec.task``), sorted."""
    return [Path(p.fpath) for p in bids_paths_for(bids_root, participant_id, spec)]
