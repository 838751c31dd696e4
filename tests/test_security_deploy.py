"""Against a real SuperLink with TLS and SuperNode authentication (loopback): a SuperNode whose
key was never registered is refused, and a plaintext SuperNode cannot connect."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from consortium_harness import free_port, provision, start_server

from fedneuro.deploy.runtime import CONNECTION_NAME, ControlConnection, flower_env, flwr, supernode_command

pytestmark = pytest.mark.slow


def _supernode(cmd: list[str], seconds: float, log: Path) -> str:
    """Run a SuperNode (and what it starts) for up to ``seconds``; its output."""
    with log.open("w") as out:
        process = subprocess.Popen(cmd, env=flower_env(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        try:
            process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait(timeout=30)
    return log.read_text()


def test_unregistered_and_plaintext_supernodes_are_refused(tmp_path: Path, data_consortium) -> None:
    names = list(data_consortium)[:1]
    kits, port = provision(tmp_path, names)
    site_config = tmp_path / "site.toml"
    site_config.write_text(f'name = "{names[0]}"\nbids_root = "{tmp_path}"\nstate_dir = "{tmp_path / "state"}"\n')
    foreign = tmp_path / "foreign.key"
    foreign.write_bytes(ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    foreign.chmod(0o600)
    server = start_server(tmp_path, kits)
    try:
        connection = ControlConnection(address=f"127.0.0.1:{port}", root_certificates=kits / "coordinator" / "ca.pem")
        unregistered = _supernode(supernode_command(
            superlink=f"127.0.0.1:{port}", site_config=site_config, clientappio_port=free_port(),
            root_certificates=kits / "sites" / names[0] / "ca.pem", node_private_key=foreign), 40, tmp_path / "unregistered.log")
        plaintext = _supernode(supernode_command(
            superlink=f"127.0.0.1:{port}", site_config=site_config, clientappio_port=free_port(),
            root_certificates=None, node_private_key=None), 20, tmp_path / "plaintext.log")
        nodes = flwr(connection, ["supernode", "ls", CONNECTION_NAME]).get("nodes", [])
    finally:
        server.stop()
    assert "Failed to activate SuperNode" in unregistered, unregistered[-2000:]  # refused, and it exits
    assert not any(n.get("status") == "online" for n in nodes), nodes  # nobody got in
    assert "Connection attempt failed" in plaintext and "SuperNode ID" not in plaintext, plaintext[-2000:]
