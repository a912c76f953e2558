"""Local files: written atomically, digested by Portage's own checksum code.

Every file releaser writes on this machine (tarballs, release records, copies
fetched from a host, the sandbox's pidfiles and configuration) appears under
its final name only complete: it is written under a hidden temporary name in
the same folder, flushed to disk, and renamed over the final name
(``atomic_file``).  A crash leaves the old file or the new one, never half of
one, and a killed run's temporary is a hidden ``.NAME.releaser-*.tmp``.

Digests are what Gentoo Manifests carry (BLAKE2B and SHA512, with the size),
computed by ``portage.checksum``, so a digest releaser records is the one
Portage verifies on every node; the backup code's SHA256 and SHA512 come from
the same place.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

#: The hashes of a Gentoo Manifest's DIST line.
MANIFEST_HASHES = ("BLAKE2B", "SHA512")


@dataclass(frozen=True)
class Digests:
    """Size and Manifest hashes of one file."""

    size: int
    blake2b: str
    sha512: str

    def as_dict(self) -> dict:
        return {"size": self.size, "blake2b": self.blake2b, "sha512": self.sha512}


def file_digests(path: Path) -> Digests:
    """Size, BLAKE2B and SHA512 of a local file, read once."""
    from portage.checksum import perform_multiple_checksums

    found = _portage(perform_multiple_checksums, path, [*MANIFEST_HASHES, "size"])
    return Digests(int(found["size"]), found["BLAKE2B"], found["SHA512"])


def file_digest(path: Path, algo: str) -> str:
    """The ``algo`` (``sha256``, ``sha512``, ``blake2b``...) hex digest of a local file."""
    from portage.checksum import perform_checksum

    return _portage(perform_checksum, path, algo.upper())[0]


def text_digest(text: str, algo: str = "sha512") -> str:
    """The digest of ``text`` as written to a file (UTF-8)."""
    from portage.checksum import checksum_str

    return checksum_str(text.encode("utf-8"), algo.upper())


def _portage(function, path: Path, hashes):
    """Portage's checksum call, its missing-file and permission errors as OSError.

    Portage is imported by the digest functions only: writing files (the
    sandbox's ``rc-service`` stand-in does, at every call) need not load it.
    """
    import portage.exception

    try:
        return function(str(path), hashes)
    except portage.exception.FileNotFound:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path)) from None
    except portage.exception.PermissionDenied:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path)) from None


@contextmanager
def atomic_file(path: Path, mode: str = "wb", *, perm: int | None = None,
                encoding: str | None = None) -> Iterator[IO]:
    """An open temporary file that becomes ``path`` when the block ends without error.

    The data is flushed and fsynced, ``perm`` (if given) applied, then the
    file renamed over ``path``; on any exception the temporary is removed and
    ``path`` is untouched.  The parent folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.releaser-{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if perm is not None:
            os.chmod(tmp, perm)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: str | bytes, *, perm: int | None = None) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8), atomically."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_file(path, "wb", perm=perm) as handle:
        handle.write(data)


def copy_atomic(source: Path, dest: Path) -> None:
    """Copy ``source`` to ``dest``, atomically."""
    with open(source, "rb") as src, atomic_file(dest, "wb") as dst:
        shutil.copyfileobj(src, dst)


__all__ = ["Digests", "MANIFEST_HASHES", "atomic_file", "copy_atomic", "file_digest",
           "file_digests", "text_digest", "write_atomic"]
