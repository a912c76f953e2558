"""Dumps via the online backup API, their verification, and restore."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest

from notes.backup import restore, verify_dump
from notes.backup_sqlite import dump
from notes.backup_sqlite import restore as restore_sqlite
from notes.errors import DumpError
from notes.schema import SCHEMA_VERSION


def add_notes(db: Path, *titles: str) -> None:
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO notes (title, body, created_at) VALUES (?, '', '2024-01-01T00:00:00Z')",
            [(t,) for t in titles],
        )
    conn.close()


def titles(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [row[0] for row in conn.execute("SELECT title FROM notes ORDER BY id")]
    finally:
        conn.close()


@pytest.fixture
def dumped(migrated_db: Path, tmp_path: Path) -> Path:
    add_notes(migrated_db, "one", "two", "three")
    return dump(migrated_db, tmp_path / "backups" / "notes-1.db")


def test_dump_verify_round_trip(dumped: Path) -> None:
    info = verify_dump(dumped)
    assert info == {
        "path": str(dumped.resolve()),
        "size": dumped.stat().st_size,
        "sha256": hashlib.sha256(dumped.read_bytes()).hexdigest(),
        "backend": "sqlite",
        "schema_version": SCHEMA_VERSION,
        "notes": 3,
        "tables": {"notes": 3, "schema_migrations": SCHEMA_VERSION},
        "writes": {"notes": 3},
        "migrations": [{"version": 1, "kind": "additive"}],
        "integrity": "ok",
    }
    assert titles(dumped) == ["one", "two", "three"]


def test_the_write_mark_counts_the_rows_written_since_a_dump(dumped: Path, migrated_db: Path) -> None:
    """The mark only grows: deletes and writes that roll back do not lower it or count."""
    from notes.store import database_stats

    add_notes(migrated_db, "four", "five")
    with sqlite3.connect(migrated_db) as conn:
        conn.execute("DELETE FROM notes WHERE title = 'one'")
    conn.close()
    conn = sqlite3.connect(migrated_db, isolation_level=None)
    conn.execute("BEGIN")
    conn.execute("INSERT INTO notes (title, body, created_at) VALUES ('gone', '', 'x')")
    conn.execute("ROLLBACK")
    conn.close()
    live = database_stats(migrated_db)
    assert (live["notes"], live["writes"]) == (4, {"notes": 5})
    assert live["writes"]["notes"] - verify_dump(dumped)["writes"]["notes"] == 2


def test_dump_is_private_and_leaves_no_temp_files(dumped: Path) -> None:
    assert oct(dumped.stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in dumped.parent.iterdir()) == ["notes-1.db"]


def test_dump_is_consistent_while_a_writer_holds_a_transaction(migrated_db: Path, tmp_path: Path) -> None:
    add_notes(migrated_db, "committed")
    writer = sqlite3.connect(migrated_db, isolation_level=None)
    writer.execute("BEGIN")
    writer.execute("INSERT INTO notes (title, body, created_at) VALUES ('uncommitted', '', 'x')")
    try:
        out = dump(migrated_db, tmp_path / "live.db")
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert verify_dump(out)["notes"] == 1
    assert titles(out) == ["committed"]


def test_dump_of_a_missing_database_fails_without_creating_it(db_path: Path, tmp_path: Path) -> None:
    with pytest.raises(DumpError, match="does not exist"):
        dump(db_path, tmp_path / "out.db")
    assert not db_path.exists()
    assert not (tmp_path / "out.db").exists()


def test_dump_replaces_an_existing_file_atomically(migrated_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.db"
    out.write_bytes(b"old")
    dump(migrated_db, out)
    assert verify_dump(out)["notes"] == 0


@pytest.mark.parametrize("keep", [50, 4096, 8192])
def test_verify_rejects_a_truncated_dump(dumped: Path, tmp_path: Path, keep: int) -> None:
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(dumped.read_bytes()[:keep])
    with pytest.raises(DumpError, match="truncated") as info:
        verify_dump(truncated)
    assert str(truncated) in str(info.value)


def test_verify_rejects_a_garbage_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(8192))
    with pytest.raises(DumpError, match="not an SQLite database"):
        verify_dump(garbage)


def test_verify_rejects_an_empty_or_missing_file(tmp_path: Path) -> None:
    (tmp_path / "empty.db").write_bytes(b"")
    with pytest.raises(DumpError, match="empty file"):
        verify_dump(tmp_path / "empty.db")
    with pytest.raises(DumpError, match="not found"):
        verify_dump(tmp_path / "missing.db")
    with pytest.raises(DumpError, match="not a regular file"):
        verify_dump(tmp_path)


def test_verify_rejects_corrupted_pages(migrated_db: Path, tmp_path: Path) -> None:
    add_notes(migrated_db, *[f"note {i}" for i in range(300)])
    out = dump(migrated_db, tmp_path / "c.db")
    data = bytearray(out.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    # Overwrite the middle of the notes table's b-tree pages, keeping the header intact.
    for offset in range(page_size + 16, len(data), page_size):
        data[offset:offset + 64] = b"\xff" * 64
    out.write_bytes(bytes(data))
    # Depending on which structure the damage hits first, SQLite either lists
    # the problems or refuses to walk the b-tree at all; both must be rejected.
    with pytest.raises(DumpError, match="integrity_check failed|malformed") as info:
        verify_dump(out)
    assert str(out) in str(info.value)
    assert "\n" not in str(info.value)


def test_verify_rejects_an_sqlite_file_that_is_not_a_notes_database(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(DumpError, match="not a notes database"):
        verify_dump(other)


def test_verify_does_not_modify_the_dump(dumped: Path) -> None:
    before = dumped.read_bytes()
    verify_dump(dumped)
    assert dumped.read_bytes() == before
    assert sorted(p.name for p in dumped.parent.iterdir()) == ["notes-1.db"]


def test_restore_puts_data_back(dumped: Path, migrated_db: Path) -> None:
    add_notes(migrated_db, "written after the dump")
    info = restore(dumped, migrated_db)
    assert info["database"] == str(migrated_db)
    assert info["notes"] == 3
    assert titles(migrated_db) == ["one", "two", "three"]
    assert sorted(p.name for p in migrated_db.parent.iterdir()) == ["notes.db"]


def test_restore_keeps_the_live_files_mode(dumped: Path, migrated_db: Path) -> None:
    os.chmod(migrated_db, 0o660)
    restore(dumped, migrated_db)
    assert migrated_db.stat().st_mode & 0o777 == 0o660


def test_restore_over_a_corrupt_database(dumped: Path, migrated_db: Path) -> None:
    migrated_db.write_bytes(b"disk ate it" * 100)
    restore(dumped, migrated_db)
    assert titles(migrated_db) == ["one", "two", "three"]


def test_restore_into_a_new_location(dumped: Path, tmp_path: Path) -> None:
    target = tmp_path / "fresh" / "notes.db"
    restore(dumped, target)
    assert titles(target) == ["one", "two", "three"]


def test_restore_refuses_a_bad_dump_and_keeps_the_live_database(migrated_db: Path, tmp_path: Path) -> None:
    add_notes(migrated_db, "precious")
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"nope" * 1000)
    with pytest.raises(DumpError):
        restore(bad, migrated_db)
    assert titles(migrated_db) == ["precious"]


def test_restore_refuses_while_the_database_is_in_use(dumped: Path, migrated_db: Path) -> None:
    add_notes(migrated_db, "live")
    writer = sqlite3.connect(migrated_db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(DumpError, match="in use"):
            restore_sqlite(dumped, migrated_db, lock_timeout=0.1)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert titles(migrated_db) == ["one", "two", "three", "live"]
    assert sorted(p.name for p in migrated_db.parent.iterdir()) == ["notes.db"]
