"""Provision a consortium: a CA, the coordinator's TLS certificate, node-auth and signing keys, kits.

What flwr 1.42 accepts (read in its installed source, and exercised against a real SuperLink):

* SuperLink TLS (``flower-superlink --ssl-ca-certfile ca.pem --ssl-certfile server.pem
  --ssl-keyfile server.key``): PEM files; one HTTPS port (``--host``/``--port``, default
  127.0.0.1:8000) serves the Fleet, Control and Runtime APIs. SuperNodes check the certificate
  against ``--root-certificates ca.pem`` and the host name they dial, so the certificate names
  ``[coordinator] host`` as a DNSName or IPAddress SAN. The SuperLink's own SuperExec dials
  ``--host`` too (loopback for 0.0.0.0), so that name is in the certificate as well
  (:func:`server_names`).
* SuperNode authentication key (``flower-supernode --auth-supernode-private-key node.key``):
  read with ``cryptography``'s ``load_ssh_private_key(data, None)`` and required to be an
  ``EllipticCurvePrivateKey`` (``flwr/supernode/cli/flower_supernode.py``). So: OpenSSH
  private-key format (``-----BEGIN OPENSSH PRIVATE KEY-----``), unencrypted; PEM PKCS#8 is
  refused ("Not OpenSSH private key format").
* Registering that node (``flwr supernode register node.pub [CONNECTION]``,
  ``flwr/cli/supernode/register.py``): ``load_ssh_public_key`` of the file, an EC key on a NIST
  curve (``uses_nist_ec_curve``: P-192 to P-521). So: one OpenSSH public-key line
  (``ecdsa-sha2-nistp384 AAAA... comment``). flwr's own key generator uses SECP384R1; so do we
  (OpenSSH itself knows only P-256/384/521).
* ``--enable-supernode-auth`` on the SuperLink requires TLS; the SuperNode then signs a
  timestamp with its key on every Fleet request and the SuperLink accepts only registered keys.

Fingerprints are ``sha256:<hex>``: of the DER certificate for certificates (``openssl x509
-outform DER | sha256sum``), of the DER SubjectPublicKeyInfo for every public key (as
:func:`fedneuro.governance.keys.fingerprint`), so that one public key has one fingerprint
whatever file format it is stored in.

Every folder (``ca``, ``coordinator``, ``sites/<site>``) is built whole in a temporary sibling
and swapped into place; all folders are staged before the first swap, so a failure while
building leaves every previous kit intact.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedneuro.atomic import partial_dir_for, swap_dir_into_place, write_bytes_atomic
from fedneuro.deploy.consortium import SITE_NAME_PATTERN, ConsortiumSpec, CoordinatorSpec
from fedneuro.governance import keys

KIT_FORMAT_VERSION = 1
KIT_FILE = "kit.json"
CA_VALID_DAYS = 3650
SERVER_VALID_DAYS = 730
RENEW_BEFORE_DAYS = 60  # re-running provision renews a server certificate this close to expiry
NODE_CURVE = ec.SECP384R1  # as flwr.supercore.primitives.asymmetric.generate_key_pairs
_CLOCK_SKEW = dt.timedelta(minutes=5)  # not_before in the past: sites with a slow clock accept the cert

Status = Literal["created", "updated", "unchanged", "rotated"]


class KitError(ValueError):
    """A kit folder whose kit.json is missing or invalid, or whose files do not match it."""


class ProvisionError(ValueError):
    """Provisioning cannot go on without losing or inventing an identity (the message says why)."""


# ---------------------------------------------------------------------------------------------
# kit.json


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _relative(value: str) -> str:
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts or "\\" in value:
        raise ValueError(f"{value!r} must be a relative path inside the kit folder (no '..', no leading '/')")
    return value


def _fingerprint_field(value: str) -> str:
    if not (value.startswith("sha256:") and len(value) == 71 and all(c in "0123456789abcdef" for c in value[7:])):
        raise ValueError(f"{value!r} is not a fingerprint; expected 'sha256:' and 64 lower-case hex digits")
    return value


RelPath = Annotated[str, AfterValidator(_relative)]
Fingerprint = Annotated[str, AfterValidator(_fingerprint_field)]


class FileRef(_Strict):
    """A public file of the kit and the fingerprint of what it holds."""

    file: RelPath
    fingerprint: Fingerprint


class KeyPairRef(_Strict):
    """This party's own key pair: private and public file, fingerprint of the public key."""

    private: RelPath
    public: RelPath
    fingerprint: Fingerprint


class ServerTLSRef(_Strict):
    """The coordinator's TLS certificate and key (flower-superlink --ssl-certfile/--ssl-keyfile)."""

    cert: RelPath
    key: RelPath


class SiteEntry(_Strict):
    """What the coordinator holds of one site: its node-auth and signing public keys."""

    node: FileRef
    signing: FileRef


class Kit(_Strict):
    """``kit.json``: what one party received and how to check it (fingerprints)."""

    format_version: Literal[1] = KIT_FORMAT_VERSION
    consortium: str
    role: Literal["coordinator", "site"]
    site: str | None = Field(default=None, pattern=SITE_NAME_PATTERN)
    superlink_address: str = Field(description="host:port the SuperNodes dial (flower-supernode --superlink)")
    control_address: str | None = Field(default=None, description="host:port for flwr CLI connections (coordinator)")
    listen_host: str | None = Field(default=None, description="flower-superlink --host (coordinator); the "
                                    "certificate names where the SuperLink's own SuperExec then connects")
    ca: FileRef
    server_cert_fingerprint: Fingerprint
    server: ServerTLSRef | None = None
    signing: KeyPairRef
    node: KeyPairRef | None = None
    coordinator_signing: FileRef | None = None
    sites: dict[str, SiteEntry] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _role_fields(self) -> Kit:
        wrong: list[str] = []
        if self.role == "coordinator":
            wrong += [name for name in ("site", "node", "coordinator_signing") if getattr(self, name) is not None]
            missing = [name for name in ("server", "control_address", "listen_host") if getattr(self, name) is None]
        else:
            wrong += [name for name in ("server", "control_address", "listen_host") if getattr(self, name) is not None]
            wrong += ["sites"] if self.sites else []
            missing = [name for name in ("site", "node", "coordinator_signing") if getattr(self, name) is None]
        if wrong or missing:
            raise ValueError(f"a {self.role} kit " + "; ".join(
                part for part in (f"must not have {', '.join(wrong)}" if wrong else "",
                                  f"needs {', '.join(missing)}" if missing else "") if part))
        return self

    def to_json(self) -> bytes:
        return (json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode("utf-8")


def load_kit(kit_dir: Path, *, check_permissions: bool = True) -> Kit:
    """Read ``kit_dir/kit.json`` and check every file it names: present, right fingerprint.

    Private keys must match their public fingerprint and (``check_permissions``) be readable by
    the owner only. Raises :class:`KitError` listing every problem.
    """
    kit_dir = Path(kit_dir)
    kit_path = kit_dir / KIT_FILE
    try:
        raw = json.loads(kit_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KitError(f"{kit_path}: not found; is {kit_dir} a kit folder written by `fedneuro provision`?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise KitError(f"{kit_path}: cannot read it as JSON ({error})") from None
    except RecursionError:
        raise KitError(f"{kit_path}: cannot read it as JSON (nested too deeply)") from None
    try:
        kit = Kit.model_validate(raw)
    except ValidationError as error:
        details = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<top>'}: {e['msg'].removeprefix('Value error, ')}"
                            for e in error.errors())
        raise KitError(f"{kit_path}: invalid kit ({details})") from None
    problems = _check_kit_files(kit_dir, kit, check_permissions=check_permissions)
    if problems:
        raise KitError(f"{kit_dir}: the kit does not match its kit.json ({len(problems)} problem(s)):\n"
                       + "\n".join(f"  {p}" for p in problems))
    return kit


def _check_kit_files(kit_dir: Path, kit: Kit, *, check_permissions: bool) -> list[str]:
    problems: list[str] = []

    def check(rel: str, expected: str, read: Callable[[bytes], str], *, private: bool = False) -> None:
        path = kit_dir / rel
        try:
            actual = read(path.read_bytes())
        except FileNotFoundError:
            problems.append(f"{rel}: missing (kit.json names it)")
            return
        except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as error:
            problems.append(f"{rel}: cannot be read as {_FORMATS[read]} ({error})")
            return
        if actual != expected:
            problems.append(f"{rel}: fingerprint {actual} but kit.json says {expected} (file changed or replaced)")
        if private and check_permissions and path.stat().st_mode & 0o077:
            problems.append(f"{rel}: private key readable by group or others (mode "
                            f"{stat.S_IMODE(path.stat().st_mode):04o}); run chmod 600 on it")

    check(kit.ca.file, kit.ca.fingerprint, _cert_file_fingerprint)
    check(kit.signing.public, kit.signing.fingerprint, _ed25519_public_fingerprint)
    check(kit.signing.private, kit.signing.fingerprint, _ed25519_private_fingerprint, private=True)
    if kit.server is not None:
        check(kit.server.cert, kit.server_cert_fingerprint, _cert_file_fingerprint)
        try:
            cert = x509.load_pem_x509_certificate((kit_dir / kit.server.cert).read_bytes())
        except (OSError, ValueError):
            cert = None  # already reported above
        if cert is not None:
            check(kit.server.key, public_key_fingerprint(cert.public_key()), _pem_private_fingerprint, private=True)
    if kit.node is not None:
        check(kit.node.public, kit.node.fingerprint, _ssh_public_fingerprint)
        check(kit.node.private, kit.node.fingerprint, _ssh_private_fingerprint, private=True)
    if kit.coordinator_signing is not None:
        check(kit.coordinator_signing.file, kit.coordinator_signing.fingerprint, _ed25519_public_fingerprint)
    for entry in kit.sites.values():
        check(entry.node.file, entry.node.fingerprint, _ssh_public_fingerprint)
        check(entry.signing.file, entry.signing.fingerprint, _ed25519_public_fingerprint)
    return problems


# ---------------------------------------------------------------------------------------------
# fingerprints and formats


def cert_fingerprint(cert: x509.Certificate) -> str:
    return "sha256:" + cert.fingerprint(hashes.SHA256()).hex()


def public_key_fingerprint(key: PublicKeyTypes) -> str:
    """``sha256:<hex>`` of the DER SubjectPublicKeyInfo (same as keys.fingerprint for Ed25519)."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def node_private_key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    """OpenSSH private-key format, unencrypted: what ``flower-supernode --auth-supernode-private-key`` loads."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption())


def node_public_key_line(key: ec.EllipticCurvePublicKey, comment: str) -> bytes:
    """One OpenSSH public-key line: what ``flwr supernode register`` loads."""
    blob = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return blob + b" " + comment.encode("utf-8") + b"\n"


def _cert_file_fingerprint(data: bytes) -> str:
    return cert_fingerprint(x509.load_pem_x509_certificate(data))


def _ed25519_public_fingerprint(data: bytes) -> str:
    return keys.fingerprint(keys.public_key_from_pem(data))


def _ed25519_private_fingerprint(data: bytes) -> str:
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"a {type(key).__name__}, not Ed25519")
    return keys.fingerprint(key)


def _pem_private_fingerprint(data: bytes) -> str:
    return public_key_fingerprint(serialization.load_pem_private_key(data, password=None).public_key())


def _ssh_public_fingerprint(data: bytes) -> str:
    key = serialization.load_ssh_public_key(data)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError(f"a {type(key).__name__}, not an ECDSA key")
    return public_key_fingerprint(key)


def _ssh_private_fingerprint(data: bytes) -> str:
    key = serialization.load_ssh_private_key(data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"a {type(key).__name__}, not an ECDSA key")
    return public_key_fingerprint(key.public_key())


_FORMATS: dict[Callable[[bytes], str], str] = {
    _cert_file_fingerprint: "a PEM certificate", _ed25519_public_fingerprint: "an Ed25519 PEM public key",
    _ed25519_private_fingerprint: "an Ed25519 PEM private key", _pem_private_fingerprint: "a PEM private key",
    _ssh_public_fingerprint: "an OpenSSH ECDSA public key", _ssh_private_fingerprint: "an OpenSSH ECDSA private key",
}


# ---------------------------------------------------------------------------------------------
# certificates


def server_names(coordinator: CoordinatorSpec) -> list[x509.GeneralName]:
    """SANs of the coordinator's certificate: every name a client of the SuperLink dials.

    The host (the SuperNodes, the flwr CLI); where the SuperLink's own SuperExec connects
    (127.0.0.1 when it listens on 0.0.0.0, see fedneuro.deploy.consortium); and for a loopback
    host the other loopback spellings.
    """
    hosts = [coordinator.host, coordinator.local_dial_host]
    if coordinator.is_loopback:
        hosts += ["localhost", "127.0.0.1", "::1"]
    names: list[x509.GeneralName] = []
    for host in hosts:
        name = _general_name(host)
        if name not in names:
            names.append(name)
    return names


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _new_ca(consortium: str, now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, consortium),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"{consortium} consortium CA (fedneuro)")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=CA_VALID_DAYS))
        # path_length=0: this CA signs only end-entity certificates, never another CA
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA384())
    )
    return cert, key


def _new_server_cert(coordinator: CoordinatorSpec, consortium: str, key: ec.EllipticCurvePrivateKey,
                     ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, now: dt.datetime) -> x509.Certificate:
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, consortium),
                                 x509.NameAttribute(NameOID.COMMON_NAME, coordinator.host[:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(min(now + dt.timedelta(days=SERVER_VALID_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(server_names(coordinator)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA384())
    )


def _server_cert_problem(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
                         coordinator: CoordinatorSpec, now: dt.datetime) -> str | None:
    """Why an existing server certificate cannot be kept (None: keep it)."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return "not issued by the consortium CA"
    if public_key_fingerprint(cert.public_key()) != public_key_fingerprint(key.public_key()):
        return "does not match server.key"
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "has no subject alternative names"
    wanted = server_names(coordinator)
    if set(sans) != set(wanted):
        return f"names {', '.join(map(_san_text, sans))}, but the coordinator needs {', '.join(map(_san_text, wanted))}"
    # Renew near expiry, unless the CA ends first: a new certificate could not last longer.
    if cert.not_valid_after_utc - now < dt.timedelta(days=RENEW_BEFORE_DAYS) < ca_cert.not_valid_after_utc - now:
        return f"expires {cert.not_valid_after_utc:%Y-%m-%d}"
    return None


def _san_text(name: x509.GeneralName) -> str:
    return str(name.value)


# ---------------------------------------------------------------------------------------------
# provisioning


class CAReport(_Strict):
    status: Literal["created", "unchanged"]
    file: str
    fingerprint: str
    expires: str


class CoordinatorReport(_Strict):
    status: Status
    kit_dir: str
    server_cert_fingerprint: str
    server_cert_expires: str
    server_names: list[str]
    signing_fingerprint: str
    changes: list[str]


class SiteReport(_Strict):
    name: str
    status: Status
    kit_dir: str
    node_fingerprint: str
    signing_fingerprint: str
    previous: dict[str, str] | None = Field(default=None, description="old fingerprints of a rotated site")
    changes: list[str]


class RemovedSite(_Strict):
    name: str
    node_fingerprint: str
    kit_dir: str | None = Field(description="its kit folder, left in place; None if absent")


class ProvisionReport(_Strict):
    consortium: str
    out_dir: str
    superlink_address: str
    control_address: str
    listen_host: str
    ca: CAReport
    coordinator: CoordinatorReport
    sites: list[SiteReport]
    removed_sites: list[RemovedSite]
    warnings: list[str]

    @property
    def changed(self) -> bool:
        return (self.ca.status != "unchanged" or self.coordinator.status != "unchanged"
                or any(s.status != "unchanged" for s in self.sites))


@dataclass
class _Folder:
    """The exact content a kit folder must have: relative path -> (bytes, mode)."""

    path: Path
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)

    def add(self, rel: str, data: bytes, *, private: bool = False) -> None:
        self.files[rel] = (data, 0o600 if private else 0o644)

    def differences(self) -> list[str]:
        if not self.path.exists():
            return ["new"]
        diffs = []
        for rel, (data, mode) in sorted(self.files.items()):
            target = self.path / rel
            if not target.is_file():
                diffs.append(f"{rel} added")
            elif target.read_bytes() != data:
                diffs.append(f"{rel} changed")
            elif stat.S_IMODE(target.stat().st_mode) != mode:
                diffs.append(f"{rel} mode set to {mode:04o}")
        diffs += [f"{rel} removed" for rel in self.present() if rel not in self.files]
        return diffs

    def present(self) -> list[str]:
        return sorted(p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file())


@dataclass
class _Party:
    """Key material of one party, loaded from its previous kit or new."""

    signing_pem: bytes
    signing_pub: bytes
    signing_fp: str
    node_pem: bytes = b""
    node_pub: bytes = b""
    node_fp: str = ""


def provision(spec: ConsortiumSpec, out_dir: Path, *, rotate: Sequence[str] = (),
              now: dt.datetime | None = None) -> ProvisionReport:
    """Create or update every kit under ``out_dir`` for ``spec``; idempotent.

    Existing CA, certificates and keys are reused; ``rotate`` names sites whose node and signing
    keys are replaced. Raises :class:`ProvisionError` (or :class:`KitError`) before any kit is
    changed when an identity would be lost.
    """
    out_dir = Path(out_dir)
    now = now or dt.datetime.now(dt.timezone.utc)
    names = spec.site_names
    unknown = [name for name in rotate if name not in names]
    if unknown:
        raise ProvisionError(f"--rotate {', '.join(unknown)}: not a site of the consortium file "
                             f"(its sites: {', '.join(names) or 'none'})")
    out_dir.mkdir(parents=True, exist_ok=True)
    with _locked(out_dir):
        return _provision(spec, out_dir, set(rotate), now)


def _provision(spec: ConsortiumSpec, out: Path, rotate: set[str], now: dt.datetime) -> ProvisionReport:
    consortium, coordinator = spec.consortium.name, spec.coordinator
    coord_dir = out / "coordinator"
    old_coord = _existing_kit(coord_dir, "coordinator", fix="restore it from a backup (the sites trust its "
                              "signing key), or delete the folder to issue a new coordinator identity")
    sites_dir = out / "sites"
    existing_sites = sorted(p.name for p in sites_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if sites_dir.is_dir() else []
    warnings: list[str] = []

    # -- CA: the trust anchor of every kit, never replaced silently
    ca_cert, ca_key_pem, ca_created = _ca(out / "ca", consortium, now,
                                          kits_exist=old_coord is not None or bool(existing_sites))
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    if ca_cert.not_valid_after_utc - now < dt.timedelta(days=RENEW_BEFORE_DAYS):
        warnings.append(f"the consortium CA expires {ca_cert.not_valid_after_utc:%Y-%m-%d}; plan a new CA "
                        "(delete ca/ and re-provision every party)")

    # -- coordinator: server TLS and signing key
    coord_changes: list[str] = []
    server_key_pem, server_cert_pem = _server_tls(coord_dir, old_coord, coordinator, consortium, ca_cert,
                                                  ca_key_pem, out, now, coord_changes)
    server_cert = x509.load_pem_x509_certificate(server_cert_pem)
    coord_keys = _signing_of(coord_dir, old_coord) if old_coord is not None else _new_party(None)

    # -- sites
    parties: dict[str, _Party] = {}
    old_sites: dict[str, Kit] = {}
    previous: dict[str, dict[str, str]] = {}
    for name in spec.site_names:
        site_dir = sites_dir / name
        old_site = None if name in rotate else _existing_kit(
            site_dir, f"site {name}", fix=f"restore it, or pass --rotate {name} to issue new keys for {name}")
        if name in rotate:
            previous[name] = _previous_fingerprints(name, site_dir, old_coord)
            parties[name] = _new_party(name)
        elif old_site is not None:
            parties[name] = _site_keys_of(site_dir, old_site)
            old_sites[name] = old_site
        elif old_coord is not None and name in old_coord.sites:
            raise ProvisionError(
                f"{site_dir}: missing, but the coordinator kit lists site {name} (node key "
                f"{old_coord.sites[name].node.fingerprint}); restore the folder, or pass --rotate {name} "
                "to issue new keys (then register the new node key with the SuperLink)")
        else:
            parties[name] = _new_party(name)

    # -- desired content of every folder
    superlink, control = coordinator.superlink_address, coordinator.control_address
    ca_ref = FileRef(file="ca.pem", fingerprint=cert_fingerprint(ca_cert))
    server_fp = cert_fingerprint(server_cert)
    ca_folder = _Folder(out / "ca")
    ca_folder.add("ca.pem", ca_pem)
    if ca_key_pem is not None:  # absent when kept offline: the folder then stays as it is
        ca_folder.add("ca.key", ca_key_pem, private=True)

    coord_folder = _Folder(coord_dir)
    for rel, data, private in (("ca.pem", ca_pem, False), ("server.pem", server_cert_pem, False),
                               ("server.key", server_key_pem, True), ("signing.key", coord_keys.signing_pem, True),
                               ("signing.pub", coord_keys.signing_pub, False)):
        coord_folder.add(rel, data, private=private)
    site_entries: dict[str, SiteEntry] = {}
    site_folders: dict[str, _Folder] = {}
    site_kits: dict[str, Kit] = {}
    for name, party in parties.items():
        coord_folder.add(f"nodes/{name}.pub", party.node_pub)
        coord_folder.add(f"sites/{name}.signing.pub", party.signing_pub)
        site_entries[name] = SiteEntry(node=FileRef(file=f"nodes/{name}.pub", fingerprint=party.node_fp),
                                       signing=FileRef(file=f"sites/{name}.signing.pub", fingerprint=party.signing_fp))
        site_kit = Kit(consortium=consortium, role="site", site=name, superlink_address=superlink, ca=ca_ref,
                       server_cert_fingerprint=server_fp,
                       signing=KeyPairRef(private="signing.key", public="signing.pub", fingerprint=party.signing_fp),
                       node=KeyPairRef(private="node.key", public="node.pub", fingerprint=party.node_fp),
                       coordinator_signing=FileRef(file="coordinator.signing.pub", fingerprint=coord_keys.signing_fp))
        site_kits[name] = site_kit
        folder = _Folder(sites_dir / name)
        for rel, data, private in (("ca.pem", ca_pem, False), ("node.key", party.node_pem, True),
                                   ("node.pub", party.node_pub, False), ("signing.key", party.signing_pem, True),
                                   ("signing.pub", party.signing_pub, False),
                                   ("coordinator.signing.pub", coord_keys.signing_pub, False),
                                   (KIT_FILE, site_kit.to_json(), False)):
            folder.add(rel, data, private=private)
        site_folders[name] = folder
    coord_kit = Kit(consortium=consortium, role="coordinator", superlink_address=superlink, control_address=control,
                    listen_host=coordinator.listen, ca=ca_ref, server_cert_fingerprint=server_fp,
                    server=ServerTLSRef(cert="server.pem", key="server.key"),
                    signing=KeyPairRef(private="signing.key", public="signing.pub", fingerprint=coord_keys.signing_fp),
                    sites=site_entries)
    coord_folder.add(KIT_FILE, coord_kit.to_json())

    # -- what changes, in words
    removed = [RemovedSite(name=name, node_fingerprint=entry.node.fingerprint,
                           kit_dir=f"sites/{name}" if (sites_dir / name).is_dir() else None)
               for name, entry in sorted((old_coord.sites if old_coord else {}).items()) if name not in parties]
    if old_coord is not None:
        coord_changes += [c for c in _kit_changes(old_coord, coord_kit) if not c.startswith("server certificate")]
        coord_changes += [f"site {name} added" for name in parties if name not in old_coord.sites]
        coord_changes += [f"site {r.name} removed" for r in removed]
        coord_changes += [f"site {name} keys rotated" for name in parties if name in rotate and name in old_coord.sites]
        coord_changes += [f"site {name} keys changed" for name, entry in site_entries.items()
                          if name in old_coord.sites and name not in rotate and entry != old_coord.sites[name]]
    folders = [ca_folder, *site_folders.values(), coord_folder]  # swap order: the coordinator last
    for folder in folders:
        _refuse_foreign_files(folder)
    diffs = {folder.path: folder.differences() for folder in folders}
    _apply([folder for folder in folders if diffs[folder.path]])

    def status(folder: _Folder, *, rotated: bool = False) -> Status:
        if not diffs[folder.path]:
            return "unchanged"
        if rotated:
            return "rotated"
        return "created" if diffs[folder.path] == ["new"] else "updated"

    def changes(folder: _Folder, old: Kit | None = None, new: Kit | None = None) -> list[str]:
        if diffs[folder.path] in ([], ["new"]):
            return []
        return (_kit_changes(old, new) if old is not None and new is not None else []) or diffs[folder.path]

    return ProvisionReport(
        consortium=consortium, out_dir=str(out), superlink_address=superlink, control_address=control,
        listen_host=coordinator.listen,
        ca=CAReport(status="created" if ca_created else "unchanged", file="ca/ca.pem",
                    fingerprint=cert_fingerprint(ca_cert), expires=f"{ca_cert.not_valid_after_utc:%Y-%m-%d}"),
        coordinator=CoordinatorReport(
            status=status(coord_folder), kit_dir="coordinator", server_cert_fingerprint=server_fp,
            server_cert_expires=f"{server_cert.not_valid_after_utc:%Y-%m-%d}",
            server_names=[_san_text(n) for n in server_names(coordinator)],
            signing_fingerprint=coord_keys.signing_fp,
            changes=coord_changes or changes(coord_folder)),
        sites=[SiteReport(name=name, status=status(site_folders[name], rotated=name in rotate),
                          kit_dir=f"sites/{name}", node_fingerprint=party.node_fp,
                          signing_fingerprint=party.signing_fp, previous=previous.get(name) or None,
                          changes=changes(site_folders[name], old_sites.get(name), site_kits[name]))
               for name, party in parties.items()],
        removed_sites=removed, warnings=warnings)


def _kit_changes(old: Kit, new: Kit) -> list[str]:
    """What changed between two versions of one party's kit, in words (keys and site lists aside)."""
    changes = [f"{label}: {getattr(old, name)} -> {getattr(new, name)}"
               for name, label in (("consortium", "consortium name"), ("superlink_address", "SuperLink address"),
                                   ("control_address", "control address"), ("listen_host", "listen host"))
               if getattr(old, name) != getattr(new, name)]
    if old.ca != new.ca:
        changes.append(f"CA certificate replaced ({new.ca.fingerprint})")
    if old.server_cert_fingerprint != new.server_cert_fingerprint:
        changes.append(f"server certificate replaced ({new.server_cert_fingerprint})")
    if old.coordinator_signing != new.coordinator_signing:
        changes.append("coordinator signing key replaced")
    return changes


def _apply(changed: list[_Folder]) -> None:
    """Stage every changed folder, then swap them in (sites before the coordinator)."""
    staged: list[tuple[Path, Path]] = []
    try:
        for folder in changed:
            final, tmp = partial_dir_for(folder.path.parent, folder.path.name)
            tmp.mkdir(mode=0o700)
            os.chmod(tmp, 0o700)  # the folder holds private keys
            staged.append((tmp, final))
            for rel, (data, mode) in folder.files.items():
                write_bytes_atomic(tmp / rel, data, mode=mode)
    except BaseException:
        for tmp, _ in staged:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    for tmp, final in staged:
        swap_dir_into_place(tmp, final)


def _refuse_foreign_files(folder: _Folder) -> None:
    # A swap replaces the whole folder: a file we do not manage (a database, logs) would vanish.
    if not folder.path.is_dir():
        return
    managed_dirs = {"nodes", "sites"} if folder.path.name == "coordinator" else set()
    foreign = [rel for rel in folder.present()
               if rel not in folder.files and rel.split("/")[0] not in managed_dirs]
    if foreign:
        raise ProvisionError(
            f"{folder.path}: holds file(s) that are not part of a kit: {', '.join(foreign)}; provisioning "
            "replaces the whole folder, so move them elsewhere (keep run state outside kit folders) and re-run")


def _ca(ca_dir: Path, consortium: str, now: dt.datetime, *, kits_exist: bool
        ) -> tuple[x509.Certificate, bytes | None, bool]:
    cert_path, key_path = ca_dir / "ca.pem", ca_dir / "ca.key"
    if not cert_path.is_file():
        if kits_exist:
            raise ProvisionError(
                f"{cert_path}: missing, but kits exist beside it; restore {ca_dir} (ca.pem and ca.key) from a backup. "
                "A new CA would make every issued kit untrusted; to start over, provision into a new folder")
        cert, key = _new_ca(consortium, now)
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return cert, key_pem, True
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError as error:
        raise ProvisionError(f"{cert_path}: not a PEM certificate ({error}); restore it from a backup") from None
    key_pem = key_path.read_bytes() if key_path.is_file() else None  # may be kept offline until needed
    if key_pem is not None:
        key = _load_ec_pem(key_pem, key_path)
        if public_key_fingerprint(key.public_key()) != public_key_fingerprint(cert.public_key()):
            raise ProvisionError(f"{key_path}: does not belong to {cert_path}; restore the matching pair")
    return cert, key_pem, False


def _load_ec_pem(data: bytes, path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise ProvisionError(f"{path}: not an unencrypted PEM private key ({error})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ProvisionError(f"{path}: a {type(key).__name__}, expected an ECDSA key")
    return key


def _server_tls(coord_dir: Path, old: Kit | None, coordinator: CoordinatorSpec, consortium: str,
                ca_cert: x509.Certificate, ca_key_pem: bytes | None, out: Path, now: dt.datetime,
                changes: list[str]) -> tuple[bytes, bytes]:
    """(server.key PEM, server.pem PEM): the existing pair when still right, else a new certificate."""
    key_pem: bytes | None = None
    if old is not None and old.server is not None:
        key_pem = (coord_dir / old.server.key).read_bytes()
        key = _load_ec_pem(key_pem, coord_dir / old.server.key)
        cert_pem = (coord_dir / old.server.cert).read_bytes()
        problem = _server_cert_problem(x509.load_pem_x509_certificate(cert_pem), key, ca_cert, coordinator, now)
        if problem is None:
            return key_pem, cert_pem
        changes.append(f"server certificate reissued: the old one {problem}")
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    if ca_key_pem is None:
        raise ProvisionError(f"{out / 'ca' / 'ca.key'}: needed to issue the coordinator's server certificate but "
                             "absent; put the CA key back (it may be kept offline between runs) and re-run")
    ca_key = _load_ec_pem(ca_key_pem, out / "ca" / "ca.key")
    cert = _new_server_cert(coordinator, consortium, key, ca_cert, ca_key, now)
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def _existing_kit(kit_dir: Path, who: str, *, fix: str) -> Kit | None:
    if not kit_dir.exists():
        return None
    try:
        return load_kit(kit_dir, check_permissions=False)  # a loose mode is repaired, not fatal
    except KitError as error:
        raise ProvisionError(f"the {who} kit cannot be reused: {error}\nFix: {fix}.") from None


def _signing_of(kit_dir: Path, kit: Kit) -> _Party:
    return _Party(signing_pem=(kit_dir / kit.signing.private).read_bytes(),
                  signing_pub=(kit_dir / kit.signing.public).read_bytes(), signing_fp=kit.signing.fingerprint)


def _site_keys_of(kit_dir: Path, kit: Kit) -> _Party:
    assert kit.node is not None  # a site kit always has one (Kit validates roles)
    party = _signing_of(kit_dir, kit)
    party.node_pem = (kit_dir / kit.node.private).read_bytes()  # reused as is: OpenSSH encoding is randomised
    party.node_pub = (kit_dir / kit.node.public).read_bytes()
    party.node_fp = kit.node.fingerprint
    return party


def _new_party(site: str | None) -> _Party:
    signing = keys.generate_signing_key()
    party = _Party(signing_pem=keys.private_key_pem(signing), signing_pub=keys.public_key_pem(signing.public_key()),
                   signing_fp=keys.fingerprint(signing))
    if site is not None:
        node = ec.generate_private_key(NODE_CURVE())
        party.node_pem = node_private_key_bytes(node)
        party.node_pub = node_public_key_line(node.public_key(), comment=site)
        party.node_fp = public_key_fingerprint(node.public_key())
    return party


def _previous_fingerprints(name: str, site_dir: Path, old_coord: Kit | None) -> dict[str, str]:
    # The coordinator's record is what the SuperLink trusts; the site folder may be gone or damaged.
    if old_coord is not None and name in old_coord.sites:
        entry = old_coord.sites[name]
        return {"node_fingerprint": entry.node.fingerprint, "signing_fingerprint": entry.signing.fingerprint}
    try:
        kit = Kit.model_validate_json((site_dir / KIT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    assert kit.node is not None
    return {"node_fingerprint": kit.node.fingerprint, "signing_fingerprint": kit.signing.fingerprint}


def _recover(parent: Path) -> None:
    """Clean up after a run that crashed: drop half-built folders, put back a swapped-out one."""
    for stale in parent.glob(".*.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for old in parent.glob(".*.old-*"):
        final = parent / old.name[1:].rsplit(".old-", 1)[0]
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:  # crashed between the two renames of swap_dir_into_place: the old folder is the kit
            os.replace(old, final)


@contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    """One provisioning run per output folder at a time; stale partial folders are then safe to remove."""
    lock_path = out_dir / ".provision.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ProvisionError(f"{out_dir}: another `fedneuro provision` is running on this folder; "
                                 "wait for it to finish") from None
        for parent in (out_dir, out_dir / "sites"):
            if parent.is_dir():
                _recover(parent)
        yield
    finally:
        os.close(fd)
