"""File helpers every dump shares: a content digest, durable renames, files that land whole."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")


def sha256(path: Path) -> str:
    """The file's sha256, read in 1 MiB chunks (dumps can be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_path(path: Path) -> None:
    """fsync a file or directory so a rename is durable across a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(target: Path, fill: Callable[[Path], T]) -> T:
    """Let ``fill(tmp)`` write a temporary file beside ``target``; fsync it, rename it over
    ``target``, fsync the folder; what ``fill`` returned.

    A dump is whole under its name or absent: a crash or an error while writing
    leaves no partial file anyone could later restore from.
    """
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        result = fill(tmp)
        fsync_path(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(target.parent)
    return result
