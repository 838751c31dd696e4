"""`fedneuro status`: the consortium at a glance, from the coordinator's machine.

Sites (``flwr supernode ls``: online/offline since when, node ids named after the sites
through ``STATE/nodes.json``, which ``server start`` writes when it registers the node keys),
runs (``flwr ls``) and every study folder in ``STATE/studies`` (``summary.json``: status,
rounds, last accuracy, per-site ε, the latest round's failures; a failed study's error from
the coordinator's audit log). Without a reachable SuperLink it says so and shows the folders.
"""

from __future__ import annotations

import json
import socket
import tomllib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import typer

from fedneuro.atomic import write_text_atomic

NODES_FILE = "nodes.json"
NOT_AVAILABLE = "N/A"  # how Flower's CLI writes a missing timestamp
SCHEMA = 1
# A study whose summary says "running" is stale when its run (matched by time) has finished.
_MATCH_SLACK = timedelta(seconds=3)  # Flower's run timestamps have whole seconds


# --- STATE/nodes.json: site -> Flower node id ------------------------------------------------


def read_nodes(state: Path) -> dict[str, str]:
    """The recorded node id of each site (``{}`` when none is recorded or the file is unreadable)."""
    try:
        data = json.loads((Path(state) / NODES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    sites = data.get("sites") if isinstance(data, dict) else None
    if not isinstance(sites, dict):
        return {}
    return {str(name): str(node) for name, node in sites.items() if isinstance(node, (str, int)) and str(node)}


def record_nodes(state: Path, node_ids: Mapping[str, str]) -> dict[str, str]:
    """Record the node ids ``flwr supernode register`` returned; an empty id (the key was
    registered before) keeps the id recorded then. Returns the merged map."""
    merged = {**read_nodes(state), **{name: str(node) for name, node in node_ids.items() if node}}
    write_text_atomic(Path(state) / NODES_FILE,
                      json.dumps({"schema": SCHEMA, "sites": dict(sorted(merged.items()))}, indent=2) + "\n")
    return merged


# --- study folders ------------------------------------------------------------------------------


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        return None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z") if moment is not None else None


def _rounds_total(study_toml: Path) -> int | None:
    """``[federation] rounds`` of the study text the coordinator ran (its default if unset)."""
    try:
        data = tomllib.loads(study_toml.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    rounds = data.get("federation", {}).get("rounds") if isinstance(data.get("federation", {}), dict) else None
    if rounds is None:
        from fedneuro.federation.spec import FederationSpec  # noqa: PLC0415

        return int(FederationSpec.model_fields["rounds"].default)
    return rounds if isinstance(rounds, int) else None


def _last_study_error(audit_log: Path, max_bytes: int = 65536) -> str | None:
    """The error of the study's last run if it failed (``study-failed`` in the coordinator's
    audit log, unless a later start or completion follows it)."""
    try:
        with audit_log.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            tail = handle.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(tail):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        event = entry.get("event") if isinstance(entry, dict) else None
        if event == "study-failed":
            data = entry.get("data") or {}
            return (str(data.get("error") or "") or "failed") if isinstance(data, dict) else "failed"
        if event in ("study-started", "study-completed"):
            return None
    return None


def study_status(study_dir: Path) -> dict[str, Any]:
    """One study folder as ``fedneuro status`` reports it (every key always present)."""
    summary_path = study_dir / "summary.json"
    entry: dict[str, Any] = {
        "study_id": study_dir.name,
        "status": "no summary yet",
        "rounds_completed": 0,
        "rounds_total": _rounds_total(study_dir / "study.toml"),
        "last_round": None,
        "balanced_accuracy": None,
        "participant_balanced_accuracy": None,
        "epsilon": {},
        "failures": [],
        "error": None,
        "run_id": None,
        "run_status": None,
        "updated_at": _iso(_mtime(summary_path) or _mtime(study_dir / "study.toml")),
        "wall_time_s": None,
        "tensorboard": (study_dir / "tensorboard").is_dir(),
    }
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        summary = None
    except (OSError, ValueError) as error:
        entry["status"] = "unreadable"
        entry["error"] = f"summary.json: {error}"
        return entry
    if isinstance(summary, dict):
        rounds = [r for r in summary.get("rounds") or [] if isinstance(r, dict)]
        last = rounds[-1] if rounds else None
        entry.update({
            "study_id": str(summary.get("study_id") or study_dir.name),
            "status": str(summary.get("status") or "unknown"),
            "rounds_completed": len(rounds),
            "last_round": last.get("round") if last else None,
            "balanced_accuracy": last.get("balanced_accuracy") if last else None,
            "participant_balanced_accuracy": last.get("participant_balanced_accuracy") if last else None,
            # ε is cumulative at each site: the summary keeps each site's latest.
            "epsilon": {name: site.get("epsilon") for name, site in sorted((summary.get("sites") or {}).items())
                        if isinstance(site, dict) and site.get("epsilon") is not None},
            "failures": [str(f) for f in (last.get("failures") or [])] if last else [],
            "wall_time_s": summary.get("wall_time_s"),
        })
    if entry["status"] in ("failed", "running", "no summary yet"):
        entry["error"] = _last_study_error(study_dir / "coordinator.audit.jsonl")
    return entry


def study_folders(state: Path) -> list[Path]:
    root = Path(state) / "studies"
    return sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name) if root.is_dir() else []


# --- the SuperLink ----------------------------------------------------------------------------


def _when(text: object) -> datetime | None:
    """A Flower CLI timestamp (``2025-01-31 12:00:00Z`` or ``N/A``) as a UTC datetime."""
    if not isinstance(text, str) or not text or text == NOT_AVAILABLE:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _text_or_none(value: object) -> str | None:
    return None if value in (None, "", NOT_AVAILABLE) else str(value)


def _timestamp(value: object) -> str | None:
    """A Flower CLI timestamp in this report's ISO 8601 form (``2025-01-31T12:00:00Z``)."""
    return _iso(_when(value)) or _text_or_none(value)


_NODE_SINCE = {"online": "online-at", "offline": "offline-at", "registered": "created-at",
               "unregistered": "deleted-at"}


def site_rows(sites: list[str], node_ids: Mapping[str, str], nodes: list[dict] | None) -> list[dict[str, Any]]:
    """Each consortium site with its node's state, then nodes no recorded site owns.
    ``nodes`` None: the SuperLink was not reached (status ``unknown``)."""
    by_id = {str(n.get("node-id")): n for n in nodes or []}
    rows: list[dict[str, Any]] = []

    def row(site: str | None, node_id: str | None, node: dict | None) -> dict[str, Any]:
        if node is None:
            # No id recorded: registered before nodes.json existed, or --insecure (nothing registers).
            status = "unknown" if nodes is None else ("no node id" if node_id is None else "not listed")
            return {"site": site, "node_id": node_id, "status": status, "since": None, "online_s": None}
        status = str(node.get("status") or "unknown")
        elapsed = node.get("online-elapsed")
        return {"site": site, "node_id": node_id, "status": status,
                "since": _timestamp(node.get(_NODE_SINCE.get(status, "created-at"))),
                "online_s": float(elapsed) if status == "online" and isinstance(elapsed, (int, float)) else None}

    for site in sorted(set(sites) | set(node_ids)):
        node_id = node_ids.get(site)
        rows.append(row(site, node_id, by_id.pop(node_id, None) if node_id is not None else None))
    for node_id, node in sorted(by_id.items()):
        rows.append(row(None, node_id, node))
    return rows


def run_rows(runs: list[dict]) -> list[dict[str, Any]]:
    return [{
        "run_id": str(run.get("run-id", "")),
        "status": str(run.get("status", "")),
        "details": _text_or_none(run.get("status-details")),
        "elapsed_s": float(run.get("elapsed") or 0.0),
        "pending_at": _timestamp(run.get("pending-at")),
        "running_at": _timestamp(run.get("running-at")),
        "finished_at": _timestamp(run.get("finished-at")),
    } for run in runs]


def match_runs(studies: list[dict[str, Any]], runs: list[dict[str, Any]], state: Path) -> None:
    """Name the run that last launched each study, by time: the ServerApp writes the study's
    ``study.toml`` when a run starts, within that run's lifetime (Flower's run list says
    nothing about which study a run carries). A study whose summary still says ``running``
    while that run has finished (or no run is active at all) was interrupted."""
    active = [r for r in runs if not r["status"].startswith("finished")]
    for study in studies:
        launched = _mtime(Path(state) / "studies" / study["study_id"] / "study.toml")
        candidates = []
        for run in runs:
            start = _when(run["running_at"]) or _when(run["pending_at"])
            end = _when(run["finished_at"])
            if launched is None or start is None:
                continue
            if start - _MATCH_SLACK <= launched and (end is None or launched <= end + _MATCH_SLACK):
                candidates.append((start, run))
        if candidates:
            run = max(candidates, key=lambda c: c[0])[1]
            study["run_id"], study["run_status"] = run["run_id"], run["status"]
            if run["status"] != "finished:completed" and run["status"].startswith("finished") and not study["error"]:
                study["error"] = run["details"]
        finished = study["run_status"] is not None and study["run_status"].startswith("finished")
        if study["status"] == "running" and (finished or (study["run_status"] is None and not active)):
            study["status"] = "interrupted"


def _reachable(address: str, timeout_s: float) -> str | None:
    """None if something accepts TCP connections at ``address``, else why not."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return None
    except (OSError, ValueError) as error:
        return f"nothing answers at {address} ({error.strerror if isinstance(error, OSError) and error.strerror else error})"


def collect_status(
    state: Path,
    *,
    sites: list[str],
    connection: Any | None,
    runs_limit: int = 20,
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    """Everything ``fedneuro status`` shows, JSON-ready, with stable keys. ``connection``: a
    ``ControlConnection`` to the SuperLink, or None to look at the state folder only."""
    from fedneuro.deploy.runtime import CONNECTION_NAME, DeploymentError, flwr  # noqa: PLC0415

    superlink: dict[str, Any] = {"address": connection.address if connection is not None else None,
                                 "reachable": False, "error": None}
    nodes: list[dict] | None = None
    runs: list[dict[str, Any]] = []
    if connection is None:
        superlink["error"] = "not asked (no SuperLink address)"
    elif (why := _reachable(connection.address, min(timeout_s, 3.0))) is not None:
        superlink["error"] = why
    else:
        with ThreadPoolExecutor(max_workers=2) as pool:
            node_reply = pool.submit(flwr, connection, ["supernode", "ls", CONNECTION_NAME], timeout_s=timeout_s)
            run_reply = pool.submit(flwr, connection, ["ls", CONNECTION_NAME, "--limit", str(runs_limit)],
                                    timeout_s=timeout_s)
            errors = []
            try:
                nodes = list(node_reply.result().get("nodes", []))
            except DeploymentError as error:
                errors.append(str(error))
            try:
                runs = run_rows(list(run_reply.result().get("runs", [])))
            except DeploymentError as error:
                errors.append(str(error))
        superlink["reachable"] = nodes is not None or bool(runs) or not errors
        superlink["error"] = "; ".join(errors) or None
    studies = [study_status(folder) for folder in study_folders(state)]
    if superlink["reachable"]:
        match_runs(studies, runs, state)
    return {
        "schema": SCHEMA,
        "state": str(state),
        "checked_at": _iso(datetime.now(UTC)),
        "superlink": superlink,
        "sites": site_rows(sites, read_nodes(state), nodes),
        "runs": runs,
        "studies": studies,
    }


# --- the command ------------------------------------------------------------------------------


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


def _number(value: object, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


_STYLE = {"online": "green", "offline": "yellow", "completed": "green", "finished:completed": "green",
          "running": "blue", "failed": "red", "finished:failed": "red", "interrupted": "red",
          "finished:stopped": "yellow", "unknown": "bright_black", "no node id": "bright_black", "not listed": "yellow"}


def _styled(status: str) -> str:
    from rich.markup import escape  # noqa: PLC0415

    style = _STYLE.get(status, "")
    return f"[{style}]{escape(status)}[/]" if style else escape(status)


def render(report: dict[str, Any]) -> None:
    from rich.markup import escape  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from fedneuro.cli.common import out_console  # noqa: PLC0415

    superlink = report["superlink"]
    if superlink["reachable"]:
        out_console.print(f"SuperLink {superlink['address']}: [green]reachable[/]"
                          + (f" ([yellow]{escape(superlink['error'])}[/])" if superlink["error"] else ""))
    else:
        out_console.print(f"SuperLink {superlink['address'] or ''}: [red]not reachable[/] — "
                          f"{escape(str(superlink['error']))}; showing the state folder only")
    sites = Table(title="Sites", title_justify="left")
    for column in ("site", "node id", "status", "since", "online for"):
        sites.add_column(column, no_wrap=column in ("node id", "since"))
    for row in report["sites"]:
        sites.add_row(escape(row["site"] or "(unknown node)"), row["node_id"] or "–", _styled(row["status"]),
                      row["since"] or "", _duration(row["online_s"]))
    out_console.print(sites)
    if superlink["reachable"]:
        runs = Table(title="Runs", title_justify="left")
        for column in ("run id", "status", "elapsed", "details"):
            runs.add_column(column, no_wrap=column == "run id")
        for run in report["runs"]:
            runs.add_row(run["run_id"], _styled(run["status"]), _duration(run["elapsed_s"]), escape(run["details"] or ""))
        out_console.print(runs if report["runs"] else "Runs: none")
    if not report["studies"]:
        out_console.print(f"Studies: none in {escape(report['state'])}/studies")
        return
    studies = Table(title="Studies", title_justify="left")
    for column in ("study", "status", "rounds", "balanced acc.", "ε per site", "run", "updated"):
        studies.add_column(column)
    for study in report["studies"]:
        total = study["rounds_total"]
        studies.add_row(
            escape(study["study_id"]), _styled(study["status"]),
            f"{study['rounds_completed']}/{total if total is not None else '?'}",
            _number(study["balanced_accuracy"]),
            escape(", ".join(f"{n} {_number(e, 2)}" for n, e in study["epsilon"].items())) or "–",
            study["run_id"] or "–", study["updated_at"] or "",
        )
    out_console.print(studies)
    for study in report["studies"]:
        problems = ([f"round {study['last_round']}: {f}" for f in study["failures"]]
                    + ([f"error: {study['error']}"] if study["error"] else []))
        if problems:
            out_console.print(f"[bold]{escape(study['study_id'])}[/]:")
            for problem in problems:
                out_console.print(f"  [red]•[/] {escape(problem)}", highlight=False)


def status(
    kit_dir: Path = typer.Option(..., "--kit", help="the coordinator kit (from `fedneuro provision`)"),
    state: Path = typer.Option(..., "--state", help="the coordinator's state folder (`server start --state`)"),
    insecure: bool = typer.Option(False, "--insecure", help="the SuperLink runs plaintext (`server start --insecure`)"),
    superlink: str | None = typer.Option(None, "--superlink", help="Control API address (default: the local SuperLink)"),
    runs_limit: int = typer.Option(20, "--runs", min=1, help="how many of the latest runs to list"),
    timeout_s: float = typer.Option(30.0, "--timeout", help="seconds to wait for each SuperLink answer"),
    json_output: bool = typer.Option(False, "--json", help="print machine-readable JSON on stdout"),
) -> None:
    """Sites (online/offline), runs and every study's progress: rounds, accuracy, ε per site,
    the latest failures. Works without a reachable SuperLink (then shows the study folders)."""
    from rich.markup import escape  # noqa: PLC0415

    from fedneuro.cli.common import console, fail, print_json, setup_logging  # noqa: PLC0415
    from fedneuro.cli.deploy import _load, _local_control  # noqa: PLC0415

    setup_logging()
    kit = _load(kit_dir, "coordinator")
    if state.exists() and not state.is_dir():
        fail(f"--state {state} is not a folder; give the folder `fedneuro server start --state` uses")
    if not state.exists():
        console.print(f"[bold yellow]warning:[/] --state {escape(str(state))} does not exist (yet): no node ids, no "
                      "studies; give the folder `fedneuro server start --state` uses")
    report = collect_status(state, sites=sorted(kit.kit.sites), connection=_local_control(kit, insecure, superlink),
                            runs_limit=runs_limit, timeout_s=timeout_s)
    if json_output:
        print_json(report)
    else:
        render(report)
