"""Ed25519 signing keys of sites and coordinators: create, store, load, fingerprint, sign, verify.

PEM files (PKCS#8 private, SubjectPublicKeyInfo public) so that anyone can check a signature
with stock tools (``openssl pkeyutl -verify``) without fedneuro.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedneuro.atomic import write_bytes_atomic


class KeyFileError(ValueError):
    """A key file that is missing, unreadable or of the wrong kind."""


def generate_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def write_signing_key(private_path: Path, key: Ed25519PrivateKey, public_path: Path | None = None) -> Path:
    """Write the private key with 0600 permissions and its public half beside it (``.pub``)."""
    private_path = Path(private_path)
    write_bytes_atomic(private_path, private_key_pem(key), mode=0o600)
    public_path = Path(public_path) if public_path is not None else private_path.with_suffix(".pub")
    write_bytes_atomic(public_path, public_key_pem(key.public_key()))
    return public_path


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise KeyFileError(f"{path}: not an unencrypted PEM private key ({error})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: a {type(key).__name__}, but signing keys must be Ed25519")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    return public_key_from_pem(_read(path, "public key"), source=str(path))


def public_key_from_pem(data: bytes, *, source: str = "public key") -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise KeyFileError(f"{source}: not a PEM public key ({error})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{source}: a {type(key).__name__}, but signing keys must be Ed25519")
    return key


def fingerprint(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """``sha256:<hex>`` over the DER SubjectPublicKeyInfo, for out-of-band confirmation."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def sign(key: Ed25519PrivateKey, message: bytes) -> bytes:
    return key.sign(message)


def verify(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: {what} file not found") from None
    except OSError as error:
        raise KeyFileError(f"{path}: cannot read the {what} ({error.strerror})") from None
