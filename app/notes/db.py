"""Opening the SQLite database, and probing it without changing it.

Every connection goes through an ``file:`` URI so the open mode is explicit:
the web app and the health probe must never create an empty database file
where a real one is missing (that would hide a broken mount behind a
"healthy" empty service); only ``migrate`` creates.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from .errors import DatabaseUnavailable

#: Seconds to wait for a lock held by another connection before giving up.
BUSY_TIMEOUT = 5.0


def database_uri(db_path: str | os.PathLike[str], mode: str, *, immutable: bool = False) -> str:
    """Return a ``file:`` URI for db_path; mode is "ro", "rw" or "rwc" (create)."""
    if mode not in ("ro", "rw", "rwc"):
        raise ValueError(f"unknown SQLite open mode {mode!r}")
    uri = f"{Path(os.path.abspath(db_path)).as_uri()}?mode={mode}"
    if immutable:
        uri += "&immutable=1"
    return uri


def connect(
    db_path: str | os.PathLike[str],
    mode: str = "rw",
    *,
    immutable: bool = False,
    timeout: float = BUSY_TIMEOUT,
) -> sqlite3.Connection:
    """Open db_path in autocommit mode (transactions are explicit) with Row rows.

    Raises DatabaseUnavailable instead of sqlite3.Error so callers report one line.
    """
    try:
        conn = sqlite3.connect(
            database_uri(db_path, mode, immutable=immutable),
            uri=True,
            timeout=timeout,
            isolation_level=None,
            check_same_thread=True,
        )
    except sqlite3.Error as exc:
        raise DatabaseUnavailable(f"cannot open database {db_path}: {exc}") from None
    conn.row_factory = sqlite3.Row
    return conn


def user_version(conn: sqlite3.Connection) -> int:
    """The schema version stored in the database header (PRAGMA user_version)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def read_schema_version(db_path: str | os.PathLike[str]) -> int:
    """Open db_path read-only and return its schema version.

    Raises DatabaseUnavailable when the file is missing or is not a usable
    SQLite database (the sqlite_master read forces the first page to be parsed).
    """
    if not Path(db_path).exists():
        raise DatabaseUnavailable(f"database {db_path} does not exist")
    conn = connect(db_path, "ro")
    try:
        version = user_version(conn)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return version
    except sqlite3.Error as exc:
        raise DatabaseUnavailable(f"database {db_path} is unusable: {exc}") from None
    finally:
        conn.close()


@dataclass(frozen=True)
class Probe:
    """What the health check learned about the database."""

    reachable: bool
    schema_version: int | None
    error: str | None = None


def probe(db_path: str | os.PathLike[str]) -> Probe:
    """Read-only reachability and schema check that never raises."""
    try:
        return Probe(reachable=True, schema_version=read_schema_version(db_path))
    except DatabaseUnavailable as exc:
        return Probe(reachable=False, schema_version=None, error=str(exc))
