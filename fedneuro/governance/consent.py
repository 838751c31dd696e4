"""The site's per-participant consent registry: import, withdraw, decide eligibility.

The registry is ``<state_dir>/consent.json``, owned by the site and never sent anywhere. It
is filled from the hospital's own records (a BIDS ``participants.tsv``, a CSV or a JSON
list) with the columns ``consent_duo`` (DUO terms separated by ``;``), ``consent_date``,
``consent_expiry`` and ``consent_withdrawn``. A bad source is refused as a whole, listing
every bad row, and the registry is only ever replaced atomically.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedneuro.atomic import write_bytes_atomic
from fedneuro.governance.duo import DuoTerm, DuoTermError, StudyPurpose, consent_notes, coverage_problems, parse_terms

__all__ = [
    "COLUMNS",
    "ConsentError",
    "ConsentFileError",
    "ConsentImportError",
    "ConsentRecord",
    "ConsentRegistry",
    "ConsentSummary",
    "Eligibility",
    "ImportReport",
    "consent_path",
    "eligibility",
    "import_consent_file",
    "load_registry",
    "read_consent_source",
    "save_registry",
    "summarize",
    "withdraw_participant",
]

CONSENT_FILE = "consent.json"
COLUMNS = ("participant_id", "consent_duo", "consent_date", "consent_expiry", "consent_withdrawn")
NO_CONSENT = "no consent on record"
_NA = frozenset({"", "n/a"})


class ConsentError(ValueError):
    """A consent operation that cannot be done (unknown participant, bad date)."""


class ConsentFileError(ConsentError):
    """The registry file exists but cannot be trusted."""


class ConsentImportError(ConsentError):
    """A consent source with bad rows; lists every one."""


class ConsentRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    participant_id: str = Field(min_length=1)
    terms: list[DuoTerm] = Field(min_length=1)
    given: date
    expires: date | None = None
    withdrawn: date | None = None
    source: str = Field(description="the file this record was imported from")

    @model_validator(mode="after")
    def _dates_in_order(self) -> ConsentRecord:
        if self.expires is not None and self.expires < self.given:
            raise ValueError(f"expires ({self.expires}) is before given ({self.given})")
        if self.withdrawn is not None and self.withdrawn < self.given:
            raise ValueError(f"withdrawn ({self.withdrawn}) is before given ({self.given})")
        return self


class ImportReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str
    added: list[str] = Field(default_factory=list)
    updated: list[str] = Field(default_factory=list)
    unchanged: list[str] = Field(default_factory=list)
    kept_withdrawn: list[str] = Field(default_factory=list, description="withdrawals the source would have undone")
    without_consent: list[str] = Field(default_factory=list, description="rows with no consent (not imported)")
    warnings: list[str] = Field(default_factory=list)


class ConsentRegistry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: Literal[1] = 1
    records: list[ConsentRecord] = Field(default_factory=list, description="sorted by participant_id")

    @field_validator("records")
    @classmethod
    def _unique_sorted(cls, records: list[ConsentRecord]) -> list[ConsentRecord]:
        seen = Counter(r.participant_id for r in records)
        twice = sorted(p for p, n in seen.items() if n > 1)
        if twice:
            raise ValueError(f"participants {twice} have more than one record; keep one each")
        return sorted(records, key=lambda r: r.participant_id)

    def get(self, participant_id: str) -> ConsentRecord | None:
        return next((r for r in self.records if r.participant_id == participant_id), None)

    def merge(self, incoming: Iterable[ConsentRecord], *, force: bool = False) -> tuple[ConsentRegistry, ImportReport]:
        """The registry with ``incoming`` applied. A recorded withdrawal survives an import
        that lacks it, unless the import holds a newer consent (given after the withdrawal)
        or ``force`` is set: an old export must not silently re-enrol anyone."""
        records = {r.participant_id: r for r in self.records}
        incoming = list(incoming)
        report = ImportReport(source=incoming[0].source if incoming else "")
        for new in incoming:
            old = records.get(new.participant_id)
            if old is None:
                report.added.append(new.participant_id)
            else:
                if not force and old.withdrawn is not None and new.given <= old.withdrawn:
                    earliest = min(d for d in (old.withdrawn, new.withdrawn) if d is not None)
                    if new.withdrawn is None or new.withdrawn > old.withdrawn:
                        report.kept_withdrawn.append(new.participant_id)
                    new = new.model_copy(update={"withdrawn": earliest})
                if _same(old, new):
                    report.unchanged.append(new.participant_id)
                    continue
                report.updated.append(new.participant_id)
            records[new.participant_id] = new
        return ConsentRegistry(records=list(records.values())), report

    def withdraw(self, participant_id: str, on: date) -> ConsentRegistry:
        """The registry with ``participant_id`` withdrawn on ``on`` (an earlier date stands)."""
        record = self.get(participant_id)
        if record is None:
            raise ConsentError(
                f"participant {participant_id!r} has no consent on record, so there is nothing to "
                f"withdraw; check the id (the registry holds {len(self.records)} participants)"
            )
        if on < record.given:
            raise ConsentError(
                f"withdrawal date {on} for {participant_id!r} is before the consent was given "
                f"({record.given}); use a date on or after {record.given}"
            )
        if record.withdrawn is not None and record.withdrawn <= on:
            return self
        updated = record.model_copy(update={"withdrawn": on})
        return ConsentRegistry(records=[updated if r is record else r for r in self.records])


def _same(a: ConsentRecord, b: ConsentRecord) -> bool:
    # The source file alone does not make a change.
    return a.model_dump(exclude={"source"}) == b.model_dump(exclude={"source"})


# --------------------------------------------------------------------------- the registry file
def consent_path(state_dir: Path) -> Path:
    return Path(state_dir) / CONSENT_FILE


def load_registry(state_dir: Path) -> ConsentRegistry:
    """The site's registry; empty when none was imported yet."""
    path = consent_path(state_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ConsentRegistry()
    except OSError as error:
        raise ConsentFileError(f"{path}: cannot read the consent registry ({error.strerror})") from None
    try:
        return ConsentRegistry.model_validate_json(text)
    except ValidationError as error:
        where = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in error.errors()[:5])
        raise ConsentFileError(
            f"{path} is not a valid consent registry ({where}). Restore it from backup, or re-import "
            "the site's consent records with `fedneuro consent import`."
        ) from None


def save_registry(state_dir: Path, registry: ConsentRegistry) -> Path:
    path = consent_path(state_dir)
    # Who consented to what is personal data: readable by the site's account only.
    try:
        write_bytes_atomic(path, (registry.model_dump_json(indent=2) + "\n").encode(), mode=0o600)
    except OSError as error:
        raise ConsentFileError(
            f"{path}: cannot save the consent registry ({error.strerror or error}); the registry on disk is "
            "unchanged. Check that the site's state directory is writable and has space."
        ) from error
    return path


@contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """Serialise read-modify-write of the registry between processes."""
    state_dir = Path(state_dir)
    lock = state_dir / f".{CONSENT_FILE}.lock"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise ConsentFileError(
            f"{lock}: cannot lock the consent registry ({error.strerror or error}); nothing was changed. "
            "Check that the site's state directory is writable."
        ) from error
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def import_consent_file(state_dir: Path, source: Path, *, force: bool = False) -> ImportReport:
    """Read ``source`` (all of it, or nothing) and merge it into the site's registry."""
    incoming, without = read_consent_source(source)
    with _locked(state_dir):
        registry = load_registry(state_dir)
        merged, report = registry.merge(incoming, force=force)
        save_registry(state_dir, merged)
    report.source = str(source)
    report.without_consent = without
    for pid in without:
        if registry.get(pid) is not None:
            report.warnings.append(
                f"{pid} has no consent in {source} but a consent record in the registry; if the "
                f"consent was revoked, record it with `fedneuro consent withdraw {pid}`"
            )
    return report


def withdraw_participant(state_dir: Path, participant_id: str, *, on: date) -> ConsentRecord:
    with _locked(state_dir):
        registry = load_registry(state_dir).withdraw(participant_id, on)
        save_registry(state_dir, registry)
    record = registry.get(participant_id)
    assert record is not None
    return record


# --------------------------------------------------------------------------- reading sources
def read_consent_source(path: Path) -> tuple[list[ConsentRecord], list[str]]:
    """(records, ids of rows without consent) from a ``.tsv``, ``.csv`` or ``.json`` file.

    Every bad row is collected and reported at once in a :class:`ConsentImportError`.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in {".tsv", ".csv", ".json"}:
        raise ConsentImportError(
            f"{path}: cannot import consents from a {suffix or 'suffix-less'} file; use a BIDS "
            "participants.tsv, a .csv or a .json list with the columns " + ", ".join(COLUMNS)
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConsentImportError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConsentImportError(f"{path}: cannot read it as UTF-8 text ({error})") from None
    rows = _json_rows(path, text) if suffix == ".json" else _table_rows(path, text, "\t" if suffix == ".tsv" else ",")
    problems: list[str] = []
    records: list[ConsentRecord] = []
    without: list[str] = []
    seen: dict[str, str] = {}
    for where, row in rows:
        pid = _cell(row.get("participant_id"))
        if pid is None:
            problems.append(f"{where}, column 'participant_id': empty; every row needs the participant's id")
            continue
        if pid in seen:
            problems.append(f"{where}, column 'participant_id': {pid!r} already appears at {seen[pid]}; keep one row per participant")
            continue
        seen[pid] = where
        record = _record(path, where, pid, row, problems)
        if record is None:
            continue
        if record == "no consent":
            without.append(pid)
        else:
            records.append(record)
    if problems:
        raise ConsentImportError(
            f"{path}: {len(problems)} problem(s), nothing imported:\n  - " + "\n  - ".join(problems)
        )
    return records, without


def _table_rows(path: Path, text: str, delimiter: str) -> list[tuple[str, dict[str, Any]]]:
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    try:
        lines = list(reader)
    except csv.Error as error:  # e.g. a field beyond csv's size limit
        raise ConsentImportError(f"{path}: line {reader.line_num}: {error}; nothing imported") from None
    numbered = [(n, cells) for n, cells in enumerate(lines, start=1) if any(c.strip() for c in cells)]
    if not numbered:
        raise ConsentImportError(f"{path} is empty: it needs a header line with the columns {', '.join(COLUMNS)}")
    header = [h.strip() for h in numbered[0][1]]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        sep = "tab" if delimiter == "\t" else "comma"
        raise ConsentImportError(
            f"{path} lacks the column(s) {missing} (columns found: {header}); add them "
            f"({sep}-separated, n/a for an empty value)"
        )
    rows: list[tuple[str, dict[str, Any]]] = []
    problems = []
    for lineno, cells in numbered[1:]:
        if len(cells) != len(header):
            problems.append(f"line {lineno}: {len(cells)} fields, the header has {len(header)}")
            continue
        rows.append((f"line {lineno}", dict(zip(header, cells))))
    if problems:
        raise ConsentImportError(f"{path}: {len(problems)} problem(s), nothing imported:\n  - " + "\n  - ".join(problems))
    return rows


class _JsonRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    participant_id: str
    consent_duo: str | list[str] | None = None
    consent_date: str | None = None
    consent_expiry: str | None = None
    consent_withdrawn: str | None = None


def _json_rows(path: Path, text: str) -> list[tuple[str, dict[str, Any]]]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConsentImportError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})") from None
    except RecursionError:
        raise ConsentImportError(f"{path}: not valid JSON (nested too deeply to read)") from None
    if not isinstance(items, list):
        raise ConsentImportError(
            f"{path}: expected a JSON list of objects with the keys {', '.join(COLUMNS)}, got a {type(items).__name__}"
        )
    rows, problems = [], []
    for index, item in enumerate(items):
        where = f"item {index}"
        try:
            row = _JsonRow.model_validate(item)
        except ValidationError as error:
            for e in error.errors():
                field = ".".join(str(p) for p in e["loc"]) or "(item)"
                hint = f"; allowed keys: {', '.join(COLUMNS)}" if e["type"] == "extra_forbidden" else ""
                problems.append(f"{where}, field {field!r}: {e['msg']} (got {e.get('input')!r}){hint}")
            continue
        values = row.model_dump()
        if isinstance(values["consent_duo"], list):
            values["consent_duo"] = ";".join(values["consent_duo"])
        rows.append((where, values))
    if problems:
        raise ConsentImportError(f"{path}: {len(problems)} problem(s), nothing imported:\n  - " + "\n  - ".join(problems))
    return rows


def _cell(raw: Any) -> str | None:
    value = "" if raw is None else str(raw).strip()
    return None if value in _NA else value


def _record(
    path: Path, where: str, pid: str, row: Mapping[str, Any], problems: list[str]
) -> ConsentRecord | Literal["no consent"] | None:
    before = len(problems)
    duo, given_text = _cell(row.get("consent_duo")), _cell(row.get("consent_date"))
    if duo is None and given_text is None:
        for column in ("consent_expiry", "consent_withdrawn"):
            if _cell(row.get(column)) is not None:
                problems.append(
                    f"{where} ({pid}), column {column!r}: {row[column]!r} is set, but the row has no consent "
                    "(consent_duo and consent_date are n/a); fill those in or set it to n/a"
                )
        return "no consent" if len(problems) == before else None
    terms: list[DuoTerm] = []
    if duo is None:
        problems.append(
            f"{where} ({pid}), column 'consent_duo': empty, but consent_date is {given_text}; list the "
            "consented DUO terms (e.g. HMB or HMB;NCU) or set consent_date to n/a"
        )
    else:
        try:
            terms = parse_terms(duo)
        except DuoTermError as error:
            problems.append(f"{where} ({pid}), column 'consent_duo': {error}")
        else:
            if not terms:
                problems.append(f"{where} ({pid}), column 'consent_duo': {duo!r} lists no DUO term; write e.g. HMB or HMB;NCU")
    dates: dict[str, date | None] = {}
    for column in ("consent_date", "consent_expiry", "consent_withdrawn"):
        dates[column] = _date(where, pid, column, _cell(row.get(column)), problems)
    if given_text is None:
        problems.append(f"{where} ({pid}), column 'consent_date': empty; give the date consent was given (YYYY-MM-DD)")
    given, expires, withdrawn = dates["consent_date"], dates["consent_expiry"], dates["consent_withdrawn"]
    for column, value in (("consent_expiry", expires), ("consent_withdrawn", withdrawn)):
        if given is not None and value is not None and value < given:
            problems.append(
                f"{where} ({pid}), column {column!r}: {value} is before consent_date {given}; correct one of the two"
            )
    if len(problems) != before or given is None:
        return None
    return ConsentRecord(participant_id=pid, terms=terms, given=given, expires=expires,
                         withdrawn=withdrawn, source=str(path))


def _date(where: str, pid: str, column: str, text: str | None, problems: list[str]) -> date | None:
    if text is None:
        return None
    try:
        if len(text) != 10:
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        problems.append(f"{where} ({pid}), column {column!r}: {text!r} is not a date; write it as YYYY-MM-DD, or n/a")
        return None


# --------------------------------------------------------------------------- eligibility
class Eligibility(BaseModel):
    model_config = ConfigDict(extra="forbid")

    eligible: bool
    reasons: list[str] = Field(default_factory=list, description="why not, when not eligible")
    kinds: list[str] = Field(default_factory=list, description="a stable key per reason, for counting")
    notes: list[str] = Field(default_factory=list, description="obligations that do not block training (PUB, MOR)")


def eligibility(
    registry: ConsentRegistry,
    purpose: StudyPurpose,
    today: date,
    *,
    participant_ids: Iterable[str] | None = None,
) -> dict[str, Eligibility]:
    """Per participant (the registry's, or ``participant_ids``): may this study use them today?

    Eligible = the consent covers the purpose, was given on or before ``today``, has not
    expired and was not withdrawn on or before ``today``.
    """
    ids = sorted(set(participant_ids) if participant_ids is not None else {r.participant_id for r in registry.records})
    result: dict[str, Eligibility] = {}
    for pid in ids:
        record = registry.get(pid)
        if record is None:
            result[pid] = Eligibility(eligible=False, reasons=[NO_CONSENT], kinds=["no consent"])
            continue
        problems: list[tuple[str, str]] = []
        if record.withdrawn is not None and record.withdrawn <= today:
            problems.append(("withdrawn", f"consent withdrawn on {record.withdrawn}"))
        if record.given > today:
            problems.append(("not yet given", f"consent dated {record.given}, after {today}"))
        if record.expires is not None and record.expires < today:
            problems.append(("expired", f"consent expired on {record.expires}"))
        problems += coverage_problems(record.terms, purpose, today)
        result[pid] = Eligibility(
            eligible=not problems, reasons=[m for _, m in problems], kinds=[k for k, _ in problems],
            notes=consent_notes(record.terms),
        )
    return result


class ConsentSummary(BaseModel):
    """Counts for the ethics report: who may be used, and why the others may not."""

    model_config = ConfigDict(extra="forbid")

    total: int
    eligible: int
    ineligible: int
    reasons: dict[str, int] = Field(description="participants per exclusion kind (one participant may count under several)")
    notes: dict[str, int] = Field(default_factory=dict, description="eligible participants per obligation")


def summarize(result: Mapping[str, Eligibility]) -> ConsentSummary:
    eligible = sum(e.eligible for e in result.values())
    reasons = Counter(kind for e in result.values() for kind in set(e.kinds))
    notes = Counter(note for e in result.values() if e.eligible for note in set(e.notes))
    return ConsentSummary(total=len(result), eligible=eligible, ineligible=len(result) - eligible,
                          reasons=dict(sorted(reasons.items())), notes=dict(sorted(notes.items())))
