"""The app on each backend (SQLite, and real PostgreSQL and MariaDB servers): migrations with
their kinds, notes, write marks, and dumps proven by a scratch restore."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from notes import create_app
from notes.backup import dump, restore, verify_dump
from notes.config import Config
from notes.db import DatabaseError, Target, open_database, read_schema_version
from notes.errors import DumpError, MigrationError
from notes.schema import ADDITIVE, BREAKING, MIGRATIONS, migrate
from notes.store import create_note, database_stats, list_notes

APP_DIR = Path(__file__).resolve().parent.parent
V2 = [*MIGRATIONS, (2, ADDITIVE, "ALTER TABLE notes ADD COLUMN tags TEXT;")]
V3 = [*V2, (3, BREAKING, "ALTER TABLE notes DROP COLUMN body;")]


def add(target: Target, *titles: str) -> None:
    conn = open_database(target)
    try:
        for title in titles:
            create_note(conn, title, f"body of {title}")
    finally:
        conn.close()


def titles(target: Target) -> list[str]:
    conn = open_database(target)
    try:
        return [note.title for note in list_notes(conn)]
    finally:
        conn.close()


def scratch_left(database: Target) -> list[str]:
    """The scratch databases of verifications still on the server (none may stay)."""
    if not database.is_server:
        return []
    conn = open_database(database)
    try:
        sql = ("SELECT datname FROM pg_database" if database.backend == "postgresql"
               else "SHOW DATABASES")
        return [r[0] for r in conn.execute(sql).fetchall() if "_verify_" in r[0]]
    finally:
        conn.close()


def test_migrate_records_version_and_kinds(database: Target) -> None:
    assert migrate(database) == (0, 1)
    assert migrate(database) == (1, 1)
    assert migrate(database, V2) == (1, 2)
    stats = database_stats(database)
    assert (stats["backend"], stats["schema_version"]) == (database.backend, 2)
    assert stats["migrations"] == [{"version": 1, "kind": "additive"},
                                   {"version": 2, "kind": "additive"}]
    assert read_schema_version(database) == 2
    assert migrate(database) == (2, 2)  # the v1 code leaves a v2 database alone


def test_v1_code_works_on_an_additive_migration_not_on_a_breaking_one(database: Target) -> None:
    migrate(database, V2)
    add(database, "after v2")  # the v1 store names its columns: the new one has no say
    assert titles(database) == ["after v2"]
    migrate(database, V3)
    assert database_stats(database)["migrations"][-1] == {"version": 3, "kind": "breaking"}
    with pytest.raises(DatabaseError):
        add(database, "v1 on v3")


def test_write_marks_count_rows_written(database: Target) -> None:
    migrate(database)
    assert database_stats(database)["writes"] == {"notes": 0}
    add(database, "a", "b", "c")
    stats = database_stats(database)
    assert (stats["notes"], stats["writes"], stats["tables"]["notes"]) == (3, {"notes": 3}, 3)


def test_dump_verify_restore_round_trip(database: Target, tmp_path: Path) -> None:
    migrate(database)
    add(database, "one", "two")
    out = tmp_path / "backups" / "notes.dump"
    report = dump(database, out)
    assert (report["backend"], report["schema_version"], report["notes"]) == \
        (database.backend, 1, 2)
    assert report["tables"] == {"notes": 2, "schema_migrations": 1}
    assert report["writes"] == {"notes": 2}
    assert verify_dump(out, database) == report

    migrate(database, V2)  # after the dump: a migration and a row the restore must undo
    add(database, "three")
    restored = restore(out, database)
    assert restored["database"] == str(database)
    assert titles(database) == ["one", "two"]
    stats = database_stats(database)
    assert (stats["schema_version"], stats["tables"], stats["writes"]) == \
        (1, report["tables"], {"notes": 2})
    assert not scratch_left(database)


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_a_damaged_dump_does_not_verify_and_is_not_restored(database: Target, tmp_path: Path,
                                                            damage: str) -> None:
    migrate(database)
    add(database, *[f"note {i}" for i in range(200)])
    out = tmp_path / "notes.dump"
    dump(database, out)
    data = out.read_bytes()
    if damage == "truncated":
        out.write_bytes(data[: len(data) * 2 // 3])
    else:  # garbage over the middle, where the rows are
        middle = len(data) // 2
        out.write_bytes(data[:middle] + b"\x00garbage\xff" * 64 + data[middle + 640:])
    with pytest.raises(DumpError, match=str(out)):
        verify_dump(out, database)
    add(database, "live")
    with pytest.raises(DumpError):
        restore(out, database)
    assert len(titles(database)) == 201  # untouched
    assert not scratch_left(database)


def test_failed_migration_is_reported_with_the_schema_left(database: Target) -> None:
    migrate(database)
    broken = [*V2, (3, ADDITIVE, "INSERT INTO no_such_table VALUES (1);")]
    with pytest.raises(MigrationError, match="migration 3 failed") as info:
        migrate(database, broken)
    left = 2 if database.backend == "mariadb" else 1  # MariaDB commits DDL at once
    assert f"left at schema {left}" in str(info.value)
    assert read_schema_version(database) == left


def test_health_and_api_on_the_backend(database: Target) -> None:
    migrate(database)
    client = create_app(Config(database=str(database) if database.is_server else database.path,
                               version="1.0.0", password=database.password)).test_client()
    assert client.post("/notes", json={"title": "hello", "body": "b"}).status_code == 201
    assert [n["title"] for n in client.get("/notes").get_json()] == ["hello"]
    health = client.get("/health").get_json()
    assert (health["status"], health["database"]["backend"]) == ("ok", database.backend)


def test_cli_reads_the_url_and_the_password_from_the_environment(database: Target,
                                                                 tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(APP_DIR),
           "NOTES_DATABASE": str(database) if database.is_server else str(database.path),
           "NOTES_DATABASE_PASSWORD": database.password or ""}

    def notes(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-P", "-m", "notes", *args], env=env,
                              capture_output=True, text=True, timeout=120)

    assert "migrated schema 0 -> 1" in notes("migrate").stdout
    out = tmp_path / "cli.dump"
    dumped = json.loads(notes("dump", str(out)).stdout)
    assert json.loads(notes("verify-dump", str(out)).stdout) == dumped
    if database.is_server:
        env["NOTES_DATABASE_PASSWORD"] = "wrong"
        failed = notes("stats")
        assert failed.returncode == 1 and failed.stderr.startswith("notes: error: cannot connect")
        assert "wrong" not in failed.stderr
