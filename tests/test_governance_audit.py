"""The tamper-evident audit log: a valid chain verifies; every kind of tampering is found, with its line."""

from __future__ import annotations

import json
import multiprocessing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedneuro.cli.main import app
from fedneuro.governance.audit import (
    GENESIS,
    AuditLog,
    AuditLogError,
    AuditVerification,
    entry_hash,
    head_path_for,
    verify_audit_log,
)
from fedneuro.governance.keys import generate_signing_key, load_signing_key, write_signing_key

runner = CliRunner()
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    private = tmp_path_factory.mktemp("keys") / "site.key"
    public = write_signing_key(private, generate_signing_key())
    return private, public


@pytest.fixture()
def written(tmp_path: Path, key_files: tuple[Path, Path]) -> tuple[Path, AuditLog]:
    """A log of 5 entries; entries are lines 1-5."""
    log = AuditLog(tmp_path / "audit.jsonl", load_signing_key(key_files[0]), actor="hospital-a")
    for i in range(5):
        log.append("round-trained", {"round": i + 1, "epsilon": 0.5 * (i + 1), "site": "hospital-a"},
                   now=T0 + timedelta(minutes=i))
    return log.path, log


def _verify(path: Path, key_files: tuple[Path, Path]) -> AuditVerification:
    from fedneuro.governance.keys import load_public_key

    return verify_audit_log(path, load_public_key(key_files[1]))


def _problems(result: AuditVerification) -> list[tuple[int | None, str]]:
    return [(p.line, p.kind) for p in result.problems]


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_a_valid_chain_verifies(written: tuple[Path, AuditLog], key_files: tuple[Path, Path]) -> None:
    path, _ = written
    result = _verify(path, key_files)
    assert (result.ok, result.entries, result.last_seq, result.problems) == (True, 5, 5, [])
    entries = [json.loads(line) for line in _lines(path)]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0]["prev"] == GENESIS and entries[1]["prev"] == entries[0]["hash"]
    assert entries[0]["time"] == "2025-06-01T12:00:00.000000Z" and entries[0]["actor"] == "hospital-a"
    assert all(entry_hash(e) == e["hash"] for e in entries)
    head = json.loads(head_path_for(path).read_text())
    assert set(head) == {"seq", "hash", "signature"} and (head["seq"], head["hash"]) == (5, entries[-1]["hash"])


def test_an_edited_entry_is_found(written: tuple[Path, AuditLog], key_files: tuple[Path, Path]) -> None:
    path, _ = written
    lines = _lines(path)
    lines[2] = lines[2].replace('"epsilon":1.5', '"epsilon":0.1')
    _write(path, lines)
    result = _verify(path, key_files)
    assert _problems(result) == [(3, "edited")]
    assert "seq 3: content does not match its hash" in result.problems[0].message


def test_a_rehashed_forgery_fails_its_signature_and_breaks_the_chain(written: tuple[Path, AuditLog],
                                                                     key_files: tuple[Path, Path]) -> None:
    path, _ = written
    lines = _lines(path)
    entry = json.loads(lines[1])
    entry["data"]["epsilon"] = 0.01
    entry["hash"] = entry_hash(entry)
    lines[1] = json.dumps(entry)
    _write(path, lines)
    assert _problems(_verify(path, key_files)) == [(2, "signature"), (3, "chain")]


def test_a_deleted_entry_is_found(written: tuple[Path, AuditLog], key_files: tuple[Path, Path]) -> None:
    path, _ = written
    lines = _lines(path)
    _write(path, lines[:2] + lines[3:])
    result = _verify(path, key_files)
    assert _problems(result) == [(3, "deleted")]
    assert result.problems[0].message == "seq 3 missing before seq 4 (entries were deleted)"


def test_reordered_entries_are_found(written: tuple[Path, AuditLog], key_files: tuple[Path, Path]) -> None:
    path, _ = written
    lines = _lines(path)
    _write(path, [lines[0], lines[2], lines[1], lines[3], lines[4]])
    result = _verify(path, key_files)
    assert _problems(result) == [(3, "reordered")]
    assert result.problems[0].message == "seq 2 comes after seq 3"


def test_a_truncated_tail_is_found(written: tuple[Path, AuditLog], key_files: tuple[Path, Path]) -> None:
    path, log = written
    _write(path, _lines(path)[:3])
    result = _verify(path, key_files)
    assert _problems(result) == [(4, "truncated")]
    assert "ends at seq 3 (line 3), but the signed head says seq 5: 2 entries were cut off" in result.problems[0].message
    # The writer refuses to extend it, so the cut cannot be papered over by a new head.
    with pytest.raises(AuditLogError, match="the log ends at seq 3 but the signed head says seq 5"):
        log.append("late", {}, now=T0)


def test_a_head_copied_from_an_entry_signature_does_not_verify(written: tuple[Path, AuditLog],
                                                               key_files: tuple[Path, Path]) -> None:
    path, _ = written
    lines = _lines(path)[:4]
    _write(path, lines)
    last = json.loads(lines[-1])
    head_path_for(path).write_text(json.dumps({"seq": last["seq"], "hash": last["hash"], "signature": last["signature"]}))
    result = _verify(path, key_files)
    assert _problems(result) == [(None, "head")]
    assert "the head's signature does not verify" in result.problems[0].message


def test_a_missing_head_is_a_problem(written: tuple[Path, AuditLog], key_files: tuple[Path, Path]) -> None:
    path, log = written
    head_path_for(path).unlink()
    result = _verify(path, key_files)
    assert _problems(result) == [(None, "head")]
    assert "no signed head file" in result.problems[0].message
    with pytest.raises(AuditLogError, match="truncation of the log's tail cannot be ruled out; refusing to extend"):
        log.append("late", {}, now=T0)


def test_the_wrong_key_is_reported_once(written: tuple[Path, AuditLog]) -> None:
    path, _ = written
    result = verify_audit_log(path, generate_signing_key().public_key())
    assert _problems(result) == [(None, "signature"), (None, "head")]
    assert "no entry's signature verifies with the key sha256:" in result.problems[0].message


@pytest.mark.parametrize(
    ("garbage", "message"),
    [
        ("{oops", "not a JSON object (JSONDecodeError"),
        ("[1, 2]", "a JSON list, not an entry object"),
        ("", "empty line"),
        ('{"seq": "3"}', "field seq: Input should be a valid integer"),
        ("[" * 100_000, "not a JSON object (RecursionError"),
        ("\xff\xfe", "not a JSON object"),
    ],
)
def test_a_malformed_line_is_reported_not_raised(written: tuple[Path, AuditLog], key_files: tuple[Path, Path],
                                                 garbage: str, message: str) -> None:
    path, _ = written
    lines = _lines(path)
    lines[2] = garbage
    _write(path, lines)
    result = _verify(path, key_files)
    assert _problems(result) == [(3, "malformed")]
    assert message in result.problems[0].message


def test_a_nan_in_data_is_malformed(written: tuple[Path, AuditLog], key_files: tuple[Path, Path]) -> None:
    path, _ = written
    lines = _lines(path)
    lines[4] = lines[4].replace('"epsilon":2.5', '"epsilon":NaN')
    _write(path, lines)
    # The last entry is unreadable, so the readable log ends one entry before the head.
    assert _problems(_verify(path, key_files)) == [(5, "malformed"), (5, "truncated")]


def test_append_refuses_bad_input(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl", generate_signing_key(), actor="coordinator")
    with pytest.raises(ValueError, match="needs a time zone"):
        log.append("x", {}, now=datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="audit data for event 'x' is not plain JSON"):
        log.append("x", {"when": datetime(2025, 1, 1)}, now=T0)
    with pytest.raises(ValueError, match="actor must name the site or coordinator"):
        AuditLog(tmp_path / "a.jsonl", generate_signing_key(), actor="")
    with pytest.raises(AuditLogError, match="audit log not found"):
        verify_audit_log(tmp_path / "a.jsonl", generate_signing_key().public_key())


def test_append_refuses_to_extend_a_damaged_tail(written: tuple[Path, AuditLog]) -> None:
    path, log = written
    lines = _lines(path)
    _write(path, lines[:-1] + [lines[-1].replace('"round":5', '"round":6')])
    with pytest.raises(AuditLogError, match=r"the last entry \(seq 5\) was edited; refusing to extend it"):
        log.append("late", {}, now=T0)
    _write(path, lines[:-1] + ['{"seq": 5'])
    with pytest.raises(AuditLogError, match="the last line is not a valid audit entry; refusing to extend a damaged log"):
        log.append("late", {}, now=T0)


def _append_many(path: str, key_path: str, worker: int, count: int) -> None:
    log = AuditLog(Path(path), load_signing_key(Path(key_path)), actor=f"worker-{worker}")
    for i in range(count):
        log.append("tick", {"worker": worker, "i": i}, now=T0)


def test_concurrent_appends_from_several_processes_stay_one_chain(tmp_path: Path, key_files: tuple[Path, Path]) -> None:
    path = tmp_path / "shared.jsonl"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(str(path), str(key_files[0]), w, 8)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    result = _verify(path, key_files)
    assert (result.ok, result.entries, result.problems) == (True, 32, [])
    seen = {(e["data"]["worker"], e["data"]["i"]) for e in map(json.loads, _lines(path))}
    assert len(seen) == 32


# --------------------------------------------------------------------------- CLI
def test_cli_verify_exit_codes_and_json(written: tuple[Path, AuditLog], key_files: tuple[Path, Path], tmp_path: Path) -> None:
    path, _ = written
    pub = str(key_files[1])
    ok = runner.invoke(app, ["audit", "verify", str(path), "--pubkey", pub, "--json"])
    assert ok.exit_code == 0, ok.output
    report = json.loads(ok.stdout)
    assert set(report) == {"log", "ok", "entries", "last_seq", "key_fingerprint", "problems"}
    assert (report["ok"], report["entries"]) == (True, 5)
    plain = runner.invoke(app, ["audit", "verify", str(path), "--pubkey", pub])
    assert plain.exit_code == 0 and "OK" in plain.stdout and "5 entries" in plain.stdout

    lines = _lines(path)
    _write(path, lines[:1] + lines[2:])
    bad = runner.invoke(app, ["audit", "verify", str(path), "--pubkey", pub, "--json"])
    assert bad.exit_code == 1
    assert [(p["line"], p["kind"]) for p in json.loads(bad.stdout)["problems"]] == [(2, "deleted")]
    plain = runner.invoke(app, ["audit", "verify", str(path), "--pubkey", pub])
    assert plain.exit_code == 1 and "line 2: deleted: seq 2 missing before seq 3" in plain.stdout

    missing = runner.invoke(app, ["audit", "verify", str(tmp_path / "none.jsonl"), "--pubkey", pub])
    assert missing.exit_code == 2 and "audit log not found" in " ".join(missing.output.split())
    not_a_key = tmp_path / "bad.pub"
    not_a_key.write_text("hello")
    wrong = runner.invoke(app, ["audit", "verify", str(path), "--pubkey", str(not_a_key), "--json"])
    assert wrong.exit_code == 2 and "not a PEM public key" in " ".join(wrong.output.split())
