"""End to end on Flower's deployment engine: a real SuperLink and three real SuperNodes as
separate processes on loopback, TLS and SuperNode authentication on, secure aggregation on,
started with the same commands the containers use (`fedneuro server start`, `fedneuro site
start`, `fedneuro run`). Two rounds; the result matches a simulation with the same seeds."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedneuro.governance.site import derive_seed
from fedneuro.study import load_study

pytestmark = pytest.mark.slow
FEDNEURO = [sys.executable, "-m", "fedneuro.cli.main"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Process:
    """A long-running `fedneuro` command whose output is collected in the background."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(FEDNEURO + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env, stdin=subprocess.DEVNULL, start_new_session=True)
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

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)


def _cli(args: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(FEDNEURO + args, capture_output=True, text=True, timeout=timeout,
                          env=env or {**os.environ, "COLUMNS": "200"}, stdin=subprocess.DEVNULL)


def _study(tmp_path: Path) -> Path:
    text = (Path(__file__).parents[1] / "fedneuro" / "studies" / "demo.toml").read_text()
    text = text.replace('backbone = "biot-small"', 'backbone = "biot-tiny"').replace("rounds = 5", "rounds = 2")
    text = text.replace("max_weight = 10000", "max_weight = 1000")
    # 12-participant test sites: the demo's cohort floors (20 / 10) would refuse them.
    text = text.replace("min_cohort = 20", "min_cohort = 3").replace("min_participants_per_metric = 10", "min_participants_per_metric = 2")
    assert "enabled = true" in text  # the demo study runs with secure aggregation
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def test_superlink_and_three_supernodes_with_tls_node_auth_and_secure_aggregation(tmp_path: Path, data_consortium) -> None:
    port = _free_port()
    (tmp_path / "consortium.toml").write_text(
        f'[consortium]\nname = "e2e"\n\n[coordinator]\nhost = "127.0.0.1"\nport = {port}\nlisten = "127.0.0.1"\n\n'
        + "".join(f'[[sites]]\nname = "{name}"\n\n' for name in data_consortium)
    )
    kits = tmp_path / "kits"
    provisioned = _cli(["provision", str(tmp_path / "consortium.toml"), "--out", str(kits), "--json"], 120)
    assert provisioned.returncode == 0, provisioned.stderr
    study_path = _study(tmp_path)
    study = load_study(study_path)
    # The coordinator signs the study; each site imports consents, trusts the coordinator's
    # key, and approves the run plan with its own key: the commands of docs/site-operator.md.
    signed = _cli(["study", "sign", str(study_path), "--key", str(kits / "coordinator" / "signing.key")], 60)
    assert signed.returncode == 0, signed.stderr
    site_configs = {}
    for name, root in data_consortium.items():
        kit = kits / "sites" / name
        state = tmp_path / "site-state" / name
        config = tmp_path / f"{name}.toml"
        config.write_text(
            f'name = "{name}"\nbids_root = "{root}"\nstate_dir = "{state}"\nsigning_key = "{kit / "signing.key"}"\n'
            f"noise_seed = {derive_seed(study.study.seed, name, 'simulated-noise')}\n\n"
            f'[policy]\naccepted_purposes = ["HMB"]\ntrusted_coordinator_keys = ["{kit / "coordinator.signing.pub"}"]\n'
        )
        site_configs[name] = config
        for args in (["consent", "import", str(root / "participants.tsv"), "--state-dir", str(state)],
                     ["site", "approve", str(study_path), "--config", str(config)]):
            done = _cli(args, 120)
            assert done.returncode == 0, f"{args[:2]}: {done.stdout}{done.stderr}"

    # One thread per process: three sites on two shared cores would otherwise oversubscribe.
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    processes: list[_Process] = []
    try:
        server = _Process(["server", "start", "--kit", str(kits / "coordinator"), "--state", str(tmp_path / "coordinator")], env)
        processes.append(server)
        server.wait_for("listening on", 90)
        for name, config in site_configs.items():
            processes.append(_Process(["site", "start", "--kit", str(kits / "sites" / name), "--config", str(config),
                                       "--clientappio-port", str(_free_port())], env))
        run = _cli(["run", str(study_path), "--kit", str(kits / "coordinator"), "--timeout", "900", "--json"], 960, env)
        assert run.returncode == 0, run.stdout + run.stderr[-3000:] + "".join(server.lines)[-3000:]
        assert json.loads(run.stdout)["status"] == "finished:completed"

        # Submitting the study again would silently restart it: refused, with the way out named.
        again = _cli(["run", str(study_path), "--kit", str(kits / "coordinator"), "--timeout", "300", "--json"], 360, env)
        assert again.returncode == 1
        assert "already has completed rounds" in json.loads(again.stdout)["details"]
        # Resuming a finished study finds no round left and completes at once.
        resumed = _cli(["server", "resume", str(study_path), "--kit", str(kits / "coordinator"), "--json"], 360, env)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr[-2000:]
        assert json.loads(resumed.stdout)["status"] == "finished:completed"
    finally:
        for process in reversed(processes):
            process.stop()

    study_dir = tmp_path / "coordinator" / "studies" / study.study.id
    summary = json.loads((study_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and [r["round"] for r in summary["rounds"]] == [1, 2]
    for report in summary["rounds"]:
        assert set(report["sites"]) == set(data_consortium) and not report["failures"]
    assert any("TLS + SuperNode authentication" in line for line in server.lines)
    assert sum("registered site" in line for line in server.lines) == 3
    # Every party's signed audit chain verifies with its public key.
    for name in data_consortium:
        state = tmp_path / "site-state" / name
        verified = _cli(["audit", "verify", str(state / f"{name}.audit.jsonl"), "--pubkey", str(kits / "sites" / name / "signing.pub"), "--json"], 60)
        assert verified.returncode == 0, verified.stdout
        assert json.loads(verified.stdout)["entries"] >= 4  # trained + evaluated, two rounds
    coordinator = _cli(["audit", "verify", str(study_dir / "coordinator.audit.jsonl"), "--pubkey",
                        str(kits / "coordinator" / "signing.pub"), "--json"], 60)
    assert coordinator.returncode == 0, coordinator.stdout

    # The same study and seeds in Flower's simulation engine.
    out = tmp_path / "simulated"
    args = ["simulate", "--study", str(study_path), "--out", str(out), "--json"]
    for name, root in data_consortium.items():
        args += ["--site", f"{name}={root}"]
    simulated = _cli(args, 600)
    assert simulated.returncode == 0, simulated.stderr[-3000:]
    deployed = load_file(str(study_dir / "global_adapter.safetensors"))
    reference = load_file(str(out / "global_adapter.safetensors"))
    assert deployed.keys() == reference.keys()
    assert max(float(np.max(np.abs(deployed[k] - reference[k]))) for k in deployed) < 1e-4
