"""A consortium on Flower's deployment engine for end-to-end tests: provisioned kits, a signed
study, sites that imported consents and approved the plan (the operators' own commands), and
the SuperLink and SuperNodes as separate processes on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from fedneuro.governance.site import derive_seed

FEDNEURO = [sys.executable, "-m", "fedneuro.cli.main"]
# One thread per process: several sites on two shared cores would otherwise oversubscribe.
ENV = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port not handed out before by this process (the OS may offer a port
    again once its probe socket is closed, before the process it was meant for binds it)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def cli(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(FEDNEURO + args, capture_output=True, text=True, timeout=timeout, env=ENV, stdin=subprocess.DEVNULL)


class Process:
    """A long-running `fedneuro` command (own process group) whose output is collected."""

    def __init__(self, args: list[str]) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(FEDNEURO + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=ENV, stdin=subprocess.DEVNULL, start_new_session=True)
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not seen within {timeout_s} s; output:\n{''.join(self.lines)[-3000:]}")

    def stop(self, signal: int = 15) -> None:
        """Stop the command and everything it started (SuperExec, app processes)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=20)


def tiny_study(tmp_path: Path, *, rounds: int, replace: dict[str, str] | None = None) -> Path:
    """The demo study with the tiny backbone, and cohort floors 12-participant sites can meet."""
    text = (Path(__file__).parents[1] / "fedneuro" / "studies" / "demo.toml").read_text()
    text = text.replace('backbone = "biot-small"', 'backbone = "biot-tiny"').replace("rounds = 5", f"rounds = {rounds}")
    text = text.replace("max_weight = 10000", "max_weight = 1000")
    text = text.replace("min_cohort = 20", "min_cohort = 3").replace("min_participants_per_metric = 10", "min_participants_per_metric = 2")
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    assert "enabled = true" in text  # the demo study runs with secure aggregation
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def provision(tmp_path: Path, sites: list[str]) -> tuple[Path, int]:
    port = free_port()
    (tmp_path / "consortium.toml").write_text(
        f'[consortium]\nname = "e2e"\n\n[coordinator]\nhost = "127.0.0.1"\nport = {port}\nlisten = "127.0.0.1"\n\n'
        + "".join(f'[[sites]]\nname = "{name}"\n\n' for name in sites)
    )
    kits = tmp_path / "kits"
    done = cli(["provision", str(tmp_path / "consortium.toml"), "--out", str(kits), "--json"], 120)
    assert done.returncode == 0, done.stderr
    return kits, port


def sign_study(study_path: Path, kits: Path) -> None:
    done = cli(["study", "sign", str(study_path), "--key", str(kits / "coordinator" / "signing.key")], 60)
    assert done.returncode == 0, done.stderr


def prepare_site(tmp_path: Path, kits: Path, name: str, bids_root: Path, study_path: Path, *, study_seed: int) -> Path:
    """What a site operator does: a site.toml, consents imported, the plan approved."""
    kit = kits / "sites" / name
    state = tmp_path / "site-state" / name
    config = tmp_path / f"{name}.toml"
    config.write_text(
        f'name = "{name}"\nbids_root = "{bids_root}"\nstate_dir = "{state}"\nsigning_key = "{kit / "signing.key"}"\n'
        f"noise_seed = {derive_seed(study_seed, name, 'simulated-noise')}\n\n"
        f'[policy]\naccepted_purposes = ["HMB"]\ntrusted_coordinator_keys = ["{kit / "coordinator.signing.pub"}"]\n'
    )
    for args in (["consent", "import", str(bids_root / "participants.tsv"), "--state-dir", str(state)],
                 ["site", "approve", str(study_path), "--config", str(config)]):
        done = cli(args, 120)
        assert done.returncode == 0, f"{args[:2]}: {done.stdout}{done.stderr}"
    return config


def start_server(tmp_path: Path, kits: Path) -> Process:
    server = Process(["server", "start", "--kit", str(kits / "coordinator"), "--state", str(tmp_path / "coordinator")])
    server.wait_for("listening on", 90)
    return server


def start_site(kits: Path, name: str, config: Path) -> Process:
    return Process(["site", "start", "--kit", str(kits / "sites" / name), "--config", str(config),
                    "--clientappio-port", str(free_port())])
