"""A site's durable record of every DP-SGD step it took, per study.

ε is always recomputed from this file, so it is cumulative across rounds, restarts and new
runs of the same study. One JSON object per line, appended and fsynced: a crash can lose
at most the line being written, never corrupt earlier ones, and a torn last line is refused
loudly rather than skipped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedneuro.privacy.spec import PrivacyUnit


class LedgerError(ValueError):
    """A ledger file that cannot be trusted."""


class LedgerEntry(BaseModel):
    """DP steps taken in one round with one (σ, q)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    study_id: str
    round: int = Field(ge=0)
    noise_multiplier: float = Field(gt=0)
    sample_rate: float = Field(gt=0, le=1)
    steps: int = Field(ge=0)
    max_grad_norm: float = Field(gt=0)
    unit: PrivacyUnit
    max_windows_per_unit: int = Field(default=1, ge=1)
    delta: float = Field(gt=0, lt=1, description="δ the site reports ε at for this study")
    recorded_at: str


class PrivacyLedger:
    """Append-only JSON-lines ledger at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self, study_id: str | None = None) -> list[LedgerEntry]:
        if not self.path.exists():
            return []
        entries: list[LedgerEntry] = []
        with self.path.open("r", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    entry = LedgerEntry.model_validate(json.loads(line))
                except (json.JSONDecodeError, ValidationError) as error:
                    raise LedgerError(
                        f"privacy ledger {self.path}, line {number} is unreadable ({error}). "
                        "The ledger is the only record of privacy spent: restore it from backup "
                        "rather than deleting it."
                    ) from error
                if study_id is None or entry.study_id == study_id:
                    entries.append(entry)
        return entries

    def append(self, entries: list[LedgerEntry]) -> None:
        if not entries:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = "".join(json.dumps(e.model_dump(mode="json"), sort_keys=True) + "\n" for e in entries)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
