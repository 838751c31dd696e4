"""A tamper-evident audit log: hash-chained, Ed25519-signed JSON lines plus a signed head.

Each line is one entry ``{seq, time, actor, event, data, prev, hash, signature}``:
``hash`` is the sha256 of the canonical JSON (sorted keys, compact) of the entry without
``hash`` and ``signature``; ``prev`` is the previous entry's hash (64 zeros for the first);
``signature`` is base64 Ed25519 over the 32 hash bytes. Editing, deleting, reordering or
forging an entry breaks the chain or a signature. Cutting entries off the end does not, so
after every append the writer also signs the head (``<log>.head``: last seq and hash); a
log that ends before its head is truncated. Rolling back *both* files to an older copy is
only detectable against a head kept elsewhere (e.g. the coordinator's copy).
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from fedneuro.atomic import write_bytes_atomic
from fedneuro.governance.keys import fingerprint, sign, verify

__all__ = [
    "GENESIS",
    "AuditEntry",
    "AuditHead",
    "AuditLog",
    "AuditLogError",
    "AuditProblem",
    "AuditVerification",
    "canonical_json",
    "entry_hash",
    "head_path_for",
    "verify_audit_log",
]

GENESIS = "0" * 64
# Head signatures sign this prefix + canonical {seq, hash}, never the bare entry hash: else
# anyone could copy a remaining entry's signature into a head after cutting the log.
_HEAD_DOMAIN = b"fedneuro-audit-head\n"
_HEX64 = r"^[0-9a-f]{64}$"


class AuditLogError(ValueError):
    """The log cannot be used (missing, unreadable), or cannot safely be extended."""


class AuditEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: StrictInt = Field(ge=1)
    time: str = Field(description="ISO 8601 UTC, e.g. 2025-01-31T12:00:00.000000Z")
    actor: str = Field(min_length=1, description="the site or coordinator that wrote the entry")
    event: str = Field(min_length=1)
    data: dict[str, Any]
    prev: str = Field(pattern=_HEX64)
    hash: str = Field(pattern=_HEX64)
    signature: str = Field(min_length=1, description="base64 Ed25519 over the 32 hash bytes")

    @field_validator("time")
    @classmethod
    def _utc(cls, value: str) -> str:
        parsed = datetime.fromisoformat(value)
        if parsed.utcoffset() is None or parsed.utcoffset().total_seconds() != 0:  # type: ignore[union-attr]
            raise ValueError(f"time {value!r} must be in UTC (ending in Z)")
        return value


class AuditHead(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: StrictInt = Field(ge=0)
    hash: str = Field(pattern=_HEX64)
    signature: str = Field(min_length=1)


class AuditProblem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line: int | None = Field(description="1-based line of the log; None for the file as a whole")
    kind: str = Field(description="malformed, edited, signature, chain, deleted, reordered, duplicate, truncated, head")
    message: str


class AuditVerification(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ok: bool
    entries: int = Field(description="lines that are well-formed entries")
    last_seq: int
    key_fingerprint: str
    problems: list[AuditProblem]


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def entry_hash(body: dict[str, Any]) -> str:
    """sha256 hex of an entry without its ``hash`` and ``signature``."""
    return hashlib.sha256(canonical_json({k: v for k, v in body.items() if k not in ("hash", "signature")})).hexdigest()


def head_path_for(log_path: Path) -> Path:
    return Path(log_path).with_name(Path(log_path).name + ".head")


def _head_message(seq: int, hash_hex: str) -> bytes:
    return _HEAD_DOMAIN + canonical_json({"seq": seq, "hash": hash_hex})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


class AuditLog:
    """Appends signed entries to ``path``; several processes may share one log."""

    def __init__(self, path: Path, signing_key: Ed25519PrivateKey, actor: str) -> None:
        if not actor:
            raise ValueError("actor must name the site or coordinator writing the log, e.g. 'hospital-a'")
        self.path = Path(path)
        self.head_path = head_path_for(self.path)
        self.actor = actor
        self._key = signing_key

    def append(self, event: str, data: dict[str, Any], *, now: datetime) -> AuditEntry:
        """Chain, sign and fsync one entry, then re-sign the head; returns the entry."""
        if now.tzinfo is None:
            raise ValueError(f"now ({now}) needs a time zone; pass datetime.now(timezone.utc)")
        try:
            canonical_json(data)
        except (TypeError, ValueError) as error:
            raise ValueError(f"audit data for event {event!r} is not plain JSON ({error}); use str, numbers, lists, dicts") from None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as error:
            raise self._append_failed(event, error) from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # read the tail and append as one step
            last = self._checked_tail(fd)
            body: dict[str, Any] = {
                "seq": (last.seq if last else 0) + 1,
                "time": now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "actor": self.actor,
                "event": event,
                "data": data,
                "prev": last.hash if last else GENESIS,
            }
            digest = entry_hash(body)
            entry = AuditEntry(**body, hash=digest, signature=_b64(sign(self._key, bytes.fromhex(digest))))
            head = AuditHead(seq=entry.seq, hash=digest, signature=_b64(sign(self._key, _head_message(entry.seq, digest))))
            end = os.lseek(fd, 0, os.SEEK_END)
            try:
                line = memoryview(canonical_json(entry.model_dump()) + b"\n")
                while line:  # a short write (disk full) leaves the rest to the next call, which raises
                    line = line[os.write(fd, line):]
                os.fsync(fd)
                write_bytes_atomic(self.head_path, canonical_json(head.model_dump()) + b"\n")
            except OSError as error:
                # Log and head must agree: a torn line or an unsigned tail would stop every later append.
                os.ftruncate(fd, end)
                raise self._append_failed(event, error) from error
        finally:
            os.close(fd)  # releases the lock
        return entry

    def _append_failed(self, event: str, error: OSError) -> AuditLogError:
        return AuditLogError(
            f"{self.path}: cannot append the {event!r} entry ({error.strerror or error}); the log and its head are "
            "unchanged. Check that the folder is writable and has space."
        )

    def _checked_tail(self, fd: int) -> AuditEntry | None:
        """The last entry, refusing to extend a log whose tail or head is not what we signed."""
        line = _last_line(fd)
        last = None
        if line is not None:
            try:
                last = AuditEntry.model_validate_json(line)
                digest = entry_hash(json.loads(line))
            except (ValidationError, ValueError, RecursionError):
                raise AuditLogError(
                    f"{self.path}: the last line is not a valid audit entry; refusing to extend a damaged "
                    "log. Run `fedneuro audit verify` and restore the log from backup."
                ) from None
            if digest != last.hash:
                raise AuditLogError(f"{self.path}: the last entry (seq {last.seq}) was edited; refusing to extend it")
        head = _read_head(self.head_path)
        public = self._key.public_key()
        if isinstance(head, str):
            if last is None and not self.head_path.exists():
                return None  # a new log
            raise AuditLogError(f"{self.path}: {head}; refusing to extend a log whose tail cannot be checked")
        signature = _unb64(head.signature)
        if signature is None or not verify(public, signature, _head_message(head.seq, head.hash)):
            raise AuditLogError(f"{self.head_path}: the head's signature does not verify with this log's key")
        if (head.seq, head.hash) != ((last.seq, last.hash) if last else (0, GENESIS)):
            raise AuditLogError(
                f"{self.path}: the log ends at seq {last.seq if last else 0} but the signed head says seq "
                f"{head.seq}; the log was truncated or replaced. Run `fedneuro audit verify`."
            )
        return last


def _last_line(fd: int) -> bytes | None:
    """The last non-empty line of the open file, read backwards from the end."""
    end = os.lseek(fd, 0, os.SEEK_END)
    chunk, tail = 4096, b""
    position = end
    while position > 0:
        step = min(chunk, position)
        position -= step
        tail = os.pread(fd, step, position) + tail
        stripped = tail.rstrip(b"\n")
        if b"\n" in stripped:
            return stripped.rsplit(b"\n", 1)[1]
    stripped = tail.rstrip(b"\n")
    return stripped or None


def _read_head(path: Path) -> AuditHead | str:
    """The head, or why it cannot be used."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return f"no signed head file at {path}: truncation of the log's tail cannot be ruled out"
    except OSError as error:
        return f"cannot read the head file {path} ({error.strerror})"
    try:
        return AuditHead.model_validate_json(text)
    except ValidationError as error:
        return f"the head file {path} is malformed ({error.errors()[0]['msg']})"


def verify_audit_log(path: Path, public_key: Ed25519PublicKey, *, head_path: Path | None = None) -> AuditVerification:
    """Check every entry, the chain and the signed head; report every problem with its line.

    Raises :class:`AuditLogError` only when the log itself cannot be read; hostile content
    is reported, never raised.
    """
    path = Path(path)
    head_path = head_path or head_path_for(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise AuditLogError(f"{path}: audit log not found") from None
    except OSError as error:
        raise AuditLogError(f"{path}: cannot read the audit log ({error.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # a writer holds LOCK_EX until log and head agree
        with os.fdopen(os.dup(fd), "rb") as handle:
            raw = handle.read()
        head = _read_head(head_path)
    except OSError as error:
        raise AuditLogError(f"{path}: cannot read the audit log ({error.strerror})") from None
    finally:
        os.close(fd)
    problems: list[AuditProblem] = []
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline ending the last entry
    entries: list[tuple[int, AuditEntry]] = []
    bad_signatures: list[int] = []
    for number, line in enumerate(lines, start=1):
        parsed = _parse_line(number, line, problems)
        if parsed is None:
            continue
        entry, body = parsed
        entries.append((number, entry))
        if entry_hash(body) != entry.hash:
            problems.append(AuditProblem(line=number, kind="edited",
                                         message=f"seq {entry.seq}: content does not match its hash (the entry was edited)"))
        signature = _unb64(entry.signature)
        if signature is None or not verify(public_key, signature, bytes.fromhex(entry.hash)):
            bad_signatures.append(number)
    if entries and len(bad_signatures) == len(entries) and len(entries) > 1:
        problems.append(AuditProblem(line=None, kind="signature", message=(
            f"no entry's signature verifies with the key {fingerprint(public_key)}: wrong public key, "
            "or every entry was re-signed by someone else")))
    else:
        problems += [AuditProblem(line=n, kind="signature", message="the signature does not verify with the given key")
                     for n in bad_signatures]
    unreadable = [p.line for p in problems if p.kind == "malformed" and p.line is not None]
    problems += _chain_problems(entries, unreadable)
    last_line, last = max(entries, key=lambda item: item[1].seq, default=(0, None))
    problems += _head_problems(head, head_path, public_key, last, last_line)
    problems.sort(key=lambda p: (p.line is None, p.line or 0))
    return AuditVerification(ok=not problems, entries=len(entries), last_seq=last.seq if last else 0,
                             key_fingerprint=fingerprint(public_key), problems=problems)


def _parse_line(number: int, line: bytes, problems: list[AuditProblem]) -> tuple[AuditEntry, dict[str, Any]] | None:
    def bad(message: str) -> None:
        problems.append(AuditProblem(line=number, kind="malformed", message=message))

    if not line.strip():
        bad("empty line")
        return None
    try:
        body = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        bad(f"not a JSON object ({type(error).__name__}: {str(error)[:120]})")
        return None
    if not isinstance(body, dict):
        bad(f"a JSON {type(body).__name__}, not an entry object")
        return None
    try:
        entry = AuditEntry.model_validate(body)
        entry_hash(body)  # data must be re-encodable (no NaN)
    except ValidationError as error:
        first = error.errors()[0]
        bad(f"field {'.'.join(map(str, first['loc'])) or '(entry)'}: {first['msg']}")
        return None
    except (TypeError, ValueError, RecursionError) as error:
        bad(f"cannot be hashed canonically ({error})")
        return None
    return entry, body


def _chain_problems(entries: list[tuple[int, AuditEntry]], unreadable: list[int]) -> list[AuditProblem]:
    problems: list[AuditProblem] = []
    by_seq: dict[int, AuditEntry] = {}
    for number, entry in entries:
        if entry.seq in by_seq:
            problems.append(AuditProblem(line=number, kind="duplicate", message=f"seq {entry.seq} appears more than once"))
        else:
            by_seq[entry.seq] = entry
    # Order: each line's seq must be above the one before it.
    for (_, before), (number, entry) in zip(entries, entries[1:]):
        if entry.seq < before.seq:
            problems.append(AuditProblem(line=number, kind="reordered",
                                         message=f"seq {entry.seq} comes after seq {before.seq}"))
    # Gaps: a seq below the highest that no line holds was deleted, unless unreadable lines
    # stand in its place (those are reported as malformed already).
    seqs = sorted(by_seq)
    line_of = {e.seq: n for n, e in reversed(entries)}
    for low, high in zip([0, *seqs], seqs):
        between = sum(line_of.get(low, 0) < n < line_of[high] for n in unreadable)
        if high > low + 1 + between:
            missing = f"seq {low + 1}" if high == low + 2 else f"seq {low + 1}-{high - 1}"
            problems.append(AuditProblem(line=line_of[high], kind="deleted",
                                         message=f"{missing} missing before seq {high} (entries were deleted)"))
    # Chain: each entry names the hash of the entry before it.
    for number, entry in entries:
        expected = GENESIS if entry.seq == 1 else by_seq[entry.seq - 1].hash if entry.seq - 1 in by_seq else None
        if expected is not None and entry.prev != expected and by_seq.get(entry.seq) is entry:
            problems.append(AuditProblem(line=number, kind="chain", message=(
                f"seq {entry.seq}: prev does not match the hash of seq {entry.seq - 1} "
                "(an earlier entry was replaced)" if entry.seq > 1 else "seq 1: prev is not the genesis value")))
    return problems


def _head_problems(
    head: AuditHead | str, head_path: Path, public_key: Ed25519PublicKey, last: AuditEntry | None, last_line: int
) -> list[AuditProblem]:
    """Does the entry with the highest seq (at ``last_line``) match the signed head?"""
    if isinstance(head, str):
        return [AuditProblem(line=None, kind="head", message=head)]
    signature = _unb64(head.signature)
    if signature is None or not verify(public_key, signature, _head_message(head.seq, head.hash)):
        return [AuditProblem(line=None, kind="head", message=f"{head_path}: the head's signature does not verify with the given key")]
    last_seq, last_hash = (last.seq, last.hash) if last else (0, GENESIS)
    if head.seq > last_seq:
        return [AuditProblem(line=last_line + 1, kind="truncated", message=(
            f"the log ends at seq {last_seq} (line {last_line}), but the signed head says seq {head.seq}: "
            f"{head.seq - last_seq} {'entry was' if head.seq - last_seq == 1 else 'entries were'} cut off the end"))]
    if head.seq < last_seq:
        return [AuditProblem(line=None, kind="head", message=(
            f"the log goes on to seq {last_seq}, but the signed head says seq {head.seq}: entries were added "
            "without re-signing the head, or the head was rolled back"))]
    if head.hash != last_hash:
        return [AuditProblem(line=None, kind="head", message=(
            f"seq {last_seq}'s hash differs from the one in the signed head: the last entry was replaced"))]
    return []
