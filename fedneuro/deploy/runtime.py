"""Flower's deployment engine for a consortium: SuperLink and SuperNode command lines, and run
submission and monitoring through Flower's own CLI (``flwr run``, ``flwr ls``, ``flwr supernode``).

This is the edge where processes, files and the network live. Flower's CLI is used rather than
its internal Python modules because the CLI is its stable, documented interface.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from fedneuro import __version__
from fedneuro.atomic import write_text_atomic

CONNECTION_NAME = "fedneuro"
TERMINAL_PREFIX = "finished:"


class DeploymentError(RuntimeError):
    """A SuperLink, SuperNode or run that could not be started, reached or completed."""


def flower_bin(name: str) -> str:
    """A Flower executable from this interpreter's environment (the SuperLink also starts
    ``flower-superexec`` by name, so that folder must be first on PATH too)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def flower_env(extra: dict[str, str] | None = None, *, guards: Path | None = None) -> dict[str, str]:
    """The environment of a SuperLink/SuperNode: this interpreter's Flower commands first on
    the PATH, preceded by ``guards`` (fedneuro.deploy.guarded_apps wrappers) when given."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    if guards is not None:
        env["PATH"] = str(guards) + os.pathsep + env["PATH"]
    env.update(extra or {})
    return env


class ServerTLS(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ca_cert: Path
    cert: Path
    key: Path


def superlink_command(*, host: str, port: int, database: Path, tls: ServerTLS | None, node_auth: bool) -> list[str]:
    """``flower-superlink``: TLS and SuperNode authentication unless ``tls`` is None (``--insecure``).

    Runtime dependency installation is off: sites and coordinator run the fedneuro they
    installed, never packages a submitted app asks for.
    """
    if node_auth and tls is None:
        raise DeploymentError("SuperNode authentication needs TLS; drop --insecure or node authentication")
    cmd = [flower_bin("flower-superlink"), "--host", host, "--port", str(port), "--database", str(database),
           "--disable-runtime-dependency-installation"]
    if tls is None:
        cmd.append("--insecure")
    else:
        cmd += ["--ssl-ca-certfile", str(tls.ca_cert), "--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.key)]
    if node_auth:
        cmd.append("--enable-supernode-auth")
    return cmd


def supernode_command(
    *,
    superlink: str,
    site_config: Path,
    clientappio_port: int,
    root_certificates: Path | None,
    node_private_key: Path | None,
    node_public_key: Path | None = None,
) -> list[str]:
    """``flower-supernode`` for one site; plaintext only when ``root_certificates`` is None."""
    cmd = [flower_bin("flower-supernode"), "--superlink", superlink, "--port", str(clientappio_port),
           "--node-config", f"site-config={json.dumps(str(site_config))}", "--max-wait-time", "600"]
    if root_certificates is None:
        cmd.append("--insecure")
    else:
        cmd += ["--root-certificates", str(root_certificates)]
    if node_private_key is not None:
        cmd += ["--auth-supernode-private-key", str(node_private_key)]
        if node_public_key is not None:
            cmd += ["--auth-supernode-public-key", str(node_public_key)]
    return cmd


class ControlConnection(BaseModel):
    """How ``flwr`` reaches the SuperLink's Control API."""

    model_config = ConfigDict(extra="forbid")

    address: str = Field(description="host:port of the SuperLink")
    root_certificates: Path | None = Field(default=None, description="the consortium CA; None = plaintext")

    def config_toml(self) -> str:
        lines = ["[superlink]", f'default = "{CONNECTION_NAME}"', "", f"[superlink.{CONNECTION_NAME}]",
                 f"address = {json.dumps(self.address)}"]
        if self.root_certificates is None:
            lines.append("insecure = true")
        else:
            lines.append(f"root-certificates = {json.dumps(str(Path(self.root_certificates).resolve()))}")
        return "\n".join(lines) + "\n"


def flwr(connection: ControlConnection, args: list[str], *, timeout_s: float = 120.0) -> dict:
    """Run a ``flwr`` CLI command with ``--format json`` against ``connection``; its JSON reply."""
    with tempfile.TemporaryDirectory(prefix="fedneuro-flwr-") as home:
        write_text_atomic(Path(home) / "config.toml", connection.config_toml())
        try:
            done = subprocess.run(
                [flower_bin("flwr"), *args, "--format", "json"],
                env=flower_env({"FLWR_HOME": home}), capture_output=True, text=True, timeout=timeout_s,
                stdin=subprocess.DEVNULL, check=False,
            )
        except subprocess.TimeoutExpired:
            raise DeploymentError(f"`flwr {args[0]}` got no answer from {connection.address} within {timeout_s:.0f} s") from None
    try:
        reply = json.loads(done.stdout[done.stdout.index("{"):]) if "{" in done.stdout else {}
    except json.JSONDecodeError:
        reply = {}
    if done.returncode != 0 or not reply.get("success", False):
        message = reply.get("error-message") or (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise DeploymentError(f"`flwr {' '.join(args[:2])}` against {connection.address} failed: {message if isinstance(message, str) else message[0]}")
    return reply


def write_study_app(app_dir: Path, study_text: str, *, resume: bool, study_signature: str = "") -> Path:
    """The Flower app a study is submitted as: only a pyproject naming fedneuro's apps, with the
    study file's text in its run config. No code travels: the coordinator and every site run
    the fedneuro they installed (and approved)."""
    app_dir.mkdir(parents=True, exist_ok=True)
    # JSON strings are valid TOML basic strings, so json.dumps quotes the study text safely.
    write_text_atomic(app_dir / "pyproject.toml", f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fedneuro-study"
version = "{__version__}"
description = "A fedneuro study submitted to a consortium"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "fedneuro"

[tool.flwr.app.components]
serverapp = "server.app:app"
clientapp = "client.app:app"

[tool.flwr.app.config]
launch = ""
study-toml = {json.dumps(study_text)}
study-signature = {json.dumps(study_signature)}
resume = {"true" if resume else "false"}
""")
    return app_dir


class RunStatus(BaseModel):
    run_id: str
    status: str
    details: str = ""
    elapsed_s: float = 0.0

    @property
    def finished(self) -> bool:
        return self.status.startswith(TERMINAL_PREFIX)

    @property
    def succeeded(self) -> bool:
        return self.status == TERMINAL_PREFIX + "completed"


def submit_study(connection: ControlConnection, study_text: str, *, resume: bool = False, study_signature: str = "") -> str:
    """Submit a study (and the coordinator's signature of it) to the SuperLink; Flower's run id."""
    with tempfile.TemporaryDirectory(prefix="fedneuro-app-") as tmp:
        app = write_study_app(Path(tmp) / "fedneuro-study", study_text, resume=resume, study_signature=study_signature)
        reply = flwr(connection, ["run", str(app), CONNECTION_NAME])
    return str(reply["run-id"])


def run_status(connection: ControlConnection, run_id: str) -> RunStatus:
    reply = flwr(connection, ["ls", CONNECTION_NAME, "--run-id", run_id])
    for run in reply.get("runs", []):
        if str(run.get("run-id")) == run_id:
            return RunStatus(run_id=run_id, status=str(run.get("status", "")), details=str(run.get("status-details", "")),
                             elapsed_s=float(run.get("elapsed", 0.0)))
    raise DeploymentError(f"the SuperLink at {connection.address} knows no run {run_id}")


def wait_for_run(
    connection: ControlConnection,
    run_id: str,
    *,
    timeout_s: float,
    poll_s: float = 3.0,
    on_poll: Callable[[RunStatus], None] | None = None,
) -> RunStatus:
    """Poll until the run finishes; raise after ``timeout_s`` (the run keeps going on the SuperLink)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = run_status(connection, run_id)
        if on_poll is not None:
            on_poll(status)
        if status.finished:
            return status
        if time.monotonic() >= deadline:
            raise DeploymentError(f"run {run_id} still {status.status} after {timeout_s:.0f} s; follow it with "
                                  f"`fedneuro status` or stop it with `flwr stop {run_id}`")
        time.sleep(poll_s)


def register_supernode(connection: ControlConnection, public_key: Path, *, name: str) -> str:
    """Register a site's node-authentication public key; its node id. Already registered is fine."""
    try:
        reply = flwr(connection, ["supernode", "register", str(public_key), CONNECTION_NAME, "--name", name])
    except DeploymentError as error:
        if "already" in str(error).lower():
            return ""
        raise
    return str(reply.get("node-id", ""))


def list_supernodes(connection: ControlConnection) -> list[dict]:
    return list(flwr(connection, ["supernode", "ls", CONNECTION_NAME]).get("nodes", []))


def wait_for_port(host: str, port: int, *, timeout_s: float, alive: Callable[[], bool] | None = None) -> None:
    """Until ``host:port`` accepts TCP connections; raise after ``timeout_s`` or if ``alive()`` turns False."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise DeploymentError(f"the process meant to listen on {host}:{port} exited")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.3)
    raise DeploymentError(f"nothing listens on {host}:{port} after {timeout_s:.0f} s")
