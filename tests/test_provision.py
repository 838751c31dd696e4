"""`fedneuro provision`: CA, TLS certificate, node-auth and signing keys, kits (real cryptography)."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import ipaddress
import json
import os
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID
from typer.testing import CliRunner

from fedneuro.cli.main import app
from fedneuro.deploy.consortium import SUPERLINK_DEFAULT_PORT, ConsortiumFileError, load_consortium, parse_consortium
from fedneuro.deploy.provision import KitError, ProvisionError, load_kit, provision
from fedneuro.governance import keys

runner = CliRunner()

SITE_FILES = {"ca.pem", "node.key", "node.pub", "signing.key", "signing.pub", "coordinator.signing.pub", "kit.json"}
PRIVATE = {"ca.key", "server.key", "signing.key", "node.key"}


def consortium_toml(sites: list[str], *, host: str = "coord.example.org", extra: str = "") -> str:
    lines = ['[consortium]', 'name = "EEG consortium"', '', '[coordinator]', f'host = "{host}"', extra, '']
    for site in sites:
        lines += ['[[sites]]', f'name = "{site}"', '']
    return "\n".join(lines)


def run(tmp_path: Path, sites: list[str], *, host: str = "coord.example.org", extra: str = "",
        rotate: tuple[str, ...] = (), now: dt.datetime | None = None):
    path = tmp_path / "consortium.toml"
    path.write_text(consortium_toml(sites, host=host, extra=extra), encoding="utf-8")
    return provision(load_consortium(path), tmp_path / "kits", rotate=rotate, now=now)


def snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under root: bytes, mode, mtime (an untouched file keeps all three)."""
    return {p.relative_to(root).as_posix(): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".provision.lock"}


def files_of(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_layout_and_permissions(tmp_path: Path) -> None:
    report = run(tmp_path, ["hospital-a", "hospital-b"])
    out = tmp_path / "kits"
    assert files_of(out / "ca") == {"ca.pem", "ca.key"}
    assert files_of(out / "coordinator") == {
        "ca.pem", "server.pem", "server.key", "signing.key", "signing.pub", "kit.json",
        "nodes/hospital-a.pub", "nodes/hospital-b.pub", "sites/hospital-a.signing.pub", "sites/hospital-b.signing.pub"}
    for site in ("hospital-a", "hospital-b"):
        assert files_of(out / "sites" / site) == SITE_FILES
    for path in out.rglob("*"):
        if path.is_file() and path.name in PRIVATE:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        elif path.is_file() and path.name != ".provision.lock":
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert not list(out.rglob(".*partial*")) and not list(out.rglob(".*.old-*"))

    coordinator = load_kit(out / "coordinator")
    site = load_kit(out / "sites" / "hospital-a")
    assert (coordinator.role, coordinator.site, site.role, site.site) == ("coordinator", None, "site", "hospital-a")
    assert coordinator.format_version == site.format_version == 1
    assert coordinator.superlink_address == site.superlink_address == f"coord.example.org:{SUPERLINK_DEFAULT_PORT}"
    assert coordinator.control_address == "coord.example.org:8000" and coordinator.listen_host == "0.0.0.0"
    assert site.control_address is None
    assert coordinator.ca == site.ca and site.server_cert_fingerprint == coordinator.server_cert_fingerprint
    assert sorted(coordinator.sites) == ["hospital-a", "hospital-b"]
    assert coordinator.sites["hospital-a"].node.fingerprint == site.node.fingerprint == report.sites[0].node_fingerprint
    assert coordinator.sites["hospital-a"].signing.fingerprint == site.signing.fingerprint
    assert site.coordinator_signing.fingerprint == coordinator.signing.fingerprint
    # the Ed25519 fingerprints are the ones fedneuro.governance.keys computes
    assert keys.fingerprint(keys.load_public_key(out / "sites/hospital-a/signing.pub")) == site.signing.fingerprint
    assert keys.fingerprint(keys.load_signing_key(out / "coordinator/signing.key")) == coordinator.signing.fingerprint
    assert [s.status for s in report.sites] == ["created", "created"] and report.changed
    raw = json.loads((out / "coordinator/kit.json").read_text())
    assert raw["sites"]["hospital-b"]["node"] == {"file": "nodes/hospital-b.pub",
                                                  "fingerprint": coordinator.sites["hospital-b"].node.fingerprint}


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.mark.parametrize(("host", "listen", "dns", "ips", "address"), [
    ("coord.example.org", None, ["coord.example.org"], ["127.0.0.1"], "coord.example.org:8000"),
    ("Coord.Example.org.", '"coord.example.org"', ["coord.example.org"], [], "coord.example.org:8000"),
    ("10.1.2.3", '"10.1.2.3"', [], ["10.1.2.3"], "10.1.2.3:8000"),
    ("2001:db8::5", '"::"', [], ["2001:db8::5", "::1"], "[2001:db8::5]:8000"),
    ("[2001:db8::5]", '"2001:db8::5"', [], ["2001:db8::5"], "[2001:db8::5]:8000"),
    ("127.0.0.1", '"127.0.0.1"', ["localhost"], ["127.0.0.1", "::1"], "127.0.0.1:8000"),
])
def test_server_certificate_names(tmp_path: Path, host: str, listen: str | None, dns: list[str], ips: list[str],
                                  address: str) -> None:
    report = run(tmp_path, ["a"], host=host, extra=f"listen = {listen}" if listen else "")
    out = tmp_path / "kits"
    cert, ca = _cert(out / "coordinator/server.pem"), _cert(out / "ca/ca.pem")
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(sans.get_values_for_type(x509.DNSName)) == sorted(dns)
    assert sorted(map(str, sans.get_values_for_type(x509.IPAddress))) == sorted(ips)
    assert load_kit(out / "sites/a").superlink_address == report.superlink_address == address
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == \
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=365) < lifetime < dt.timedelta(days=800)

    # cryptography's own path validation (strict RFC 5280 / CA/B profile), for the host as dialled
    name = report.coordinator.server_names[0]
    subject = verification.DNSName(name) if name in dns else verification.IPAddress(ipaddress.ip_address(name))
    verifier = verification.PolicyBuilder().store(verification.Store([ca])).build_server_verifier(subject)
    chain = verifier.verify(cert, [])
    assert chain[-1] == ca
    if ips == []:  # a name the certificate does not carry is refused
        with pytest.raises(verification.VerificationError):
            verification.PolicyBuilder().store(verification.Store([ca])).build_server_verifier(
                verification.IPAddress(ipaddress.ip_address("127.0.0.1"))).verify(cert, [])


def _tls_exchange(server_dir: Path, client_ca: Path, server_hostname: str) -> bytes:
    """A real TLS handshake on 127.0.0.1: server with server.pem/server.key, client checking the name."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(server_dir / "server.pem", server_dir / "server.key")
    client_ctx = ssl.create_default_context(cafile=str(client_ca))
    assert client_ctx.check_hostname and client_ctx.verify_mode == ssl.CERT_REQUIRED
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"hello " + tls.recv(16))
            except (ssl.SSLError, OSError):
                pass  # the client refused us: its side raises

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                    client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
                tls.sendall(b"site")
                return tls.recv(32)
        finally:
            thread.join(timeout=10)


def test_tls_handshake_with_the_kit_files(tmp_path: Path) -> None:
    run(tmp_path, ["hospital-a"], host="127.0.0.1")
    out = tmp_path / "kits"
    site_ca = out / "sites/hospital-a/ca.pem"
    assert _tls_exchange(out / "coordinator", site_ca, "127.0.0.1") == b"hello site"
    assert _tls_exchange(out / "coordinator", site_ca, "localhost") == b"hello site"
    # another consortium's CA does not vouch for this server
    other = tmp_path / "other"
    other.mkdir()
    run(other, ["x"], host="127.0.0.1")
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        _tls_exchange(out / "coordinator", other / "kits/ca/ca.pem", "127.0.0.1")
    # a name the certificate does not carry
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch|not valid for"):
        _tls_exchange(out / "coordinator", site_ca, "coord.example.org")


def test_node_keys_load_with_flwrs_own_loaders(tmp_path: Path) -> None:
    """The files go through the very functions flower-supernode and `flwr supernode register` call."""
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.supercore.primitives.asymmetric import bytes_to_public_key, sign_message, verify_signature

    supernode_cli = importlib.import_module("flwr.supernode.cli.flower_supernode")
    run(tmp_path, ["hospital-a", "hospital-b"])
    out = tmp_path / "kits"
    for site in ("hospital-a", "hospital-b"):
        args = argparse.Namespace(auth_supernode_private_key=str(out / "sites" / site / "node.key"),
                                  auth_supernode_public_key=None)
        private, public = supernode_cli._try_setup_client_authentication(args)
        assert isinstance(private.curve, ec.SECP384R1)
        registered = try_load_public_key(out / "coordinator" / "nodes" / f"{site}.pub")  # what the SuperLink stores
        assert registered == try_load_public_key(out / "sites" / site / "node.pub")
        # the SuperLink's check of a node's signed timestamp (flwr/superlink/routers/fleet/node_auth.py)
        signature = sign_message(private, b"2026-01-01T00:00:00")
        assert verify_signature(bytes_to_public_key(registered), b"2026-01-01T00:00:00", signature)
        assert (out / "sites" / site / "node.pub").read_text().startswith("ecdsa-sha2-nistp384 ")
        assert (out / "sites" / site / "node.pub").read_text().rstrip().endswith(f" {site}")
    # the keys differ per site
    a = try_load_public_key(out / "coordinator/nodes/hospital-a.pub")
    assert a != try_load_public_key(out / "coordinator/nodes/hospital-b.pub")


def _private_fragments(path: Path) -> list[bytes]:
    """Ways a private key could leak: the file, its DER and PEM PKCS#8 forms, the raw secret."""
    data = path.read_bytes()
    if path.name == "node.key":
        key = serialization.load_ssh_private_key(data, None)
    else:
        key = serialization.load_pem_private_key(data, None)
    fragments = [data] + [key.private_bytes(encoding, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
                          for encoding in (serialization.Encoding.DER, serialization.Encoding.PEM)]
    if isinstance(key, Ed25519PrivateKey):
        fragments.append(key.private_bytes_raw())
    else:
        value = key.private_numbers().private_value
        fragments.append(value.to_bytes((value.bit_length() + 7) // 8, "big"))
    return fragments


def test_no_private_key_in_another_partys_kit(tmp_path: Path) -> None:
    run(tmp_path, ["hospital-a", "hospital-b", "hospital-c"])
    run(tmp_path, ["hospital-a", "hospital-b", "hospital-c", "hospital-d"], rotate=("hospital-b",))
    out = tmp_path / "kits"
    kits = [out / "coordinator", *sorted((out / "sites").iterdir())]
    owners = {out / "ca": out / "ca", **{kit: kit for kit in kits}}
    secrets = [(owner, path, fragment) for owner in owners for path in owner.rglob("*")
               if path.is_file() and path.name in PRIVATE for fragment in _private_fragments(path)]
    assert len({path for _, path, _ in secrets}) == 1 + 2 + 2 * 4  # CA; server + signing; node + signing per site
    for kit in kits:
        for path in kit.rglob("*"):
            if not path.is_file():
                continue
            data = path.read_bytes()
            for owner, secret_path, fragment in secrets:
                if owner != kit:
                    assert fragment not in data, f"{secret_path} leaks into {path}"
    assert not (out / "coordinator/ca.key").exists() and not list((out / "sites").rglob("ca.key"))


def test_rerun_is_idempotent(tmp_path: Path) -> None:
    run(tmp_path, ["hospital-a", "hospital-b"])
    before = snapshot(tmp_path / "kits")
    report = run(tmp_path, ["hospital-a", "hospital-b"])
    assert not report.changed
    assert report.ca.status == report.coordinator.status == "unchanged"
    assert [s.status for s in report.sites] == ["unchanged", "unchanged"]
    assert snapshot(tmp_path / "kits") == before  # not even rewritten


def test_permissions_are_restored(tmp_path: Path) -> None:
    run(tmp_path, ["hospital-a"])
    key = tmp_path / "kits/sites/hospital-a/node.key"
    key.chmod(0o644)
    with pytest.raises(KitError, match=r"node.key: private key readable by group or others \(mode 0644\); run chmod 600"):
        load_kit(key.parent)
    report = run(tmp_path, ["hospital-a"])
    assert (report.sites[0].status, report.sites[0].changes) == ("updated", ["node.key mode set to 0600"])
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert not run(tmp_path, ["hospital-a"]).changed


def test_adding_a_site_updates_only_the_coordinator(tmp_path: Path) -> None:
    run(tmp_path, ["hospital-a", "hospital-b"])
    out = tmp_path / "kits"
    before = snapshot(out)
    report = run(tmp_path, ["hospital-a", "hospital-b", "hospital-c"])
    assert [(s.name, s.status) for s in report.sites] == [
        ("hospital-a", "unchanged"), ("hospital-b", "unchanged"), ("hospital-c", "created")]
    assert report.coordinator.status == "updated" and report.coordinator.changes == ["site hospital-c added"]
    after = snapshot(out)
    untouched = {k: v for k, v in before.items() if not k.startswith("coordinator/")}
    assert {k: after[k] for k in untouched} == untouched
    assert sorted(load_kit(out / "coordinator").sites) == ["hospital-a", "hospital-b", "hospital-c"]
    assert load_kit(out / "sites/hospital-c").node.fingerprint == report.sites[2].node_fingerprint
    # the coordinator's TLS identity and signing key are kept
    assert after["coordinator/server.pem"][0] == before["coordinator/server.pem"][0]
    assert after["coordinator/signing.key"][0] == before["coordinator/signing.key"][0]


def test_rotate_replaces_one_sites_keys(tmp_path: Path) -> None:
    first = run(tmp_path, ["hospital-a", "hospital-b"])
    out = tmp_path / "kits"
    before = snapshot(out)
    report = run(tmp_path, ["hospital-a", "hospital-b"], rotate=("hospital-b",))
    old, new = first.sites[1], report.sites[1]
    assert new.status == "rotated" and report.sites[0].status == "unchanged"
    assert new.previous == {"node_fingerprint": old.node_fingerprint, "signing_fingerprint": old.signing_fingerprint}
    assert new.node_fingerprint != old.node_fingerprint and new.signing_fingerprint != old.signing_fingerprint
    assert report.coordinator.changes == ["site hospital-b keys rotated"]
    coordinator = load_kit(out / "coordinator")
    assert coordinator.sites["hospital-b"].node.fingerprint == new.node_fingerprint
    assert coordinator.sites["hospital-b"].signing.fingerprint == new.signing_fingerprint
    assert load_kit(out / "sites/hospital-b").node.fingerprint == new.node_fingerprint
    after = snapshot(out)
    assert {k: v for k, v in after.items() if k.startswith("sites/hospital-a/")} == \
        {k: v for k, v in before.items() if k.startswith("sites/hospital-a/")}
    with pytest.raises(ProvisionError, match=r"--rotate hospital-z: not a site of the consortium file "
                                             r"\(its sites: hospital-a, hospital-b\)"):
        run(tmp_path, ["hospital-a", "hospital-b"], rotate=("hospital-z",))


def test_removing_a_site_leaves_its_folder_alone(tmp_path: Path) -> None:
    first = run(tmp_path, ["hospital-a", "hospital-b"])
    out = tmp_path / "kits"
    before = snapshot(out / "sites/hospital-b")
    report = run(tmp_path, ["hospital-a"])
    assert [r.model_dump() for r in report.removed_sites] == [
        {"name": "hospital-b", "node_fingerprint": first.sites[1].node_fingerprint, "kit_dir": "sites/hospital-b"}]
    assert report.coordinator.changes == ["site hospital-b removed"]
    coordinator = load_kit(out / "coordinator")
    assert list(coordinator.sites) == ["hospital-a"]
    assert files_of(out / "coordinator") >= {"nodes/hospital-a.pub"}
    assert not (out / "coordinator/nodes/hospital-b.pub").exists()
    assert not (out / "coordinator/sites/hospital-b.signing.pub").exists()
    assert snapshot(out / "sites/hospital-b") == before
    # re-adding it reuses its keys
    again = run(tmp_path, ["hospital-a", "hospital-b"])
    assert again.sites[1].node_fingerprint == first.sites[1].node_fingerprint


def test_new_host_reissues_the_server_certificate(tmp_path: Path) -> None:
    first = run(tmp_path, ["hospital-a"])
    report = run(tmp_path, ["hospital-a"], host="10.0.0.7")
    assert report.coordinator.server_cert_fingerprint != first.coordinator.server_cert_fingerprint
    assert report.coordinator.changes == ["server certificate reissued: the old one names coord.example.org, "
                                          "127.0.0.1, but the coordinator needs 10.0.0.7, 127.0.0.1",
                                          "SuperLink address: coord.example.org:8000 -> 10.0.0.7:8000",
                                          "control address: coord.example.org:8000 -> 10.0.0.7:8000"]
    site = load_kit(tmp_path / "kits/sites/hospital-a")
    assert site.superlink_address == "10.0.0.7:8000" and report.sites[0].status == "updated"
    assert report.sites[0].changes == ["SuperLink address: coord.example.org:8000 -> 10.0.0.7:8000",
                                       f"server certificate replaced ({report.coordinator.server_cert_fingerprint})"]
    moved = run(tmp_path, ["hospital-a"], host="10.0.0.7", extra="port = 9443")
    assert moved.coordinator.changes == ["SuperLink address: 10.0.0.7:8000 -> 10.0.0.7:9443",
                                         "control address: 10.0.0.7:8000 -> 10.0.0.7:9443"]
    assert moved.coordinator.server_cert_fingerprint == report.coordinator.server_cert_fingerprint  # names unchanged
    assert site.node.fingerprint == first.sites[0].node_fingerprint  # identities kept
    # near expiry the certificate is renewed, with the same key
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=700)
    renewed = run(tmp_path, ["hospital-a"], host="10.0.0.7", extra="port = 9443", now=later)
    assert renewed.coordinator.changes[0].startswith("server certificate reissued: the old one expires ")
    assert not run(tmp_path, ["hospital-a"], host="10.0.0.7", extra="port = 9443", now=later).changed


def test_ca_key_may_stay_offline_until_needed(tmp_path: Path) -> None:
    run(tmp_path, ["hospital-a"])
    ca_key = tmp_path / "kits/ca/ca.key"
    saved = ca_key.read_bytes()
    ca_key.unlink()
    assert [s.status for s in run(tmp_path, ["hospital-a", "hospital-b"]).sites] == ["unchanged", "created"]
    with pytest.raises(ProvisionError, match=r"ca.key: needed to issue the coordinator's server certificate but absent"):
        run(tmp_path, ["hospital-a", "hospital-b"], host="10.0.0.7")
    ca_key.write_bytes(saved)
    ca_key.chmod(0o600)
    assert run(tmp_path, ["hospital-a", "hospital-b"], host="10.0.0.7").coordinator.status == "updated"


def test_lost_material_is_refused_not_reinvented(tmp_path: Path) -> None:
    run(tmp_path, ["hospital-a", "hospital-b"])
    out = tmp_path / "kits"
    # a site folder handed over and deleted here: its keys are not silently replaced
    for path in sorted((out / "sites/hospital-b").iterdir()):
        path.unlink()
    (out / "sites/hospital-b").rmdir()
    with pytest.raises(ProvisionError, match=r"sites/hospital-b: missing, but the coordinator kit lists site "
                                             r"hospital-b .*pass --rotate hospital-b"):
        run(tmp_path, ["hospital-a", "hospital-b"])
    assert run(tmp_path, ["hospital-a", "hospital-b"], rotate=("hospital-b",)).sites[1].status == "rotated"
    # a missing CA with kits beside it
    (out / "ca").rename(tmp_path / "ca-backup")
    with pytest.raises(ProvisionError, match=r"ca.pem: missing, but kits exist beside it; restore .*ca"):
        run(tmp_path, ["hospital-a", "hospital-b"])
    (tmp_path / "ca-backup").rename(out / "ca")
    # a file that is not part of the kit would be lost by the folder swap
    (out / "coordinator/superlink.db").write_text("state")
    with pytest.raises(ProvisionError, match=r"coordinator: holds file\(s\) that are not part of a kit: superlink.db"):
        run(tmp_path, ["hospital-a"])


def test_failure_while_building_leaves_previous_kits_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fedneuro.deploy.provision as module

    run(tmp_path, ["hospital-a", "hospital-b"])
    out = tmp_path / "kits"
    before = snapshot(out)
    real = module.write_bytes_atomic

    def failing(path: Path, data: bytes, *, mode: int = 0o644) -> None:
        if path.name == "kit.json" and ".coordinator.partial" in str(path):
            raise OSError(28, "No space left on device")
        real(path, data, mode=mode)

    monkeypatch.setattr(module, "write_bytes_atomic", failing)
    with pytest.raises(OSError, match="No space left"):
        run(tmp_path, ["hospital-a", "hospital-b", "hospital-c"], rotate=("hospital-a",))
    assert snapshot(out) == before  # hospital-c not half-added, hospital-a not half-rotated
    assert not (out / "sites/hospital-c").exists()
    assert not [p for p in out.rglob(".*") if p.name != ".provision.lock"]
    monkeypatch.setattr(module, "write_bytes_atomic", real)
    assert run(tmp_path, ["hospital-a", "hospital-b", "hospital-c"]).sites[2].status == "created"


def test_crash_between_swap_renames_is_recovered(tmp_path: Path) -> None:
    run(tmp_path, ["hospital-a"])
    out = tmp_path / "kits"
    before = snapshot(out)
    # swap_dir_into_place moved the old folder aside, then the process died
    os.replace(out / "coordinator", out / ".coordinator.old-99999")
    (out / "sites/.hospital-a.partial-99999").mkdir()
    report = run(tmp_path, ["hospital-a"])
    assert not report.changed and snapshot(out) == before


def test_load_kit_detects_tampering(tmp_path: Path) -> None:
    run(tmp_path, ["hospital-a", "hospital-b"])
    out = tmp_path / "kits"
    coordinator = out / "coordinator"
    # a node key swapped for another site's: the SuperLink would register the wrong node
    (coordinator / "nodes/hospital-a.pub").write_bytes((coordinator / "nodes/hospital-b.pub").read_bytes())
    (coordinator / "sites/hospital-b.signing.pub").unlink()
    with pytest.raises(KitError) as caught:
        load_kit(coordinator)
    message = str(caught.value)
    assert "the kit does not match its kit.json (2 problem(s))" in message
    assert "nodes/hospital-a.pub: fingerprint sha256:" in message and "(file changed or replaced)" in message
    assert "sites/hospital-b.signing.pub: missing (kit.json names it)" in message
    with pytest.raises(ProvisionError, match="the coordinator kit cannot be reused"):
        run(tmp_path, ["hospital-a", "hospital-b"])

    site = out / "sites/hospital-a"
    (site / "ca.pem").write_bytes((coordinator / "server.pem").read_bytes())  # a different certificate
    (site / "node.key").write_text("garbage")
    with pytest.raises(KitError) as caught:
        load_kit(site)
    assert "ca.pem: fingerprint" in str(caught.value)
    assert "node.key: cannot be read as an OpenSSH ECDSA private key" in str(caught.value)

    (site / "kit.json").write_text('{"format_version": 2}')
    with pytest.raises(KitError, match=r"kit.json: invalid kit \(format_version: Input should be 1"):
        load_kit(site)
    with pytest.raises(KitError, match=r"kit.json: not found; is .* a kit folder written by `fedneuro provision`"):
        load_kit(tmp_path)


@pytest.mark.parametrize(("text", "message"), [
    ('[consortium]\nname = "c"\n[coordinator]\nport = 8000\n', r"\[coordinator\] host: missing: this key is required"),
    (consortium_toml(["hospital-a", "hospital-b", "Hospital-A"]),
     r"\[\[sites\]\] #3 name: 'Hospital-A' is already the name of \[\[sites\]\] #1 \(names are compared ignoring case\)"),
    (consortium_toml(["hospital-a", "bad name"]),
     r"\[\[sites\]\] #2 name: 'bad name' is not a valid site name: start with a letter or digit"),
    (consortium_toml(["a"]) + "adress = 1\n", r"\[\[sites\]\] #1 adress: unknown key \(check the spelling; allowed here: name\)"),
    (consortium_toml(["a"], extra="prot = 9092"), r"\[coordinator\] prot: unknown key .*allowed here: host, port"),
    ("[consortium\nname = 'c'", r"consortium.toml is not valid TOML: "),
    (consortium_toml(["a"], host="https://coord.example.org"), r"\[coordinator\] host: host 'https://coord.example.org' "
                                                               r"looks like a URL; write only the name or address"),
    (consortium_toml(["a"], host="coord.example.org:9092"), r"contains a port; write the port in `port`"),
    (consortium_toml(["a"], host="coord_1.example"), r"host 'coord_1.example' is neither an IP address nor a DNS name"),
    (consortium_toml(["a"], extra="port = 70000"), r"\[coordinator\] port: Input should be less than or equal to 65535 "
                                                   r"\(got 70000\)"),
    (consortium_toml(["a"], extra="control_port = 9093"),
     r"control_port = 9093 differs from port = 8000, but flwr 1.42 serves the Control API on the SuperLink's one port"),
])
def test_bad_consortium_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "consortium.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConsortiumFileError, match=message) as caught:
        load_consortium(path)
    assert str(caught.value).startswith(str(path))
    assert not (tmp_path / "kits").exists()


def test_consortium_file_defaults() -> None:
    spec = parse_consortium(consortium_toml(["a"], extra="port = 9443\ncontrol_port = 9443"))
    assert spec.coordinator.superlink_address == spec.coordinator.control_address == "coord.example.org:9443"
    with pytest.raises(ConsortiumFileError, match="no-such-consortium.toml: consortium file not found"):
        load_consortium(Path("no-such-consortium.toml"))


def test_default_port_is_flwrs() -> None:
    from flwr.supercore.constant import SUPERLINK_UVICORN_DEFAULT_PORT

    assert SUPERLINK_DEFAULT_PORT == SUPERLINK_UVICORN_DEFAULT_PORT


def test_cli_provision_json(tmp_path: Path) -> None:
    path = tmp_path / "consortium.toml"
    path.write_text(consortium_toml(["hospital-a", "hospital-b"]), encoding="utf-8")
    out = tmp_path / "kits"
    result = runner.invoke(app, ["provision", str(path), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload) == {"changed", "consortium", "out_dir", "superlink_address", "control_address", "listen_host",
                            "ca", "coordinator", "sites", "removed_sites", "warnings"}
    assert payload["changed"] is True and payload["ca"]["status"] == "created"
    assert set(payload["sites"][0]) == {"name", "status", "kit_dir", "node_fingerprint", "signing_fingerprint",
                                        "previous", "changes"}
    assert payload["sites"][0]["node_fingerprint"] == load_kit(out / "sites/hospital-a").node.fingerprint
    assert payload["coordinator"]["server_names"] == ["coord.example.org", "127.0.0.1"]

    result = runner.invoke(app, ["provision", str(path), "--out", str(out), "--rotate", "hospital-a", "--json"])
    rotated = json.loads(result.stdout)["sites"][0]
    assert rotated["status"] == "rotated"
    assert rotated["previous"]["node_fingerprint"] == payload["sites"][0]["node_fingerprint"]

    result = runner.invoke(app, ["provision", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"unchanged: every kit under {out} already matches {path}" in result.stdout
    assert load_kit(out / "sites/hospital-b").signing.fingerprint in result.stdout  # the table, unwrapped

    path.write_text(consortium_toml(["hospital-a", "hospital-a"]), encoding="utf-8")
    result = runner.invoke(app, ["provision", str(path), "--out", str(out), "--json"])
    assert result.exit_code == 2 and result.stdout == ""
    assert "[[sites]] #2 name: 'hospital-a' is already the name of [[sites]] #1" in result.output.replace("\n", " ")
