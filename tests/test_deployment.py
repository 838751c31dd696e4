"""End to end on Flower's deployment engine: a real SuperLink and three real SuperNodes as
separate processes on loopback, TLS and SuperNode authentication on, secure aggregation on,
started with the same commands the containers use (`fedneuro server start`, `fedneuro site
start`, `fedneuro run`). Two rounds; the result matches a simulation with the same seeds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from consortium_harness import Process, cli, prepare_site, provision, sign_study, start_server, start_site, tiny_study

from fedneuro.deploy.runtime import CONNECTION_NAME, ControlConnection, flwr, wait_for_run, write_study_app
from fedneuro.study import load_study

pytestmark = pytest.mark.slow


def test_superlink_and_three_supernodes_with_tls_node_auth_and_secure_aggregation(tmp_path: Path, data_consortium) -> None:
    kits, port = provision(tmp_path, list(data_consortium))
    study_path = tiny_study(tmp_path, rounds=2)
    study = load_study(study_path)
    # The coordinator signs the study; each site imports consents, trusts the coordinator's
    # key, and approves the run plan with its own key: the commands of docs/site-operator.md.
    sign_study(study_path, kits)
    site_configs = {name: prepare_site(tmp_path, kits, name, root, study_path, study_seed=study.study.seed)
                    for name, root in data_consortium.items()}

    processes: list[Process] = []
    try:
        server = start_server(tmp_path, kits)
        processes.append(server)
        processes += [start_site(kits, name, config) for name, config in site_configs.items()]
        run = cli(["run", str(study_path), "--kit", str(kits / "coordinator"), "--timeout", "900", "--json"], 960)
        assert run.returncode == 0, run.stdout + run.stderr[-3000:] + "".join(server.lines)[-3000:]
        assert json.loads(run.stdout)["status"] == "finished:completed"

        # Submitting the study again would silently restart it: refused, with the way out named.
        again = cli(["run", str(study_path), "--kit", str(kits / "coordinator"), "--timeout", "300", "--json"], 360)
        assert again.returncode == 1
        assert "already has completed rounds" in json.loads(again.stdout)["details"]
        # Resuming a finished study finds no round left and completes at once.
        resumed = cli(["server", "resume", str(study_path), "--kit", str(kits / "coordinator"), "--json"], 360)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr[-2000:]
        assert json.loads(resumed.stdout)["status"] == "finished:completed"

        # Anyone reaching the Control API can submit an app that carries its own code, which
        # Flower would run: fedneuro's guards refuse it and nothing of it runs.
        markers = [tmp_path / "server-code-ran", tmp_path / "site-code-ran"]
        evil = write_study_app(tmp_path / "evil", study_path.read_text(), resume=False)
        for package, marker, kind in (("server", markers[0], "ServerApp"), ("client", markers[1], "ClientApp")):
            (evil / package).mkdir()
            (evil / package / "__init__.py").write_text("")
            module = "flwr.serverapp" if package == "server" else "flwr.clientapp"
            (evil / package / "app.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
                                                   f"from {module} import {kind}\napp = {kind}()\n")
        connection = ControlConnection(address=f"127.0.0.1:{port}", root_certificates=kits / "coordinator" / "ca.pem")
        run_id = str(flwr(connection, ["run", str(evil), CONNECTION_NAME])["run-id"])
        status = wait_for_run(connection, run_id, timeout_s=180)
        assert not status.succeeded and "carries files" in status.details, status
        assert not any(marker.exists() for marker in markers)
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
        verified = cli(["audit", "verify", str(state / f"{name}.audit.jsonl"), "--pubkey", str(kits / "sites" / name / "signing.pub"), "--json"], 60)
        assert verified.returncode == 0, verified.stdout
        assert json.loads(verified.stdout)["entries"] >= 5  # approved; trained + evaluated, two rounds
        events = [json.loads(line)["event"] for line in (state / f"{name}.audit.jsonl").read_text().splitlines()]
        assert events[0] == "plan-approved" and events.count("round-trained") == 2
    coordinator = cli(["audit", "verify", str(study_dir / "coordinator.audit.jsonl"), "--pubkey",
                        str(kits / "coordinator" / "signing.pub"), "--json"], 60)
    assert coordinator.returncode == 0, coordinator.stdout

    # The same study and seeds in Flower's simulation engine.
    out = tmp_path / "simulated"
    args = ["simulate", "--study", str(study_path), "--out", str(out), "--json"]
    for name, root in data_consortium.items():
        args += ["--site", f"{name}={root}"]
    simulated = cli(args, 600)
    assert simulated.returncode == 0, simulated.stderr[-3000:]
    deployed = load_file(str(study_dir / "global_adapter.safetensors"))
    reference = load_file(str(out / "global_adapter.safetensors"))
    assert deployed.keys() == reference.keys()
    assert max(float(np.max(np.abs(deployed[k] - reference[k]))) for k in deployed) < 1e-4
