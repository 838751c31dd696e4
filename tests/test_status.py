"""Operations: `fedneuro status` over a coordinator state folder built by the real writers
(StudyRecord's summary.json, the coordinator's audit log, the TensorBoard tracker, nodes.json)
with the SuperLink unreachable, its run/node matching on Flower's JSON replies, and the
structured (JSON lines) log format."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedneuro.cli import status as status_module
from fedneuro.cli.common import out_console, setup_logging
from fedneuro.cli.main import app
from fedneuro.cli.status import collect_status, match_runs, read_nodes, record_nodes, run_rows, site_rows, study_status
from fedneuro.deploy.consortium import load_consortium
from fedneuro.deploy.provision import provision
from fedneuro.federation.results import StudyRecord
from fedneuro.federation.rounds import RoundReport, SiteRoundReport
from fedneuro.federation.tracking import RoundTracker
from fedneuro.governance.audit import AuditLog
from fedneuro.governance.keys import load_signing_key
from fedneuro.logs import LOG_FORMAT_ENV, JsonFormatter, configure_from_env, log_context, make_handler

runner = CliRunner()
SITES = ["hospital-a", "hospital-b", "hospital-c"]
REPORT_KEYS = {"schema", "state", "checked_at", "superlink", "sites", "runs", "studies"}
SUPERLINK_KEYS = {"address", "reachable", "error"}
SITE_KEYS = {"site", "node_id", "status", "since", "online_s"}
RUN_KEYS = {"run_id", "status", "details", "elapsed_s", "pending_at", "running_at", "finished_at"}
STUDY_KEYS = {"study_id", "status", "rounds_completed", "rounds_total", "last_round", "balanced_accuracy",
              "participant_balanced_accuracy", "epsilon", "failures", "error", "run_id", "run_status",
              "updated_at", "wall_time_s", "tensorboard"}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the socket is: nothing listens there


def _report(round_: int, failures: list[str] | None = None) -> RoundReport:
    sites = {name: SiteRoundReport(site=name, num_examples=100, privacy_units=20, epsilon=0.4 * round_ + i,
                                   delta=1e-5, epsilon_accountant="prv", dp_steps=5, train_loss=0.7,
                                   bytes_uploaded=2048, balanced_accuracy=0.6, test_windows=30, test_participants=6)
             for i, name in enumerate(SITES)}
    if failures:
        sites["hospital-c"] = SiteRoundReport(site="hospital-c")
    return RoundReport(round=round_, sites=sites, balanced_accuracy=0.5 + 0.1 * round_,
                       participant_balanced_accuracy=0.55 + 0.1 * round_, failures=failures or [], wall_time_s=12.0)


def _study_dir(state: Path, study_id: str, rounds: int) -> Path:
    folder = state / "studies" / study_id
    folder.mkdir(parents=True)
    text = (Path(__file__).parents[1] / "fedneuro" / "studies" / "demo.toml").read_text(encoding="utf-8")
    assert "rounds = 5" in text
    (folder / "study.toml").write_text(text.replace("rounds = 5", f"rounds = {rounds}"), encoding="utf-8")
    return folder


def _record(folder: Path, reports: list[RoundReport], status: str) -> None:
    record = StudyRecord(folder, header={"study_id": folder.name, "privacy_labels": {"unit": "participant"}})
    for report in reports:
        record.add(report)
    record.write(status=status, wall_time_s=30.0)


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    """A coordinator kit whose SuperLink port is closed, and a state folder with four studies."""
    root = tmp_path_factory.mktemp("status")
    port = _closed_port()
    spec = root / "consortium.toml"
    spec.write_text('[consortium]\nname = "EEG consortium"\n\n[coordinator]\nhost = "127.0.0.1"\n'
                    f"port = {port}\n\n" + "".join(f'[[sites]]\nname = "{s}"\n\n' for s in SITES), encoding="utf-8")
    provision(load_consortium(spec), root / "kits")
    kit = root / "kits" / "coordinator"
    state = root / "state"
    state.mkdir()
    # `server start` records the ids `flwr supernode register` returns; a restart gets "" for a
    # key registered before and must keep the id recorded then.
    record_nodes(state, {"hospital-a": "1111", "hospital-b": "2222", "hospital-c": ""})
    assert record_nodes(state, {"hospital-a": "", "hospital-c": "3333"}) == {
        "hospital-a": "1111", "hospital-b": "2222", "hospital-c": "3333"}

    done = _study_dir(state, "eeg-done", rounds=2)
    _record(done, [_report(1), _report(2)], "completed")
    with RoundTracker(done) as tracker:
        tracker.log_round(_report(1))
        tracker.log_round(_report(2))

    failed = _study_dir(state, "eeg-failed", rounds=3)
    _record(failed, [_report(1, failures=["hospital-c: train failed: site hospital-c: ε budget exceeded"])], "failed")
    audit = AuditLog(failed / "coordinator.audit.jsonl", load_signing_key(kit / "signing.key"), actor="coordinator")
    now = datetime.now(UTC)
    audit.append("study-started", {"study_id": "eeg-failed", "first_round": 1}, now=now)
    audit.append("round-finished", {"round": 1}, now=now)
    audit.append("study-failed", {"study_id": "eeg-failed", "error": "round 2: only 1 of 3 sites connected within 60 s"},
                 now=now)

    _record(_study_dir(state, "eeg-running", rounds=4), [_report(1)], "running")
    _study_dir(state, "eeg-new", rounds=5)  # launched, nothing recorded yet
    return kit, state, port


def test_nodes_file_is_tolerant(tmp_path: Path) -> None:
    assert read_nodes(tmp_path) == {}
    (tmp_path / "nodes.json").write_text("{not json")
    assert read_nodes(tmp_path) == {}
    (tmp_path / "nodes.json").write_text('{"sites": {"a": 12, "b": "", "c": null}}')
    assert read_nodes(tmp_path) == {"a": "12"}


def test_study_status_from_real_writers(consortium: tuple[Path, Path, int]) -> None:
    _, state, _ = consortium
    done = study_status(state / "studies" / "eeg-done")
    assert set(done) == STUDY_KEYS
    assert done["status"] == "completed" and (done["rounds_completed"], done["rounds_total"], done["last_round"]) == (2, 2, 2)
    assert done["balanced_accuracy"] == pytest.approx(0.7)
    assert done["epsilon"] == pytest.approx({"hospital-a": 0.8, "hospital-b": 1.8, "hospital-c": 2.8})
    assert done["failures"] == [] and done["error"] is None and done["tensorboard"] is True
    failed = study_status(state / "studies" / "eeg-failed")
    assert failed["status"] == "failed" and (failed["rounds_completed"], failed["rounds_total"]) == (1, 3)
    assert failed["failures"] == ["hospital-c: train failed: site hospital-c: ε budget exceeded"]
    assert failed["error"] == "round 2: only 1 of 3 sites connected within 60 s"  # from the audit log
    assert set(failed["epsilon"]) == {"hospital-a", "hospital-b"}  # hospital-c never trained: no ε
    new = study_status(state / "studies" / "eeg-new")
    assert (new["status"], new["rounds_completed"], new["rounds_total"], new["balanced_accuracy"]) == ("no summary yet", 0, 5, None)


def test_status_json_without_a_superlink(consortium: tuple[Path, Path, int]) -> None:
    kit, state, port = consortium
    started = time.monotonic()
    result = runner.invoke(app, ["status", "--kit", str(kit), "--state", str(state), "--json"])
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 20  # no waiting on an address where nothing listens
    report = json.loads(result.stdout)
    assert set(report) == REPORT_KEYS and report["schema"] == 1
    assert set(report["superlink"]) == SUPERLINK_KEYS
    assert report["superlink"]["reachable"] is False and report["superlink"]["address"] == f"127.0.0.1:{port}"
    assert "nothing answers" in report["superlink"]["error"]
    assert report["runs"] == []
    assert [(s["site"], s["node_id"], s["status"]) for s in report["sites"]] == [
        ("hospital-a", "1111", "unknown"), ("hospital-b", "2222", "unknown"), ("hospital-c", "3333", "unknown")]
    assert all(set(s) == SITE_KEYS for s in report["sites"])
    studies = {s["study_id"]: s for s in report["studies"]}
    assert list(studies) == ["eeg-done", "eeg-failed", "eeg-new", "eeg-running"]
    assert all(set(s) == STUDY_KEYS for s in studies.values())
    # Without the SuperLink a "running" summary cannot be checked against the runs: shown as is.
    assert studies["eeg-running"]["status"] == "running" and studies["eeg-running"]["run_id"] is None
    assert studies["eeg-failed"]["error"].startswith("round 2: only 1 of 3")


def test_status_text_without_a_superlink(consortium: tuple[Path, Path, int], monkeypatch: pytest.MonkeyPatch) -> None:
    kit, state, _ = consortium
    monkeypatch.setattr(out_console, "_width", 200)
    result = runner.invoke(app, ["status", "--kit", str(kit), "--state", str(state)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "not reachable" in out and "showing the state folder only" in out
    for text in ("hospital-a", "1111", "eeg-done", "completed", "2/2", "0.700", "eeg-failed", "1/3", "0/5",
                 "round 1: hospital-c: train failed", "error: round 2: only 1 of 3 sites connected"):
        assert text in out, text


def test_status_refuses_a_site_kit_and_a_missing_state(consortium: tuple[Path, Path, int], tmp_path: Path) -> None:
    kit, state, _ = consortium
    site_kit = kit.parent / "sites" / "hospital-a"
    result = runner.invoke(app, ["status", "--kit", str(site_kit), "--state", str(state)])
    assert result.exit_code == 2 and "needs the coordinator kit" in result.output
    (tmp_path / "a-file").write_text("")
    result = runner.invoke(app, ["status", "--kit", str(kit), "--state", str(tmp_path / "a-file")])
    assert result.exit_code == 2 and "is not a folder" in " ".join(result.output.split())
    # Before `server start` made it: said, and the rest still shown.
    result = runner.invoke(app, ["status", "--kit", str(kit), "--state", str(tmp_path / "nope"), "--json"])
    assert result.exit_code == 0 and "does not exist (yet)" in " ".join(result.stderr.split())
    assert json.loads(result.stdout)["studies"] == []


# --- the SuperLink's answers (as `flwr ... --format json` writes them) ---------------------------

def _flwr_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z").replace("T", " ")


def test_site_rows_name_nodes_and_show_unknown_ones() -> None:
    nodes = [
        {"node-id": "1111", "owner-name": "", "status": "online", "created-at": "2025-01-01 09:00:00Z",
         "online-at": "2025-01-01 10:00:00Z", "online-elapsed": 125.0, "offline-at": "N/A", "deleted-at": "N/A"},
        {"node-id": "2222", "owner-name": "", "status": "offline", "created-at": "2025-01-01 09:00:00Z",
         "online-at": "2025-01-01 10:00:00Z", "online-elapsed": 0.0, "offline-at": "2025-01-01 11:00:00Z",
         "deleted-at": "N/A"},
        {"node-id": "9999", "owner-name": "", "status": "registered", "created-at": "2025-01-01 09:00:00Z",
         "online-at": "N/A", "online-elapsed": 0.0, "offline-at": "N/A", "deleted-at": "N/A"},
    ]
    rows = site_rows(SITES, {"hospital-a": "1111", "hospital-b": "2222"}, nodes)
    assert rows == [
        {"site": "hospital-a", "node_id": "1111", "status": "online", "since": "2025-01-01T10:00:00Z", "online_s": 125.0},
        {"site": "hospital-b", "node_id": "2222", "status": "offline", "since": "2025-01-01T11:00:00Z", "online_s": None},
        {"site": "hospital-c", "node_id": None, "status": "no node id", "since": None, "online_s": None},
        {"site": None, "node_id": "9999", "status": "registered", "since": "2025-01-01T09:00:00Z", "online_s": None},
    ]


def test_runs_are_matched_to_studies_by_launch_time(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    for study_id, launched in (("old", now - timedelta(hours=2)), ("crashed", now - timedelta(minutes=30)),
                               ("live", now - timedelta(minutes=5))):
        folder = _study_dir(tmp_path, study_id, rounds=3)
        os.utime(folder / "study.toml", (launched.timestamp(), launched.timestamp()))
    _record(tmp_path / "studies" / "old", [_report(1)], "failed")
    _record(tmp_path / "studies" / "crashed", [_report(1)], "running")  # the ServerApp died mid-study
    _record(tmp_path / "studies" / "live", [_report(1)], "running")

    def run(run_id: str, status: str, start: datetime, end: datetime | None, details: str = "N/A") -> dict:
        return {"run-id": run_id, "status": status, "status-details": details, "elapsed": 1.0,
                "pending-at": _flwr_time(start - timedelta(seconds=2)), "starting-at": _flwr_time(start),
                "running-at": _flwr_time(start), "finished-at": _flwr_time(end) if end else "N/A"}

    runs = run_rows([
        run("30", "running", now - timedelta(minutes=5, seconds=1), None),
        run("20", "finished:failed", now - timedelta(minutes=30, seconds=1), now - timedelta(minutes=10),
            details="ServerApp process exited with code 137"),
        run("10", "finished:failed", now - timedelta(hours=2, seconds=1), now - timedelta(hours=1),
            details="Exception: round 1 failed"),
    ])
    assert set(runs[0]) == RUN_KEYS and runs[0]["details"] is None
    studies = [study_status(tmp_path / "studies" / name) for name in ("crashed", "live", "old")]
    match_runs(studies, runs, tmp_path)
    crashed, live, old = studies
    assert (crashed["run_id"], crashed["run_status"], crashed["status"]) == ("20", "finished:failed", "interrupted")
    assert crashed["error"] == "ServerApp process exited with code 137"
    assert (live["run_id"], live["status"], live["error"]) == ("30", "running", None)
    assert (old["run_id"], old["status"], old["error"]) == ("10", "failed", "Exception: round 1 failed")


def test_collect_status_with_an_answering_superlink(consortium: tuple[Path, Path, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """The SuperLink part with Flower's CLI replaced by its recorded JSON answers."""
    _, state, _ = consortium
    from fedneuro.deploy import runtime

    calls: list[list[str]] = []

    def fake_flwr(connection, args, *, timeout_s=120.0):  # type: ignore[no-untyped-def]
        calls.append(args)
        if args[0] == "supernode":
            return {"success": True, "nodes": [{"node-id": "1111", "status": "online", "online-at": "2025-01-01 10:00:00Z",
                                                "online-elapsed": 3.0}]}
        return {"success": True, "runs": []}

    monkeypatch.setattr(runtime, "flwr", fake_flwr)
    monkeypatch.setattr(status_module, "_reachable", lambda address, timeout_s: None)
    report = collect_status(state, sites=SITES, connection=runtime.ControlConnection(address="127.0.0.1:1"), runs_limit=5)
    assert sorted(calls) == [["ls", "fedneuro", "--limit", "5"], ["supernode", "ls", "fedneuro"]]
    assert report["superlink"] == {"address": "127.0.0.1:1", "reachable": True, "error": None}
    assert [(s["site"], s["status"]) for s in report["sites"]] == [
        ("hospital-a", "online"), ("hospital-b", "not listed"), ("hospital-c", "not listed")]
    # No active run on the SuperLink: a summary still saying "running" was interrupted.
    assert {s["study_id"]: s["status"] for s in report["studies"]}["eeg-running"] == "interrupted"


# --- structured logs ---------------------------------------------------------------------------

def _json_lines(handler_stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in handler_stream.getvalue().splitlines()]


def test_json_formatter_fields_extra_and_context() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("fedneuro.test-json-logs")
    handler = make_handler("json", stream)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        logger.info("round %d/%d: balanced accuracy %.3f", 2, 5, 0.61, extra={"study": "eeg", "round": 2})
        with log_context(study="eeg", site="hospital-a"):
            logger.warning("ε=%.2f", 1.5)
            with log_context(round=3):
                logger.info("nested", extra={"site": "hospital-b"})  # the call's own field wins
        logger.info("plain")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    lines = _json_lines(stream)
    assert lines[0]["message"] == "round 2/5: balanced accuracy 0.610"
    assert (lines[0]["level"], lines[0]["logger"], lines[0]["study"], lines[0]["round"]) == ("INFO", "fedneuro.test-json-logs", "eeg", 2)
    assert "site" not in lines[0]
    assert datetime.fromisoformat(lines[0]["time"].replace("Z", "+00:00")).tzinfo is not None
    assert (lines[1]["level"], lines[1]["message"], lines[1]["study"], lines[1]["site"]) == ("WARNING", "ε=1.50", "eeg", "hospital-a")
    assert "round" not in lines[1]
    assert (lines[2]["site"], lines[2]["round"], lines[2]["study"]) == ("hospital-b", 3, "eeg")
    assert set(lines[3]) == {"time", "level", "logger", "message"}
    assert lines[4]["level"] == "ERROR" and "ValueError: boom" in lines[4]["exception"]


def test_json_formatter_one_line_per_record() -> None:
    record = logging.LogRecord("fedneuro.x", logging.INFO, __file__, 1, "two\nlines", None, None)
    record.study = {"not": "a scalar"}
    text = JsonFormatter().format(record)
    assert "\n" not in text and json.loads(text)["message"] == "two\nlines"
    assert json.loads(text)["study"] == "{'not': 'a scalar'}"


def test_text_format_shows_the_context() -> None:
    stream = io.StringIO()
    handler = make_handler("text", stream)
    record = logging.LogRecord("fedneuro.server", logging.INFO, __file__, 1, "round %d done", (1,), None)
    record.study, record.round = "eeg", 1
    handler.handle(record)
    assert stream.getvalue().rstrip().endswith("INFO fedneuro.server: round 1 done [study=eeg round=1]")
    with pytest.raises(ValueError, match="unknown log format"):
        make_handler("xml")


def test_setup_logging_json(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        setup_logging(fmt="json")
        logging.getLogger("fedneuro.server").info("hello %s", "world", extra={"study": "eeg"})
        logging.getLogger("fedneuro.server").debug("hidden")
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert (line["message"], line["study"], line["level"]) == ("hello world", "eeg", "INFO")
    finally:
        setup_logging()


def test_configure_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("fedneuro")
    before = (list(logger.handlers), logger.level, logger.propagate)
    monkeypatch.delenv(LOG_FORMAT_ENV, raising=False)
    assert configure_from_env() is False and logger.handlers == before[0]  # simulation: untouched
    monkeypatch.setenv(LOG_FORMAT_ENV, "json")
    try:
        assert configure_from_env() is True and configure_from_env() is True
        added = [h for h in logger.handlers if h not in before[0]]
        assert len(added) == 1 and isinstance(added[0].formatter, JsonFormatter)  # once, not per call
        assert logger.propagate is False
    finally:
        logger.handlers[:] = before[0]
        logger.setLevel(before[1])
        logger.propagate = before[2]
