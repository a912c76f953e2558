"""SQLite: consistent dumps of the live database, their verification, and restore.

A release pipeline dumps before migrating and restores on a failed upgrade, so
a dump is only worth something once it is proven restorable.  Hence:

* copies go through SQLite's online backup API, never a file copy: the
  result is a consistent snapshot even while the service is writing;
* every file is written under a temporary name in the destination
  directory, fsynced, then renamed, so a crash leaves either the old file or
  the complete new one, never a torn one;
* ``verify_dump`` restores into a scratch database and runs
  ``PRAGMA integrity_check`` there, instead of trusting the file's presence.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .db import SQLITE, Connection, DatabaseError, Target, connect
from .errors import DatabaseUnavailable, DumpError
from .files import sha256, write_atomically
from .store import snapshot

SQLITE_MAGIC = b"SQLite format 3\x00"
HEADER_SIZE = 100
#: SQLite primary result codes meaning "another connection holds the lock".
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6


def dump(db_path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path:
    """Write a consistent snapshot of db_path to out_path (atomically); return out_path.

    The source is opened read-only: dumping a missing database is an error,
    not a silently created empty file.  The dump is private (mode 0600).
    """
    source, out = Path(db_path), Path(out_path)
    if not source.is_file():
        raise DumpError(f"cannot dump {source}: database does not exist")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DumpError(f"cannot create directory {out.parent}: {exc.strerror or exc}") from None
    write_atomically(out, lambda tmp: _backup_copy(source, tmp, source_is_dump=False))
    return out


def verify_dump(dump_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Prove dump_path restorable; return {path, size, sha256, backend, schema_version, notes,
    tables, writes, migrations, integrity} (``store.snapshot`` of the restored copy).

    Raises DumpError naming the file for a missing, truncated, corrupted or
    non-SQLite file, or an SQLite file that is not a notes database.
    """
    path = Path(dump_path)
    if not path.exists():
        raise DumpError(f"dump {path}: not found")
    if not path.is_file():
        raise DumpError(f"dump {path}: not a regular file")
    size = path.stat().st_size
    _check_header(path, size)
    digest = sha256(path)

    with tempfile.TemporaryDirectory(prefix="notes-verify-") as scratch:
        scratch_db = Path(scratch) / "verify.db"
        _backup_copy(path, scratch_db, source_is_dump=True)
        raw = connect(scratch_db, "ro")
        try:
            _check_integrity(raw, path, full=True)
            facts = snapshot(Connection(raw, Target(SQLITE, path=scratch_db)))
        except sqlite3.Error as exc:
            raise DumpError(f"dump {path}: unreadable: {exc}") from None
        except DatabaseError as exc:
            raise DumpError(f"dump {path}: not a notes database ({exc})") from None
        finally:
            raw.close()
    if facts["schema_version"] < 1:
        raise DumpError(f"dump {path}: not a notes database (schema version 0)")
    return {"path": str(path.resolve()), "size": size, "sha256": digest, "backend": SQLITE,
            **facts, "integrity": "ok"}


def restore(
    dump_path: str | os.PathLike[str],
    db_path: str | os.PathLike[str],
    *,
    lock_timeout: float = 2.0,
) -> dict[str, Any]:
    """Verify dump_path, then atomically replace db_path with its contents.

    Returns the verification result plus ``"database"`` (the restored path).
    Refuses while another process holds a lock on the live database (stop the
    service first).  The new file keeps the old one's owner and mode, or takes
    its directory's owner when there was no database, so that a restore run as
    root leaves a database the service user can still write.
    """
    info = verify_dump(dump_path)
    target = Path(db_path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DumpError(f"cannot create directory {target.parent}: {exc.strerror or exc}") from None

    def build(tmp: Path) -> None:
        _backup_copy(Path(dump_path), tmp, source_is_dump=True)
        conn = connect(tmp, "ro")
        try:
            _check_integrity(conn, tmp, full=False)
        finally:
            conn.close()
        _copy_ownership(tmp, target)

    with _exclusive_lock(target, lock_timeout):
        write_atomically(target, build)
    return {**info, "database": str(target)}


def _backup_copy(source: Path, destination: Path, *, source_is_dump: bool) -> None:
    """Copy source into destination (an empty or fresh file) with Connection.backup."""
    label = "dump" if source_is_dump else "database"
    try:
        # A dump is never written to while read: immutable skips locking and journals.
        src = connect(source, "ro", immutable=source_is_dump)
    except DatabaseUnavailable as exc:
        raise DumpError(f"{label} {source}: {exc}") from None
    try:
        dest = sqlite3.connect(destination, isolation_level=None)
        try:
            src.backup(dest)
        finally:
            dest.close()
    except sqlite3.Error as exc:
        raise DumpError(f"{label} {source}: cannot copy: {exc}") from None
    finally:
        src.close()


def _check_header(path: Path, size: int) -> None:
    """Reject non-SQLite and truncated files from the 100-byte header alone.

    SQLite itself would read a truncated file's missing pages as zeros and may
    report it as merely "malformed"; the header's page count lets us say
    "truncated" with the expected size.
    """
    with path.open("rb") as fh:
        header = fh.read(HEADER_SIZE)
    if not header:
        raise DumpError(f"dump {path}: empty file, not an SQLite database")
    if len(header) < len(SQLITE_MAGIC) and SQLITE_MAGIC.startswith(header):
        raise DumpError(f"dump {path}: truncated ({size} bytes, shorter than an SQLite header)")
    if not header.startswith(SQLITE_MAGIC):
        raise DumpError(f"dump {path}: not an SQLite database (bad header)")
    if len(header) < HEADER_SIZE:
        raise DumpError(f"dump {path}: truncated ({size} bytes, shorter than an SQLite header)")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise DumpError(f"dump {path}: corrupted header (page size {page_size})")
    change_counter = header[24:28]
    page_count = int.from_bytes(header[28:32], "big")
    valid_for = header[92:96]
    if page_count and valid_for == change_counter:
        expected = page_count * page_size
        if size < expected:
            raise DumpError(f"dump {path}: truncated ({size} bytes, header says {expected})")
    if size % page_size:
        raise DumpError(f"dump {path}: truncated or corrupted ({size} bytes is not a multiple of page size {page_size})")


def _check_integrity(conn: sqlite3.Connection, path: Path, *, full: bool) -> None:
    """Run integrity_check (or the cheaper quick_check) and raise on anything but "ok"."""
    pragma = "integrity_check" if full else "quick_check"
    rows = [str(row[0]) for row in conn.execute(f"PRAGMA {pragma}")]
    if rows == ["ok"]:
        return
    # One result row can hold several newline-separated problems: report one line.
    problems = [
        line.strip()
        for row in rows
        for line in row.splitlines()
        if line.strip() and not line.startswith("*** in database")
    ] or ["no result"]
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    raise DumpError(f"{path}: {pragma} failed: {problems[0]}{more}")


def _copy_ownership(tmp: Path, target: Path) -> None:
    """Give tmp the owner/mode of target, or of target's directory if target is new."""
    if target.exists():
        st = target.stat()
        mode = stat.S_IMODE(st.st_mode)
    else:
        st = target.parent.stat()
        mode = 0o640
    os.chmod(tmp, mode)
    if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
        try:
            os.chown(tmp, st.st_uid, st.st_gid)
        except PermissionError:
            pass  # not root: the file stays ours, which is who will use it


@contextmanager
def _exclusive_lock(db_path: Path, timeout: float) -> Iterator[None]:
    """Hold an EXCLUSIVE lock on the live database while it is replaced.

    Fails if another process is using it.  A database that cannot be locked
    because it is not a valid SQLite file (the usual reason to restore) is
    replaced without a lock.
    """
    if not db_path.exists():
        yield
        return
    conn = connect(db_path, "rw", timeout=timeout)
    try:
        try:
            conn.execute("BEGIN EXCLUSIVE")
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
                raise DumpError(
                    f"database {db_path} is in use ({exc}); stop the notes service before restoring"
                ) from None
        yield
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()
