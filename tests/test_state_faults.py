"""State faults: a read-only state directory and a full disk.

Each writer of durable state — the privacy ledger, the audit log, the consent registry, the
coordinator checkpoint, the window cache — must fail with a clear error naming the path,
leave the previous state exactly as it was (same bytes, still loads) and leave no temporary
file behind.

* Read-only: the folder is chmod 0o500 and its files 0o400. Root ignores modes (it holds
  CAP_DAC_OVERRIDE), so as root the test also drops CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and
  CAP_FOWNER from the calling thread's *effective* set with capset(2) — root is then held to
  the owner's mode bits like anyone else — and raises them again from the permitted set
  afterwards. A probe write confirms the folder really is read-only before the writer runs.
* Disk full: the write runs in a child process whose RLIMIT_FSIZE lies just above the current
  file size, with SIGXFSZ ignored, so a write past it is short and the next one fails with
  EFBIG — the way a full disk tears an append.
"""

from __future__ import annotations

import ctypes
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from fedneuro.governance.audit import AuditLog, AuditLogError, head_path_for, verify_audit_log
from fedneuro.governance.consent import ConsentFileError, consent_path, import_consent_file, load_registry
from fedneuro.governance.keys import generate_signing_key, load_signing_key, write_signing_key
from fedneuro.privacy.ledger import LedgerEntry, LedgerError, PrivacyLedger

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
HEADER = "participant_id\tconsent_duo\tconsent_date\tconsent_expiry\tconsent_withdrawn\n"


# --------------------------------------------------------------------------- helpers
class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_CAP_VERSION_3 = 0x20080522
_DAC_CAPS = (1 << 1) | (1 << 2) | (1 << 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER


@contextmanager
def _held_to_file_modes() -> Iterator[None]:
    """As root: this thread without the capabilities that bypass file modes, for the block."""
    if os.geteuid() != 0:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    header, data = _CapHeader(_CAP_VERSION_3, 0), (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        pytest.fail(f"running as root and capget failed (errno {ctypes.get_errno()}): cannot make a folder read-only")
    saved = data[0].effective
    data[0].effective = saved & ~_DAC_CAPS
    if libc.capset(ctypes.byref(header), data) != 0:
        pytest.fail(f"running as root and capset failed (errno {ctypes.get_errno()}): cannot make a folder read-only")
    try:
        yield
    finally:
        data[0].effective = saved
        assert libc.capset(ctypes.byref(header), data) == 0, "could not restore this thread's capabilities"


@contextmanager
def read_only(folder: Path, *, files_too: bool = True) -> Iterator[None]:
    """``folder`` (and, with ``files_too``, every file under it) read-only for this block."""
    paths = [folder, *folder.rglob("*")]
    modes = {p: stat.S_IMODE(p.lstat().st_mode) for p in paths}
    try:
        for path in paths:
            if path.is_dir():
                os.chmod(path, 0o500)
            elif files_too:
                os.chmod(path, 0o400)
        with _held_to_file_modes():
            probe = folder / ".write-probe"
            try:
                probe.touch()
            except PermissionError:
                pass
            else:
                probe.unlink()
                pytest.fail(f"{folder} stays writable after chmod 0o500: the read-only fault cannot be staged here")
            yield
    finally:
        for path, mode in modes.items():
            os.chmod(path, mode)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (temporary files included) and its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


CHILD = """
import json, os, resource, signal, sys
args = json.loads(sys.argv[1])
{imports}
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (args["limit"], args["limit"]))
try:
{body}
except Exception as error:
    print(json.dumps({{"type": type(error).__name__, "message": str(error)}}))
else:
    print(json.dumps({{"type": None, "message": ""}}))
"""


def with_file_size_limit(limit: int, imports: str, body: str, **args: object) -> dict[str, str | None]:
    """Run ``body`` in a child whose files cannot grow past ``limit`` bytes; its exception, if any."""
    code = CHILD.format(imports=imports, body="\n".join("    " + line for line in body.strip().splitlines()))
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code, json.dumps({**args, "limit": limit})], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"the child died (rc {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- the privacy ledger
def _entry(round_: int) -> LedgerEntry:
    return LedgerEntry(study_id="s", round=round_, noise_multiplier=1.0, sample_rate=0.1, steps=3, max_grad_norm=1.0,
                       unit="participant", delta=1e-5, recorded_at="2025-01-01T00:00:00+00:00")


@pytest.fixture()
def ledger(tmp_path: Path) -> PrivacyLedger:
    ledger = PrivacyLedger(tmp_path / "state" / "privacy-ledger.jsonl")
    ledger.append([_entry(1), _entry(2)])
    return ledger


def test_ledger_append_in_a_read_only_state_dir(ledger: PrivacyLedger) -> None:
    state = ledger.path.parent
    before = snapshot(state)
    with read_only(state), pytest.raises(
        LedgerError, match=rf"privacy ledger {ledger.path}: cannot record 1 DP step entry \(Permission denied\); "
                           r"the ledger is unchanged"):
        ledger.append([_entry(3)])
    assert snapshot(state) == before
    assert [e.round for e in ledger.entries()] == [1, 2]


def test_a_first_ledger_append_in_a_read_only_state_dir_creates_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    ledger = PrivacyLedger(state / "privacy-ledger.jsonl")
    with read_only(state), pytest.raises(LedgerError, match=rf"{ledger.path}: cannot record 2 DP step entries"):
        ledger.append([_entry(1), _entry(2)])
    assert snapshot(state) == {}


def test_ledger_append_on_a_full_disk_leaves_no_torn_line(ledger: PrivacyLedger) -> None:
    before = snapshot(ledger.path.parent)
    size = ledger.path.stat().st_size
    outcome = with_file_size_limit(
        size + 20,  # the new line starts, then the disk is full
        "from fedneuro.privacy.ledger import LedgerEntry, PrivacyLedger",
        'PrivacyLedger(__import__("pathlib").Path(args["path"])).append([LedgerEntry(**args["entry"])])',
        path=str(ledger.path), entry=_entry(3).model_dump(mode="json"),
    )
    assert outcome["type"] == "LedgerError", outcome
    assert f"privacy ledger {ledger.path}: cannot record 1 DP step entry (File too large); the ledger is unchanged" \
        in str(outcome["message"])
    assert snapshot(ledger.path.parent) == before  # truncated back: no torn line, no temp file
    assert [e.round for e in ledger.entries()] == [1, 2]
    ledger.append([_entry(3)])  # and the site can go on once there is space
    assert [e.round for e in ledger.entries()] == [1, 2, 3]


# --------------------------------------------------------------------------- the audit log
@pytest.fixture()
def audit(tmp_path: Path) -> AuditLog:
    key_path = tmp_path / "keys" / "site.key"
    write_signing_key(key_path, generate_signing_key())
    log = AuditLog(tmp_path / "state" / "audit.jsonl", load_signing_key(key_path), actor="hospital-a")
    for i in range(2):
        log.append("round-trained", {"round": i + 1}, now=T0 + timedelta(minutes=i))
    return log


def _assert_audit_intact(log: AuditLog, before: dict[str, bytes]) -> None:
    assert snapshot(log.path.parent) == before
    result = verify_audit_log(log.path, log._key.public_key())  # noqa: SLF001 - the log's own key
    assert result.ok and result.last_seq == 2, result.problems
    log.append("round-trained", {"round": 3}, now=T0 + timedelta(minutes=3))  # the chain goes on
    assert verify_audit_log(log.path, log._key.public_key()).last_seq == 3  # noqa: SLF001


def test_audit_append_in_a_read_only_state_dir(audit: AuditLog) -> None:
    before = snapshot(audit.path.parent)
    with read_only(audit.path.parent), pytest.raises(
        AuditLogError, match=rf"{audit.path}: cannot append the 'round-trained' entry \(Permission denied\); "
                             r"the log and its head are unchanged"):
        audit.append("round-trained", {"round": 3}, now=T0 + timedelta(minutes=3))
    _assert_audit_intact(audit, before)


def test_audit_append_whose_head_cannot_be_written_is_rolled_back(audit: AuditLog) -> None:
    """The log file is writable but its folder is not: the entry is appended, the signed head
    cannot be replaced; the entry must go again, or every later append would be refused."""
    before = snapshot(audit.path.parent)
    with read_only(audit.path.parent, files_too=False), pytest.raises(
        AuditLogError, match=rf"{audit.path}: cannot append the 'round-trained' entry \(Permission denied\)"):
        audit.append("round-trained", {"round": 3}, now=T0 + timedelta(minutes=3))
    _assert_audit_intact(audit, before)


def test_audit_append_on_a_full_disk_leaves_log_and_head_agreeing(audit: AuditLog, tmp_path: Path) -> None:
    before = snapshot(audit.path.parent)
    outcome = with_file_size_limit(
        audit.path.stat().st_size + 30,
        "from datetime import datetime, timezone\nfrom pathlib import Path\n"
        "from fedneuro.governance.audit import AuditLog\nfrom fedneuro.governance.keys import load_signing_key",
        'log = AuditLog(Path(args["log"]), load_signing_key(Path(args["key"])), actor="hospital-a")\n'
        'log.append("round-trained", {"round": 3}, now=datetime(2025, 6, 1, 12, 3, tzinfo=timezone.utc))',
        log=str(audit.path), key=str(tmp_path / "keys" / "site.key"),
    )
    assert outcome["type"] == "AuditLogError", outcome
    assert f"{audit.path}: cannot append the 'round-trained' entry (File too large)" in str(outcome["message"])
    assert head_path_for(audit.path).read_bytes() == before["audit.jsonl.head"]
    _assert_audit_intact(audit, before)


# --------------------------------------------------------------------------- the consent registry
@pytest.fixture()
def consent_state(tmp_path: Path) -> Path:
    source = tmp_path / "first.tsv"
    source.write_text(HEADER + "sub-01\tHMB\t2024-01-01\tn/a\tn/a\n", encoding="utf-8")
    import_consent_file(tmp_path / "state", source)
    return tmp_path / "state"


def _second_source(tmp_path: Path) -> Path:
    source = tmp_path / "second.tsv"
    source.write_text(HEADER + "sub-01\tHMB\t2024-01-01\tn/a\t2025-02-01\nsub-02\tGRU\t2024-03-01\tn/a\tn/a\n",
                      encoding="utf-8")
    return source


def test_consent_import_into_a_read_only_state_dir(consent_state: Path, tmp_path: Path) -> None:
    before = snapshot(consent_state)
    with read_only(consent_state), pytest.raises(
        ConsentFileError, match=rf"{consent_state / '.consent.json.lock'}: cannot lock the consent registry "
                                r"\(Permission denied\); nothing was changed"):
        import_consent_file(consent_state, _second_source(tmp_path))
    assert snapshot(consent_state) == before


def test_consent_save_into_a_read_only_folder_keeps_the_registry(consent_state: Path, tmp_path: Path) -> None:
    """The lock file can be opened (it is writable), but no new registry can be written beside it."""
    before = snapshot(consent_state)
    with read_only(consent_state, files_too=False), pytest.raises(
        ConsentFileError, match=rf"{consent_path(consent_state)}: cannot save the consent registry \(Permission "
                                r"denied\); the registry on disk is unchanged"):
        import_consent_file(consent_state, _second_source(tmp_path))
    assert snapshot(consent_state) == before
    record = load_registry(consent_state).get("sub-01")
    assert record is not None and record.withdrawn is None


# --------------------------------------------------------------------------- the coordinator checkpoint
class _Adam:
    def __init__(self, value: float) -> None:
        self.m_t = {"head.weight": np.full(4, value, dtype=np.float32)}
        self.v_t = {"head.weight": np.full(4, value / 2, dtype=np.float32)}


def _save(directory: Path, round_: int, arrays: dict[str, np.ndarray]) -> None:
    from fedneuro.federation.checkpoint import save_checkpoint

    save_checkpoint(directory, study_id="s", study_digest="d", manifest_digest="m", completed_round=round_,
                    rounds=[{"round": r} for r in range(1, round_ + 1)], arrays=arrays, strategy=_Adam(float(round_)))


def _assert_checkpoint_is_round_2(directory: Path, arrays: dict[str, np.ndarray], before: dict[str, bytes]) -> None:
    from fedneuro.federation.checkpoint import load_checkpoint

    assert snapshot(directory) == before  # the same three files, byte for byte; no temporary file
    state, loaded, strategy = load_checkpoint(directory, study_digest="d", manifest_digest="m")
    assert state.completed_round == 2
    assert all(np.array_equal(loaded[k], arrays[k]) for k in arrays)
    assert np.array_equal(strategy["m_t"]["head.weight"], np.full(4, 2.0, dtype=np.float32))


SMALL = {"head.weight": np.arange(4, dtype=np.float32)}
LARGE = {"head.weight": np.arange(4, dtype=np.float32), "lora_A": np.ones(4096, dtype=np.float32)}


def test_checkpoint_save_into_a_read_only_folder(tmp_path: Path) -> None:
    from fedneuro.federation.checkpoint import CheckpointError

    directory = tmp_path / "checkpoint"
    _save(directory, 2, SMALL)
    before = snapshot(directory)
    with read_only(directory), pytest.raises(
        CheckpointError, match=rf"checkpoint {directory}: cannot save round 3 \(Permission denied\); the previous "
                               r"checkpoint is unchanged"):
        _save(directory, 3, {"head.weight": SMALL["head.weight"] + 1})
    _assert_checkpoint_is_round_2(directory, SMALL, before)


@pytest.mark.parametrize("arrays", [
    pytest.param(LARGE, id="the-adapter-does-not-fit"),
    pytest.param(SMALL, id="adapter-fits-state-json-does-not"),  # the old code had replaced the adapter by then
])
def test_checkpoint_save_on_a_full_disk_keeps_the_previous_round(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    directory = tmp_path / "checkpoint"
    _save(directory, 2, arrays)
    before = snapshot(directory)
    limit = 4096
    sizes = {name: len(blob) for name, blob in before.items()}
    assert sizes["state.json"] > limit and sizes["strategy.safetensors"] < limit
    assert (sizes["arrays.safetensors"] > limit) == (arrays is LARGE)
    outcome = with_file_size_limit(
        limit,
        "import numpy as np\nfrom pathlib import Path\nfrom fedneuro.federation.checkpoint import save_checkpoint\n"
        "class Adam:\n    m_t = {'head.weight': np.full(4, 3.0, dtype=np.float32)}\n    v_t = m_t",
        'arrays = {k: np.asarray(v, dtype=np.float32) + 1 for k, v in args["arrays"].items()}\n'
        'save_checkpoint(Path(args["dir"]), study_id="s", study_digest="d", manifest_digest="m", completed_round=3,\n'
        '                rounds=[], arrays=arrays, strategy=Adam())',
        dir=str(directory), arrays={k: v.tolist() for k, v in arrays.items()},
    )
    assert outcome["type"] == "CheckpointError", outcome
    assert f"checkpoint {directory}: cannot save round 3 (File too large); the previous checkpoint is unchanged" \
        in str(outcome["message"])
    _assert_checkpoint_is_round_2(directory, arrays, before)


# --------------------------------------------------------------------------- the window cache
def test_window_cache_write_into_a_read_only_cache(tmp_path: Path) -> None:
    from fedneuro.data.cache import CachedRecording, WindowCache

    cache = WindowCache(tmp_path / "state" / "window-cache")
    entry = CachedRecording(X=np.ones((2, 3, 4), dtype=np.float32), y=np.zeros(0, dtype=np.int64), report={"file": "a"})
    old_key, same_folder, new_folder = "ab" + "0" * 62, "ab" + "1" * 62, "cd" + "0" * 62
    cache.store(old_key, entry)
    before = snapshot(cache.directory)
    with read_only(cache.directory):
        for key in (same_folder, new_folder):
            with pytest.raises(PermissionError, match=rf"Permission denied: '{cache.directory / key[:2]}"):
                cache.store(key, entry)
    assert snapshot(cache.directory) == before  # no temporary file, the old entry untouched
    hit = cache.load(old_key)
    assert hit is not None and np.array_equal(hit.X, entry.X)
    assert cache.load(same_folder) is None and cache.load(new_folder) is None


def test_a_site_whose_window_cache_cannot_be_written_still_reads_its_data(tmp_path: Path, data_consortium, caplog) -> None:
    from fedneuro.data.harmonise import load_site_windows
    from fedneuro.models.registry import get_backbone_preset
    from fedneuro.study import default_study_path, load_study
    from fedneuro.training.site import site_cohort

    study = load_study(default_study_path())
    name, root = next(iter(data_consortium.items()))
    cohort = site_cohort(root, study)
    contract = get_backbone_preset("biot-tiny").contract
    cache_dir = tmp_path / "state" / "window-cache"
    cache_dir.mkdir(parents=True)
    with read_only(cache_dir), caplog.at_level("WARNING", logger="fedneuro.data.harmonise"):
        windows = load_site_windows(root, cohort, contract, study.data, on_error="skip", cache_dir=cache_dir)
    assert not windows.report.refused and len(windows.participant_ids) == len(cohort.participant_ids)
    warnings = [r.getMessage() for r in caplog.records if "cannot be written" in r.getMessage()]
    assert len(warnings) == 1 and str(cache_dir) in warnings[0]  # said once, then no cache
