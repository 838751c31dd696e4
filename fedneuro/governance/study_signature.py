"""The coordinator's signature on a study file: ``STUDY.sig`` beside ``STUDY``.

Flower's Control API is unauthenticated, so a study arriving at a site proves nothing about
who wrote it. The coordinator signs the study's digest (:meth:`fedneuro.study.Study.digest`,
canonical JSON of every setting, ``[governance]`` included) with its Ed25519 key; a site
checks it against the coordinator keys its policy trusts before a person reviews the plan.

The signed message is ``b"fedneuro-study-v1\\n"`` + canonical JSON of ``{signed_at,
study_digest, study_id}``: the prefix keeps a study signature from ever verifying as another
kind of fedneuro signature made with the same key, and signing the time too means it cannot
be edited unnoticed.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timezone
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedneuro.atomic import write_bytes_atomic
from fedneuro.governance.keys import fingerprint, sign, verify
from fedneuro.study import Study

__all__ = [
    "StudySignature",
    "StudySignatureError",
    "read_study_signature",
    "sign_study",
    "signature_path_for",
    "verify_study_signature",
    "write_study_signature",
]

STUDY_DOMAIN = b"fedneuro-study-v1\n"
_FINGERPRINT = r"^sha256:[0-9a-f]{64}$"


class StudySignatureError(ValueError):
    """A study signature that is missing, malformed, untrusted, for another study, or forged."""


class StudySignature(BaseModel):
    """``STUDY.sig``: who signed which study digest, when."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    study_id: str
    study_digest: str = Field(pattern=r"^[0-9a-f]{64}$", description="Study.digest() of the signed study")
    signer: str = Field(pattern=_FINGERPRINT, description="fingerprint of the coordinator's public key")
    signed_at: str = Field(description="ISO 8601 UTC, e.g. 2025-01-31T12:00:00Z")
    signature: str = Field(min_length=1, description="base64 Ed25519 signature over the domain-separated message")


def _message(study_id: str, study_digest: str, signed_at: str) -> bytes:
    body = {"signed_at": signed_at, "study_digest": study_digest, "study_id": study_id}
    return STUDY_DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign_study(study: Study, key: Ed25519PrivateKey, now: datetime) -> StudySignature:
    if now.tzinfo is None:
        raise ValueError(f"now ({now}) needs a time zone; pass datetime.now(timezone.utc)")
    signed_at = now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = study.digest()
    signature = sign(key, _message(study.study.id, digest, signed_at))
    return StudySignature(study_id=study.study.id, study_digest=digest, signer=fingerprint(key), signed_at=signed_at,
                          signature=base64.b64encode(signature).decode("ascii"))


def verify_study_signature(study: Study, signature: StudySignature, trusted_keys: list[Ed25519PublicKey]) -> str:
    """The signer's fingerprint if a trusted key signed exactly this study; else :class:`StudySignatureError`."""
    by_fingerprint = {fingerprint(k): k for k in trusted_keys}
    key = by_fingerprint.get(signature.signer)
    if key is None:
        trusted = ", ".join(sorted(by_fingerprint)) or "none configured"
        raise StudySignatureError(
            f"untrusted key: the study was signed by {signature.signer}, which is not a trusted coordinator key "
            f"(trusted: {trusted}); confirm the coordinator's fingerprint out of band and add its public key to "
            "trusted_coordinator_keys"
        )
    digest = study.digest()
    if signature.study_digest != digest:
        raise StudySignatureError(
            f"digest mismatch: the signature is for study digest {signature.study_digest[:16]}…, but this study's "
            f"digest is {digest[:16]}…: the study was changed after the coordinator signed it; ask the coordinator "
            "to sign the version it means you to run"
        )
    try:
        raw = base64.b64decode(signature.signature, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if not verify(key, raw, _message(signature.study_id, signature.study_digest, signature.signed_at)):
        raise StudySignatureError(
            f"bad signature: the signature does not verify with key {signature.signer}: the .sig file was edited "
            "(study id, time or signature) or forged"
        )
    return signature.signer


def signature_path_for(study_path: Path) -> Path:
    """``my-study.toml`` → ``my-study.toml.sig``."""
    return Path(study_path).with_name(Path(study_path).name + ".sig")


def write_study_signature(path: Path, signature: StudySignature) -> None:
    write_bytes_atomic(Path(path), (signature.model_dump_json(indent=2) + "\n").encode())


def read_study_signature(path: Path) -> StudySignature:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudySignatureError(
            f"{path}: no study signature; ask the coordinator for the .sig file (`fedneuro study sign`)"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise StudySignatureError(f"{path}: cannot read the study signature ({error})") from None
    try:
        return StudySignature.model_validate_json(text)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(map(str, first["loc"])) or "(file)"
        raise StudySignatureError(f"{path}: not a study signature: {where}: {first['msg']}") from None
