"""Reading and writing notes: the only module that knows the notes table's columns.

Columns are named explicitly in every query so that a database one migration
ahead of this code (after a code rollback) still works, as long as new columns
have defaults, which is the rule for migrations.

Writes are counted by a high-water mark per table (``write_marks``), so a
release tool can say what restoring a dump would lose: the rows written
since the dump, not only the dump's own row count.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from .db import POSTGRESQL, SQLITE, Connection, Target, as_target, open_database
from .errors import InvalidNote
from .schema import applied_migrations, schema_version

MAX_TITLE_LENGTH = 200
MAX_BODY_LENGTH = 100_000


@dataclass(frozen=True)
class Note:
    """One stored note, as served over JSON."""

    id: int
    title: str
    body: str
    created_at: str

    def to_json(self) -> dict[str, Any]:
        """The JSON object the API returns for this note."""
        return asdict(self)


_COLUMNS = "id, title, body, created_at"

#: Tables whose writes the app counts (``write_marks``).
COUNTED_TABLES = ("notes",)


def _from_row(row: Any) -> Note:
    return Note(id=int(row[0]), title=row[1], body=row[2], created_at=row[3])


def parse_new_note(payload: object) -> tuple[str, str]:
    """Validate a client's ``{"title": ..., "body": ...}``; return (title, body).

    Raises InvalidNote with a message fit to send back to the client.
    """
    if not isinstance(payload, dict):
        raise InvalidNote("request body must be a JSON object with 'title' and 'body'")
    title = payload.get("title")
    body = payload.get("body", "")
    if not isinstance(title, str) or not title.strip():
        raise InvalidNote("'title' must be a non-empty string")
    if len(title) > MAX_TITLE_LENGTH:
        raise InvalidNote(f"'title' must be at most {MAX_TITLE_LENGTH} characters")
    if not isinstance(body, str):
        raise InvalidNote("'body' must be a string")
    if len(body) > MAX_BODY_LENGTH:
        raise InvalidNote(f"'body' must be at most {MAX_BODY_LENGTH} characters")
    return title.strip(), body


def list_notes(conn: Connection) -> list[Note]:
    """All notes, oldest first."""
    return [_from_row(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM notes ORDER BY id").fetchall()]


def get_note(conn: Connection, note_id: int) -> Note | None:
    """The note with this id, or None."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM notes WHERE id = ?", (note_id,)).fetchone()
    return None if row is None else _from_row(row)


def create_note(conn: Connection, title: str, body: str) -> Note:
    """Insert a note stamped with the current UTC time and return it as stored."""
    created_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    # Connections are in autocommit mode (see notes.db): one INSERT is one transaction.
    sql = "INSERT INTO notes (title, body, created_at) VALUES (?, ?, ?)"
    if conn.backend == POSTGRESQL:
        new_id = conn.execute(sql + " RETURNING id", (title, body, created_at)).fetchone()[0]
    else:
        new_id = conn.execute(sql, (title, body, created_at)).lastrowid
    return Note(id=int(new_id), title=title, body=body, created_at=created_at)


def count_notes(conn: Connection) -> int:
    """Number of stored notes."""
    return int(conn.scalar("SELECT count(*) FROM notes"))


def table_counts(conn: Connection) -> dict[str, int]:
    """Rows per table of the database (what a dump's restore must reproduce)."""
    return {table: int(conn.scalar(f"SELECT count(*) FROM {conn.quote(table)}"))
            for table in conn.tables()}


def write_marks(conn: Connection) -> dict[str, int]:
    """Per counted table, its write high-water mark: the highest row id ever issued.

    The number only grows and is kept by the database itself, so the mark of
    the live database minus the mark of a dump is the number of rows written
    since the dump was taken (0 for a table never written to):

    * SQLite: the AUTOINCREMENT id in ``sqlite_sequence``, moved in the same
      transaction as the INSERT and never lowered;
    * PostgreSQL: the identity column's sequence (``last_value``; a sequence
      is not transactional, so an INSERT that rolled back counts too: the
      figure is an upper bound);
    * MariaDB: InnoDB's next AUTO_INCREMENT value minus one (persistent since
      10.2.4, kept by mariadb-dump; a rolled back INSERT counts too).

    pg_dump and mariadb-dump carry these values, so a restored dump keeps its mark.
    """
    return {table: _mark(conn, table) for table in COUNTED_TABLES}


def _mark(conn: Connection, table: str) -> int:
    if conn.backend == SQLITE:
        value = conn.scalar("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,))
        return int(value or 0)
    if conn.backend == POSTGRESQL:
        seq = conn.scalar("SELECT pg_get_serial_sequence(?, 'id')", (table,))
        row = conn.execute(f"SELECT last_value, is_called FROM {seq}").fetchone()
        return int(row[0]) if row[1] else 0
    value = conn.scalar("SELECT AUTO_INCREMENT FROM information_schema.tables WHERE "
                        "table_schema = DATABASE() AND table_name = ?", (table,))
    return max(int(value or 1) - 1, 0)


def snapshot(conn: Connection) -> dict[str, Any]:
    """``{"schema_version", "notes", "tables", "writes", "migrations"}`` of an open database."""
    return {"schema_version": schema_version(conn), "notes": count_notes(conn),
            "tables": table_counts(conn), "writes": write_marks(conn),
            "migrations": applied_migrations(conn)}


def database_stats(database: "Target | str | os.PathLike[str]") -> dict[str, Any]:
    """``{"database", "backend", "schema_version", "notes", "tables", "writes", "migrations"}``
    of the database, read-only.

    What ``notes stats`` prints; a missing database is an error, never created.
    """
    target = as_target(database)
    conn = open_database(target, "ro")
    try:
        return {"database": str(target), "backend": target.backend, **snapshot(conn)}
    finally:
        conn.close()
