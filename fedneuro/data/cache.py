"""On-disk cache of harmonised windows, one entry per recording.

An entry's key is a sha256 over the content of every file the recording is made of, the
preprocessing settings of the study's ``[data]`` section, the backbone's input contract and
the cache/MNE versions; change any of them and the entry is simply not found. Entries are
written to a temporary file, fsynced and renamed into place (then the folder is fsynced),
so a reader sees a whole entry or none. Each entry carries a sha256 of its payload: a
corrupt entry is detected on load, deleted and recomputed by the caller.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedneuro.data.spec import DataSpec, InputContract

__all__ = ["CACHE_FORMAT", "CachedRecording", "WindowCache", "file_digest"]

logger = logging.getLogger(__name__)

#: Bump when preprocessing changes what an entry holds for the same inputs.
CACHE_FORMAT = 1
_MAGIC = b"FNWIN1\n"
# Fields of DataSpec that never change one recording's windows.
_NOT_PREPROCESSING = frozenset(
    {"label_column", "consent_column", "consent_values", "task", "test_fraction"}
)


def file_digest(path: Path) -> str:
    """sha256 of a file's content (hex)."""
    with Path(path).open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def preprocessing_settings(spec: DataSpec) -> dict[str, Any]:
    """The part of ``spec`` that shapes one recording's windows."""
    exclude = set(_NOT_PREPROCESSING)
    if spec.label_source == "participants":
        exclude |= {"classes", "event_column", "event_tmin", "event_tmax"}
    return spec.model_dump(mode="json", exclude=exclude)


@dataclass(frozen=True)
class CachedRecording:
    """One recording's harmonised windows: ``X`` (n, C, T) float32, ``y`` (n,) int64 event
    classes (empty for participant labels) and its report as a JSON-able dict."""

    X: np.ndarray
    y: np.ndarray
    report: dict[str, Any]


class CorruptEntry(Exception):
    pass


class WindowCache:
    """A folder of cache entries (created on first store)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.writable = True  # cleared by the caller after a failed store: read-only from then on

    def key(
        self,
        files: Sequence[Path],
        spec: DataSpec,
        contract: InputContract,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """The entry key of a recording made of ``files`` (their content is hashed)."""
        import mne

        material = {
            "format": CACHE_FORMAT,
            "mne": mne.__version__,
            "files": [[Path(f).name, file_digest(f)] for f in files],
            "spec": preprocessing_settings(spec),
            "contract": contract.model_dump(mode="json"),
            "extra": dict(extra or {}),
        }
        blob = json.dumps(material, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.win"

    def load(self, key: str) -> CachedRecording | None:
        """The entry, or None when absent; a corrupt entry is deleted (logged) -> None."""
        path = self.path(key)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return _decode(blob)
        except CorruptEntry as err:
            logger.warning("cache entry %s is corrupt (%s): discarded, recomputing", path, err)
            path.unlink(missing_ok=True)
            return None

    def store(self, key: str, entry: CachedRecording) -> Path:
        """Write ``entry`` atomically (temp file + fsync + rename + folder fsync)."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = _encode(entry)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return path


def _encode(entry: CachedRecording) -> bytes:
    X = np.ascontiguousarray(entry.X, dtype=np.float32)
    y = np.ascontiguousarray(entry.y, dtype=np.int64)
    payload = X.tobytes() + y.tobytes()
    header = json.dumps(
        {
            "X": list(X.shape),
            "y": list(y.shape),
            "sha256": hashlib.sha256(payload).hexdigest(),
            "report": entry.report,
        },
        sort_keys=True,
    ).encode()
    return _MAGIC + struct.pack("<Q", len(header)) + header + payload


def _decode(blob: bytes) -> CachedRecording:
    if not blob.startswith(_MAGIC) or len(blob) < len(_MAGIC) + 8:
        raise CorruptEntry("bad magic")
    (n_header,) = struct.unpack_from("<Q", blob, len(_MAGIC))
    start = len(_MAGIC) + 8
    try:
        header = json.loads(blob[start : start + n_header])
        x_shape, y_shape = tuple(header["X"]), tuple(header["y"])
    except (ValueError, KeyError, TypeError) as err:
        raise CorruptEntry(f"unreadable header: {err}") from None
    payload = memoryview(blob)[start + n_header :]
    n_x = int(np.prod(x_shape)) * 4
    if len(payload) != n_x + int(np.prod(y_shape)) * 8:
        raise CorruptEntry(f"payload is {len(payload)} bytes, header says otherwise")
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise CorruptEntry("payload checksum mismatch")
    X = np.frombuffer(payload[:n_x], dtype=np.float32).reshape(x_shape)
    y = np.frombuffer(payload[n_x:], dtype=np.int64).reshape(y_shape)
    return CachedRecording(X=X, y=y, report=header["report"])
