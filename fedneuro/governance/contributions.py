"""Which participants' data went into which model version, kept at the site.

``<state_dir>/contributions.jsonl``: one line per study round a site trained, with the
sorted ids of the participants whose data was used. Participant ids never leave the site;
the file answers a withdrawal's question "which models did this person help train?"
(:func:`impact`). Append-only, fsynced, locked against concurrent writers.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "ContributionError",
    "ContributionRecord",
    "Impact",
    "contributions_path",
    "impact",
    "model_version_for",
    "read_contributions",
    "record_contribution",
]

CONTRIBUTIONS_FILE = "contributions.jsonl"


class ContributionError(ValueError):
    """A contributions file or record that cannot be trusted."""


class ContributionRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    study_id: str = Field(min_length=1)
    round: int = Field(ge=1)
    model_version: str = Field(min_length=1, description="e.g. <study_id>@round-<n>")
    participants: list[str] = Field(description="sorted, unique participant ids whose data was used")
    recorded_at: datetime

    @field_validator("participants")
    @classmethod
    def _sorted_unique(cls, participants: list[str]) -> list[str]:
        if participants != sorted(set(participants)):
            raise ValueError("participants must be sorted and unique")
        return participants

    @field_validator("recorded_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("recorded_at needs a time zone (UTC), e.g. 2025-01-31T12:00:00Z")
        return value


class Impact(NamedTuple):
    study_id: str
    round: int
    model_version: str


def contributions_path(state_dir: Path) -> Path:
    return Path(state_dir) / CONTRIBUTIONS_FILE


def model_version_for(study_id: str, server_round: int) -> str:
    return f"{study_id}@round-{server_round}"


def record_contribution(
    path: Path,
    *,
    study_id: str,
    server_round: int,
    participants: Iterable[str],
    now: datetime,
    model_version: str | None = None,
) -> ContributionRecord:
    """Append one round's contribution (fsynced before returning)."""
    record = ContributionRecord(
        study_id=study_id,
        round=server_round,
        model_version=model_version or model_version_for(study_id, server_round),
        participants=sorted(set(participants)),
        recorded_at=now.astimezone(timezone.utc) if now.tzinfo is not None else now,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record.model_dump(mode="json"), sort_keys=True) + "\n").encode()
    # The file names participants: the site's account only.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # one whole line per writer
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return record


def read_contributions(path: Path) -> list[ContributionRecord]:
    """Every record; no file = nothing recorded yet. A bad line is an error naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(ContributionRecord.model_validate_json(line))
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "(line)"
            raise ContributionError(
                f"{path}, line {number}, field {field!r}: {first['msg']}. This file is the only record of "
                "which models used which participants: restore it from backup rather than editing it."
            ) from None
    return records


def impact(path: Path, participant_id: str) -> list[Impact]:
    """The model versions trained with ``participant_id``'s data, in file order."""
    return [
        Impact(r.study_id, r.round, r.model_version)
        for r in read_contributions(path)
        if participant_id in r.participants
    ]
