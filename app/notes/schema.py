"""Database schema: an ordered list of migrations and the code that applies them.

The schema version lives in the database itself (``PRAGMA user_version``), so
a database restored from an older dump, or kept after a rollback of the code,
says which migrations it has.  Releases extend the schema by appending one
``(version, SQL)`` entry to MIGRATIONS; SCHEMA_VERSION follows automatically.
Migrations only go up: a database ahead of the code is left untouched and
served (a rollback without a data restore must keep working).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from .db import connect, user_version
from .errors import DatabaseUnavailable, MigrationError

MIGRATIONS = [
    (1, """
CREATE TABLE notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    body TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);
"""),
]


def check_migrations(migrations: Sequence[tuple[int, str]]) -> int:
    """Validate that versions are 1, 2, 3... in order; return the highest.

    Run at import time: a mis-edited list must fail loudly before it touches
    any database, not half-way through an upgrade.
    """
    if not migrations:
        raise ValueError("MIGRATIONS is empty")
    for expected, (version, sql) in enumerate(migrations, start=1):
        if version != expected:
            raise ValueError(f"MIGRATIONS out of order: expected version {expected}, found {version}")
        if not isinstance(sql, str) or not sql.strip():
            raise ValueError(f"migration {version} has no SQL")
    return migrations[-1][0]


SCHEMA_VERSION = check_migrations(MIGRATIONS)


def split_statements(sql: str) -> Iterator[str]:
    """Yield complete SQL statements (trigger bodies included) from a script.

    Needed because ``executescript`` commits any open transaction first, which
    would break the all-or-nothing upgrade.
    """
    buffer = ""
    pieces = sql.split(";")
    for index, piece in enumerate(pieces):
        buffer += piece if index == len(pieces) - 1 else piece + ";"
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""
    leftover = [ln for ln in buffer.splitlines() if ln.strip() and not ln.strip().startswith("--")]
    if leftover:
        raise ValueError(f"incomplete SQL statement at end of migration: {buffer.strip()[:60]!r}")


def migrate(
    db_path: str | os.PathLike[str],
    migrations: Sequence[tuple[int, str]] = MIGRATIONS,
) -> tuple[int, int]:
    """Bring db_path up to the newest migration; return (version before, version after).

    Creates the file and its parent directory if needed.  All pending
    migrations run in one IMMEDIATE transaction, so concurrent callers
    serialise and a failure leaves the database exactly as it was.
    """
    target = check_migrations(migrations)
    path = Path(db_path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseUnavailable(f"cannot create directory {path.parent}: {exc.strerror or exc}") from None

    conn = connect(path, "rwc")
    try:
        try:
            conn.execute("BEGIN IMMEDIATE")
            current = user_version(conn)
        except sqlite3.Error as exc:
            raise DatabaseUnavailable(f"database {path} is unusable: {exc}") from None
        if current >= target:
            conn.execute("ROLLBACK")
            return current, current
        applying = current
        try:
            for version, sql in migrations:
                if version <= current:
                    continue
                applying = version
                for statement in split_statements(sql):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {int(version)}")
            conn.execute("COMMIT")
        except (sqlite3.Error, ValueError) as exc:
            if conn.in_transaction:  # some errors (disk full, I/O) already rolled back
                conn.execute("ROLLBACK")
            raise MigrationError(
                f"migration {applying} failed on {path}: {exc}; rolled back, database left at schema {current}"
            ) from None
        return current, target
    finally:
        conn.close()
