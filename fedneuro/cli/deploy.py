"""`fedneuro server start|resume`, `fedneuro site start`, `fedneuro run`: the consortium on
Flower's deployment engine (a SuperLink at the coordinator, one SuperNode per site)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from fedneuro.cli.common import (
    JSON_OPTION,
    LOG_FORMAT_OPTION,
    console,
    fail,
    out_console,
    print_json,
    setup_logging,
    user_errors,
)

if TYPE_CHECKING:
    from fedneuro.deploy.provision import Kit
    from fedneuro.deploy.runtime import ControlConnection

server_app = typer.Typer(help="The coordinator's SuperLink.", no_args_is_help=True)
site_app = typer.Typer(help="A site's SuperNode.", no_args_is_help=True)

KIT_OPTION = typer.Option(..., "--kit", help="this party's kit folder, from `fedneuro provision`")
INSECURE_OPTION = typer.Option(
    False, "--insecure", help="plaintext, no node authentication: only for a closed test network"
)
_WILDCARD_DIAL = {"0.0.0.0": "127.0.0.1", "::": "::1"}
logger = logging.getLogger("fedneuro.deploy")


def _say(message: str, log_format: str) -> None:
    """A progress line: on the console (text), or a log record (json, so stderr stays JSON lines)."""
    if log_format == "json":
        logger.info(message)
    else:
        console.print(message)


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _host(address: str) -> str:
    return address.rsplit(":", 1)[0].strip("[]")


@dataclass(frozen=True)
class _KitIn:
    """A checked kit and the folder its relative file names are in."""

    kit: Kit
    folder: Path

    def file(self, relative: str) -> Path:
        return self.folder / relative


def _local_control(kit: _KitIn, insecure: bool, superlink: str | None) -> ControlConnection:
    """The Control API as seen from the coordinator's own machine (a wildcard listen → loopback)."""
    from fedneuro.deploy.consortium import format_address
    from fedneuro.deploy.runtime import ControlConnection

    control = kit.kit.control_address or kit.kit.superlink_address
    if superlink is None:
        listen = kit.kit.listen_host or _host(control)
        superlink = format_address(_WILDCARD_DIAL.get(listen, listen), _port(control))
    return ControlConnection(address=superlink, root_certificates=None if insecure else kit.file(kit.kit.ca.file))


def _load(kit_dir: Path, role: str) -> _KitIn:
    from fedneuro.deploy.provision import KitError, load_kit

    with user_errors(KitError):
        kit = load_kit(kit_dir)
    if kit.role != role:
        fail(f"{kit_dir} is a {kit.role} kit; this command needs the {role} kit")
    return _KitIn(kit, Path(kit_dir).resolve())


def _run_foreground(cmd: list[str], env: dict[str, str], *, what: str, log_format: str = "text") -> int:
    """Run a Flower process in the foreground; pass SIGINT/SIGTERM on so it shuts down cleanly."""
    process = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)

    def forward(signum: int, _frame: object) -> None:
        process.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return process.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        _say(f"{what} stopped (exit code {process.returncode})", log_format)


@server_app.command("start")
def server_start(
    kit_dir: Path = KIT_OPTION,
    state: Path = typer.Option(..., "--state", help="writable folder: SuperLink database, one folder per study"),
    insecure: bool = INSECURE_OPTION,
    port: int | None = typer.Option(None, "--port", help="override the kit's SuperLink port"),
    ready_timeout_s: float = typer.Option(60.0, "--ready-timeout", help="seconds to wait for the SuperLink"),
    log_format: str = LOG_FORMAT_OPTION,
) -> None:
    """Start the coordinator's SuperLink (TLS and SuperNode authentication on unless --insecure)
    and register every site's node key from the coordinator kit. Runs in the foreground."""
    from fedneuro.atomic import write_text_atomic
    from fedneuro.deploy.runtime import (
        DeploymentError,
        ServerTLS,
        flower_env,
        register_supernode,
        superlink_command,
        wait_for_port,
    )
    from fedneuro.deploy.guarded_apps import install_guards
    from fedneuro.cli.status import record_nodes
    from fedneuro.federation.launch import COORDINATOR_ENV, CoordinatorConfig
    from fedneuro.logs import LOG_FORMAT_ENV

    setup_logging(fmt=log_format)
    kit = _load(kit_dir, "coordinator")
    state = state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    coordinator = CoordinatorConfig(state_dir=state, sites=sorted(kit.kit.sites), signing_key=kit.file(kit.kit.signing.private))
    write_text_atomic(state / "coordinator.json", coordinator.model_dump_json(indent=2))
    listen = kit.kit.listen_host or "127.0.0.1"
    port = port or _port(kit.kit.superlink_address)
    server = kit.kit.server
    assert server is not None  # a coordinator kit always has one (Kit validates roles)
    tls = None if insecure else ServerTLS(ca_cert=kit.file(kit.kit.ca.file), cert=kit.file(server.cert), key=kit.file(server.key))
    cmd = superlink_command(host=listen, port=port, database=state / "superlink.db", tls=tls, node_auth=not insecure)
    # Submitted apps run only the installed ServerApp (a submitted app may carry code).
    env = flower_env({COORDINATOR_ENV: str(state / "coordinator.json"), LOG_FORMAT_ENV: log_format},
                     guards=install_guards(state / "bin"))
    if insecure:
        if log_format == "json":
            logger.warning("--insecure: plaintext and no SuperNode authentication")
        else:
            console.print("[bold yellow]warning:[/] --insecure: plaintext and no SuperNode authentication")
    process = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
    try:
        dial = _WILDCARD_DIAL.get(listen, listen)
        with user_errors(DeploymentError):
            wait_for_port(dial, port, timeout_s=ready_timeout_s, alive=lambda: process.poll() is None)
            if not insecure:
                connection = _local_control(kit, insecure, None)
                node_ids: dict[str, str] = {}
                for name, entry in sorted(kit.kit.sites.items()):
                    node_ids[name] = register_supernode(connection, kit.file(entry.node.file), name=name)
                    _say(f"registered site {name} (node key {entry.node.fingerprint[:23]}…)", log_format)
                # Node id -> site, for `fedneuro status` (an already registered key keeps its recorded id).
                record_nodes(state, node_ids)
        _say(f"SuperLink of consortium {kit.kit.consortium} listening on {listen}:{port} "
             f"({'plaintext' if insecure else 'TLS + SuperNode authentication'}); state in {state}", log_format)
    except BaseException:
        process.terminate()
        process.wait(timeout=10)
        raise

    def forward(signum: int, _frame: object) -> None:
        process.send_signal(signum)

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, forward)
    raise typer.Exit(process.wait())


@site_app.command("start")
def site_start(
    kit_dir: Path = KIT_OPTION,
    config: Path = typer.Option(..., "--config", help="the site's configuration (TOML): name, data, state, policy"),
    clientappio_port: int = typer.Option(9094, "--clientappio-port", help="local port of the SuperNode's app API"),
    insecure: bool = INSECURE_OPTION,
    superlink: str | None = typer.Option(None, "--superlink", help="override the kit's SuperLink address"),
    log_format: str = LOG_FORMAT_OPTION,
) -> None:
    """Start this site's SuperNode: it dials the coordinator (outbound only) and runs the
    fedneuro installed here, under this site's configuration and policy. Foreground."""
    from fedneuro.deploy.guarded_apps import install_guards
    from fedneuro.deploy.runtime import flower_env, supernode_command
    from fedneuro.federation.launch import LaunchError, load_site_config
    from fedneuro.logs import LOG_FORMAT_ENV

    setup_logging(fmt=log_format)
    kit = _load(kit_dir, "site")
    with user_errors(LaunchError):
        site = load_site_config(config)
    if site.name != kit.kit.site:
        fail(f"{config}: name {site.name!r} differs from the kit's site {kit.kit.site!r}; use this site's own kit")
    node = kit.kit.node
    assert node is not None  # a site kit always has one (Kit validates roles)
    if not site.bids_root.is_dir():
        fail(f"{config}: bids_root {site.bids_root} is not a folder")
    site.state_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(site.state_dir, os.W_OK):
        fail(f"{config}: state_dir {site.state_dir} is not writable")
    cmd = supernode_command(
        superlink=superlink or kit.kit.superlink_address,
        site_config=config.resolve(),
        clientappio_port=clientappio_port,
        root_certificates=None if insecure else kit.file(kit.kit.ca.file),
        node_private_key=None if insecure else kit.file(node.private),
    )
    _say(f"site {site.name}: SuperNode dialling {superlink or kit.kit.superlink_address}"
         f"{' (plaintext)' if insecure else ' over TLS with node authentication'}", log_format)
    # Submitted apps run only the installed ClientApp and its governance gate (a submitted
    # Flower app may carry code of its own, which Flower would otherwise run here).
    # The ClientApp processes log in the same format (fedneuro.logs.configure_from_env).
    env = flower_env({LOG_FORMAT_ENV: log_format}, guards=install_guards(site.state_dir / "bin"))
    raise typer.Exit(_run_foreground(cmd, env, what=f"SuperNode of {site.name}", log_format=log_format))


def run(
    study_path: Path = typer.Argument(..., help="the study file (TOML)"),
    kit_dir: Path = KIT_OPTION,
    superlink: str | None = typer.Option(None, "--superlink", help="Control API address (default: the local SuperLink)"),
    insecure: bool = INSECURE_OPTION,
    resume: bool = typer.Option(False, "--resume", help="continue the study after its last completed round"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="follow the run until it finishes"),
    timeout_s: float = typer.Option(3600.0, "--timeout", help="seconds to follow the run"),
    json_output: bool = JSON_OPTION,
) -> None:
    """Submit a study to the consortium's SuperLink (checked here first) and follow it."""
    from fedneuro.deploy.runtime import DeploymentError, RunStatus, submit_study, wait_for_run
    from fedneuro.governance.study_signature import signature_path_for
    from fedneuro.study import StudyFileError, load_study

    setup_logging()
    with user_errors(StudyFileError):
        study = load_study(study_path)
    kit = _load(kit_dir, "coordinator")
    connection = _local_control(kit, insecure, superlink)
    with user_errors(DeploymentError):
        signature = signature_path_for(study_path)
        run_id = submit_study(connection, study_path.read_text(encoding="utf-8"), resume=resume,
                              study_signature=signature.read_text(encoding="utf-8") if signature.is_file() else "")
        console.print(f"submitted study {study.study.id} as run {run_id}{' (resume)' if resume else ''}")
        status = RunStatus(run_id=run_id, status="submitted")
        if wait:
            last = [""]

            def show(s: RunStatus) -> None:
                if s.status != last[0]:
                    console.print(f"run {run_id}: {s.status} ({s.elapsed_s:.0f} s)")
                    last[0] = s.status

            status = wait_for_run(connection, run_id, timeout_s=timeout_s, on_poll=show)
    result = {"run_id": run_id, "study_id": study.study.id, "status": status.status, "details": status.details,
              "elapsed_s": status.elapsed_s, "resume": resume,
              "results": f"studies/{study.study.id}/ in the coordinator's state folder"}
    if json_output:
        print_json(result)
    else:
        out_console.print(f"run {run_id} of study {study.study.id}: {status.status}"
                          + (f" — {status.details}" if status.details and status.details != "N/A" else ""))
    if wait and not status.succeeded:
        raise typer.Exit(1)


@server_app.command("resume")
def server_resume(
    study_path: Path = typer.Argument(..., help="the study file (TOML) of the interrupted study"),
    kit_dir: Path = KIT_OPTION,
    superlink: str | None = typer.Option(None, "--superlink", help="Control API address (default: the local SuperLink)"),
    insecure: bool = INSECURE_OPTION,
    wait: bool = typer.Option(True, "--wait/--no-wait", help="follow the run until it finishes"),
    timeout_s: float = typer.Option(3600.0, "--timeout", help="seconds to follow the run"),
    json_output: bool = JSON_OPTION,
) -> None:
    """Continue a study after its last completed round (from the coordinator's checkpoint)."""
    run(study_path, kit_dir, superlink, insecure, True, wait, timeout_s, json_output)
