"""Writes that are never seen half-done: temp file or folder, fsync, rename into place.

Standard library only, so every layer can use it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def write_bytes_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data``; a reader sees the old file or the new one, never a part.

    ``mode`` applies from creation (0o600 for private keys: never briefly world-readable).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        os.fchmod(fd, mode)  # the umask must not widen or narrow what was asked for
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_files_atomic(files: list[tuple[Path, bytes]]) -> None:
    """Write every file to a temporary sibling first, then rename them into place in order.

    A failure while writing (disk full, read-only folder) leaves every previous file as it was
    and no temporary file behind. Renames need no space, so only a crash between them can mix
    old and new files: make the last file a commit point that names the others' hashes.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            staged.append((tmp, path))
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)


def partial_dir_for(out_dir: Path, name: str) -> tuple[Path, Path]:
    """(final folder, empty temporary sibling to build it in) for :func:`swap_dir_into_place`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / name, tmp


def swap_dir_into_place(tmp: Path, final: Path) -> None:
    """Rename the finished folder ``tmp`` to ``final``, replacing an existing one only then."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    had_old = final.exists()
    if had_old:
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if had_old:
            os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)
