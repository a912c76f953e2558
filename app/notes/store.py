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
import sqlite3
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from .db import connect, user_version
from .errors import InvalidNote

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


def _from_row(row: sqlite3.Row) -> Note:
    return Note(id=row["id"], title=row["title"], body=row["body"], created_at=row["created_at"])


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


def list_notes(conn: sqlite3.Connection) -> list[Note]:
    """All notes, oldest first."""
    return [_from_row(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM notes ORDER BY id")]


def get_note(conn: sqlite3.Connection, note_id: int) -> Note | None:
    """The note with this id, or None."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM notes WHERE id = ?", (note_id,)).fetchone()
    return None if row is None else _from_row(row)


def create_note(conn: sqlite3.Connection, title: str, body: str) -> Note:
    """Insert a note stamped with the current UTC time and return it as stored."""
    created_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    # Connections are in autocommit mode (see notes.db.connect): one INSERT is one transaction.
    cursor = conn.execute(
        "INSERT INTO notes (title, body, created_at) VALUES (?, ?, ?)",
        (title, body, created_at),
    )
    return Note(id=int(cursor.lastrowid), title=title, body=body, created_at=created_at)


def count_notes(conn: sqlite3.Connection) -> int:
    """Number of stored notes."""
    return int(conn.execute("SELECT count(*) FROM notes").fetchone()[0])


def write_marks(conn: sqlite3.Connection) -> dict[str, int]:
    """Per counted table, its write high-water mark: the highest row id ever issued.

    The table is AUTOINCREMENT, so SQLite keeps that id in ``sqlite_sequence``,
    updates it in the same transaction as the INSERT (a write that rolls
    back leaves it as it was) and never lowers it (ids are not reused).  The
    mark of the live database minus the mark of a dump is the number of rows
    written since the dump was taken.  0 for a table never written to.
    """
    seq = {name: int(value) for name, value in conn.execute("SELECT name, seq FROM sqlite_sequence")}
    return {table: seq.get(table, 0) for table in COUNTED_TABLES}


def database_stats(db_path: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"database", "schema_version", "notes", "writes"}`` of the database, read-only.

    What ``notes stats`` prints; a missing database is an error, never created.
    """
    conn = connect(db_path, "ro")
    try:
        return {"database": str(db_path), "schema_version": user_version(conn),
                "notes": count_notes(conn), "writes": write_marks(conn)}
    finally:
        conn.close()
