"""A site's durable record of every DP-SGD step it took, per study.

ε is always recomputed from this file, so it is cumulative across rounds, restarts and new
runs of the same study. One JSON object per line, appended and fsynced: a crash can lose
at most the line being written, never corrupt earlier ones, and a torn last line is refused
loudly rather than skipped. An append that fails (read-only or full disk) is rolled back to
the previous end of the file and raises :class:`LedgerError` naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedneuro.privacy.spec import PrivacyUnit


class LedgerError(ValueError):
    """A ledger file that cannot be trusted, or cannot be extended."""


class LedgerEntry(BaseModel):
    """DP steps taken in one round with one (σ, q)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    study_id: str
    round: int = Field(ge=0)
    noise_multiplier: float = Field(gt=0, allow_inf_nan=False)
    sample_rate: float = Field(gt=0, le=1)
    steps: int = Field(ge=0)
    max_grad_norm: float = Field(gt=0, allow_inf_nan=False)
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
        with self.path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    entry = LedgerEntry.model_validate(json.loads(raw.decode("utf-8")))
                except UnicodeDecodeError as error:
                    raise self._refusal(number, "is not UTF-8 text") from error
                except (json.JSONDecodeError, ValidationError) as error:
                    raise self._refusal(number, f"is unreadable ({error})") from error
                except RecursionError:
                    raise self._refusal(number, "is unreadable (JSON nested too deeply)") from None
                if study_id is None or entry.study_id == study_id:
                    entries.append(entry)
        return entries

    def _refusal(self, number: int, problem: str) -> LedgerError:
        return LedgerError(
            f"privacy ledger {self.path}, line {number} {problem}. The ledger is the only record of "
            "privacy spent: restore it from backup rather than deleting it."
        )

    def append(self, entries: list[LedgerEntry]) -> None:
        if not entries:
            return
        payload = "".join(json.dumps(e.model_dump(mode="json"), sort_keys=True) + "\n" for e in entries).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as error:
            raise self._append_failed(len(entries), error) from error
        try:
            end = os.fstat(fd).st_size
            try:
                view = memoryview(payload)
                while view:  # a short write (disk full) leaves the rest to the next call, which raises
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError as error:
                os.ftruncate(fd, end)  # never leave a torn line: it would make the whole ledger unreadable
                raise self._append_failed(len(entries), error) from error
        finally:
            os.close(fd)

    def _append_failed(self, count: int, error: OSError) -> LedgerError:
        return LedgerError(
            f"privacy ledger {self.path}: cannot record {count} DP step entr{'y' if count == 1 else 'ies'} "
            f"({error.strerror or error}); the ledger is unchanged. Check that the site's state directory is "
            "writable and has space."
        )
