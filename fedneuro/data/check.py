"""A site operator's check of its data against a study: who is eligible, which recordings
open, what harmonisation finds, how the classes balance, and every problem with its file.

:func:`check_site` never raises for bad data: problems are collected into the report, which
says whether the site is usable (windows for every class). It applies the same governance
gate as training: recordings of excluded participants are listed by name, never opened.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from fedneuro.data.bids import (
    EligibleCohort,
    ParticipantRecord,
    eligible_participants,
    read_participants,
)
from fedneuro.data.errors import BIDSDatasetError
from fedneuro.data.harmonise import load_site_windows
from fedneuro.data.layout import SiteIndex, site_layout
from fedneuro.data.loose import find_recordings_table
from fedneuro.data.spec import DataSpec, InputContract
from fedneuro.data.windowset import WindowSet

__all__ = [
    "ClassCount",
    "ParticipantCheck",
    "Problem",
    "RecordingCheck",
    "SiteCheck",
    "check_site",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Problem(_Model):
    """Something wrong, with the file (or table) it is about."""

    file: str
    participant_id: str | None = None
    reason: str


class ParticipantCheck(_Model):
    participant_id: str
    eligible: bool
    label: str | None
    excluded_reason: str | None = None
    recordings: int
    windows: int
    without_windows_reason: str | None = None


class RecordingCheck(_Model):
    file: str
    participant_id: str
    status: Literal["ok", "no_windows", "refused", "not_opened"]
    reason: str | None = None
    sfreq: float | None = None
    duration_s: float | None = None
    channels_found: list[str] = []
    channels_missing: list[str] = []
    channels_interpolated: list[str] = []
    channels_dropped: list[str] = []
    windows: int = 0
    windows_rejected: int = 0
    events: int | None = None
    notes: list[str] = []


class ClassCount(_Model):
    index: int
    names: list[str]
    participants: int
    windows: int


class ContractInfo(_Model):
    channels: list[str]
    sfreq: float
    input_window_seconds: float
    n_times: int


class SiteCheck(_Model):
    """The whole report; ``usable`` is False with ``unusable_reasons`` when training this
    site's data for the study would fail or be meaningless."""

    root: str
    layout: Literal["bids", "loose"]
    label_source: Literal["participants", "events"]
    contract: ContractInfo
    participants: list[ParticipantCheck]
    recordings: list[RecordingCheck]
    classes: list[ClassCount]
    sampling_rates: dict[str, int]
    total_duration_s: float
    n_windows: int
    problems: list[Problem]
    usable: bool
    unusable_reasons: list[str]


def _contract_info(contract: InputContract) -> ContractInfo:
    return ContractInfo(
        channels=list(contract.channels),
        sfreq=contract.sfreq,
        input_window_seconds=contract.input_window_seconds,
        n_times=contract.n_times,
    )


def _empty(
    root: Path, spec: DataSpec, contract: InputContract, reason: str, file: str
) -> SiteCheck:
    return SiteCheck(
        root=str(root),
        layout=site_layout(root) if root.is_dir() else "bids",
        label_source=spec.label_source,
        contract=_contract_info(contract),
        participants=[],
        recordings=[],
        classes=[],
        sampling_rates={},
        total_duration_s=0.0,
        n_windows=0,
        problems=[Problem(file=file, reason=reason)],
        usable=False,
        unusable_reasons=[reason],
    )


def check_site(
    root: Path, spec: DataSpec, contract: InputContract, *, cache_dir: Path | None = None
) -> SiteCheck:
    """Check a site's data (BIDS or loose-file layout) against a study's ``spec`` and its
    backbone's ``contract``. Harmonises every eligible recording (through ``cache_dir`` when
    given); returns the report, never raises for bad data."""
    root = Path(root)
    if not root.is_dir():
        return _empty(root, spec, contract, f"{root} is not a directory", str(root))
    try:
        index = SiteIndex(root)
    except BIDSDatasetError as err:
        table = find_recordings_table(root)
        return _empty(root, spec, contract, str(err), table.name if table else str(root))
    try:
        records = read_participants(root, spec)
    except BIDSDatasetError as err:
        return _empty(root, spec, contract, str(err), _participants_file(root, index))
    if spec.label_source == "events":
        try:
            spec.event_window(contract)
        except ValueError as err:
            return _empty(root, spec, contract, str(err), "study [data]")
    cohort = eligible_participants(records, spec)
    ws = load_site_windows(root, cohort, contract, spec, on_error="skip", cache_dir=cache_dir)
    problems: list[Problem] = []
    recordings = _recordings(root, index, spec, cohort, ws, [r.participant_id for r in records])
    for rec in recordings:
        if rec.status == "refused":
            problems.append(Problem(file=rec.file, participant_id=rec.participant_id,
                                    reason=rec.reason or "refused"))
        elif rec.status == "no_windows":
            problems.append(Problem(file=rec.file, participant_id=rec.participant_id,
                                    reason=rec.reason or "no usable window"))
    for pid, why in sorted(ws.report.without_windows.items()):
        if not any(r.participant_id == pid and r.status != "ok" for r in recordings):
            problems.append(Problem(file=_participants_file(root, index), participant_id=pid,
                                    reason=f"{pid}: {why}"))
    listed = {r.participant_id for r in records}
    for pid in index.participant_ids():
        if pid not in listed:
            where = f"{pid}/" if index.layout == "bids" else index.table_path.name
            problems.append(Problem(
                file=where, participant_id=pid,
                reason=f"{pid} has recordings but no row in "
                f"{_participants_file(root, index)}: not used",
            ))
    participants = _participants(records, cohort, ws, recordings, spec)
    classes = _classes(ws, spec)
    reasons = _unusable_reasons(cohort, ws, classes, spec)
    opened = [r for r in recordings if r.sfreq is not None]
    return SiteCheck(
        root=str(root),
        layout=index.layout,
        label_source=spec.label_source,
        contract=_contract_info(contract),
        participants=participants,
        recordings=recordings,
        classes=classes,
        sampling_rates=dict(sorted(Counter(f"{r.sfreq:g}" for r in opened).items())),
        total_duration_s=round(sum(r.duration_s or 0.0 for r in opened), 3),
        n_windows=len(ws),
        problems=problems,
        usable=not reasons,
        unusable_reasons=reasons,
    )


def _participants_file(root: Path, index: SiteIndex) -> str:
    if (root / "participants.tsv").is_file() or index.layout == "bids":
        return "participants.tsv"
    return index.table_path.name


def _recordings(
    root: Path,
    index: SiteIndex,
    spec: DataSpec,
    cohort: EligibleCohort,
    ws: WindowSet,
    all_ids: list[str],
) -> list[RecordingCheck]:
    done = {r.file: r for r in ws.report.recordings}
    out: list[RecordingCheck] = []
    eligible = set(cohort.participant_ids)
    for pid in all_ids:
        for ref in index.recordings(pid, spec):  # names only: nothing is opened here
            if pid not in eligible:
                out.append(RecordingCheck(
                    file=ref.name, participant_id=pid, status="not_opened",
                    reason="participant excluded (not opened)",
                ))
            elif ref.name in ws.report.refused:
                out.append(RecordingCheck(
                    file=ref.name, participant_id=pid, status="refused",
                    reason=ws.report.refused[ref.name],
                ))
            elif ref.name in done:
                rep = done[ref.name]
                status: Literal["ok", "no_windows"] = "ok" if rep.n_windows else "no_windows"
                reason = None
                if not rep.n_windows:  # harmonisation's last note says why
                    reason = rep.notes[-1] if rep.notes else "no usable window"
                out.append(RecordingCheck(
                    file=ref.name, participant_id=pid, status=status, reason=reason,
                    sfreq=rep.source_sfreq, duration_s=round(rep.duration_s, 3),
                    channels_found=list(rep.channels_found),
                    channels_missing=list(rep.missing),
                    channels_interpolated=list(rep.interpolated),
                    channels_dropped=list(rep.dropped),
                    windows=rep.n_windows, windows_rejected=rep.n_rejected,
                    events=rep.n_events if spec.label_source == "events" else None,
                    notes=list(rep.notes),
                ))
    return out


def _participants(
    records: list[ParticipantRecord],
    cohort: EligibleCohort,
    ws: WindowSet,
    recordings: list[RecordingCheck],
    spec: DataSpec,
) -> list[ParticipantCheck]:
    counts = Counter(ws.participant_ids[int(p)] for p in ws.participant)
    n_rec = Counter(r.participant_id for r in recordings)
    out = []
    for rec in sorted(records, key=lambda r: r.participant_id):
        pid = rec.participant_id
        out.append(ParticipantCheck(
            participant_id=pid,
            eligible=pid in cohort.participant_ids,
            label=rec.label if spec.label_source == "participants" else None,
            excluded_reason=cohort.excluded.get(pid),
            recordings=n_rec.get(pid, 0),
            windows=counts.get(pid, 0),
            without_windows_reason=ws.report.without_windows.get(pid),
        ))
    return out


def _classes(ws: WindowSet, spec: DataSpec) -> list[ClassCount]:
    out = []
    for idx in range(spec.n_classes):
        mask = ws.y == idx
        out.append(ClassCount(
            index=idx,
            names=sorted(k for k, v in spec.classes.items() if v == idx),
            participants=len(set(ws.participant[mask].tolist())),
            windows=int(mask.sum()),
        ))
    return out


def _unusable_reasons(
    cohort: EligibleCohort, ws: WindowSet, classes: list[ClassCount], spec: DataSpec
) -> list[str]:
    reasons = []
    if not len(cohort):
        reasons.append("no eligible participant (see the participants' exclusion reasons)")
    if not len(ws):
        reasons.append("no usable window in any recording")
        return reasons
    for c in classes:
        if c.windows == 0:
            reasons.append(f"class {c.index} {c.names} has no window")
        elif spec.label_source == "participants" and c.participants < 2:
            reasons.append(
                f"class {c.index} {c.names} has windows from {c.participants} participant; the "
                "participant-disjoint train/test split needs at least 2 per class"
            )
    if spec.label_source == "events" and len(ws.participant_ids) < 2:
        reasons.append(
            f"{len(ws.participant_ids)} participant has windows; the participant-disjoint "
            "train/test split needs at least 2"
        )
    return reasons
