"""Migrations: ordered, transactional, idempotent, never down."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from notes.db import read_schema_version
from notes.errors import DatabaseUnavailable, MigrationError
from notes.schema import MIGRATIONS, SCHEMA_VERSION, check_migrations, migrate, split_statements


def columns(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [row[1] for row in conn.execute("PRAGMA table_info(notes)")]


def test_schema_version_is_the_highest_migration() -> None:
    assert SCHEMA_VERSION == MIGRATIONS[-1][0] == 1


def test_migrate_creates_file_parent_and_notes_table(db_path: Path) -> None:
    assert not db_path.parent.exists()
    assert migrate(db_path) == (0, SCHEMA_VERSION)
    assert read_schema_version(db_path) == SCHEMA_VERSION
    assert columns(db_path) == ["id", "title", "body", "created_at"]


def test_migrate_is_idempotent(migrated_db: Path) -> None:
    with sqlite3.connect(migrated_db) as conn:
        conn.execute("INSERT INTO notes (title, body, created_at) VALUES ('t', 'b', 'now')")
    assert migrate(migrated_db) == (SCHEMA_VERSION, SCHEMA_VERSION)
    assert migrate(migrated_db) == (SCHEMA_VERSION, SCHEMA_VERSION)
    with sqlite3.connect(migrated_db) as conn:
        assert conn.execute("SELECT count(*) FROM notes").fetchone()[0] == 1


def test_appending_a_migration_upgrades_an_existing_database(migrated_db: Path) -> None:
    v2 = [*MIGRATIONS, (2, "additive", "ALTER TABLE notes ADD COLUMN tags TEXT NOT NULL DEFAULT '';")]
    assert migrate(migrated_db, v2) == (1, 2)
    assert "tags" in columns(migrated_db)
    assert read_schema_version(migrated_db) == 2


def test_never_migrates_down(migrated_db: Path) -> None:
    v2 = [*MIGRATIONS, (2, "additive", "ALTER TABLE notes ADD COLUMN tags TEXT NOT NULL DEFAULT '';")]
    migrate(migrated_db, v2)
    assert migrate(migrated_db) == (2, 2)  # the v1 code leaves a v2 database alone
    assert read_schema_version(migrated_db) == 2
    assert "tags" in columns(migrated_db)


def test_failed_migration_rolls_back_everything(migrated_db: Path) -> None:
    broken = [
        *MIGRATIONS,
        (2, "additive", "ALTER TABLE notes ADD COLUMN tags TEXT;"),
        (3, "additive", "CREATE TABLE extra (x INTEGER); INSERT INTO no_such_table VALUES (1);"),
    ]
    with pytest.raises(MigrationError, match="migration 3 failed.*left at schema 1"):
        migrate(migrated_db, broken)
    assert read_schema_version(migrated_db) == 1
    assert "tags" not in columns(migrated_db)
    with sqlite3.connect(migrated_db) as conn:
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'extra'").fetchone() is None


def test_migrate_refuses_a_file_that_is_not_sqlite(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(DatabaseUnavailable, match="unusable"):
        migrate(db_path)


@pytest.mark.parametrize(
    "bad",
    [[], [(2, "SELECT 1;")], [(1, "SELECT 1;"), (3, "SELECT 1;")], [(1, "  ")]],
)
def test_check_migrations_rejects_malformed_lists(bad: list[tuple[int, str]]) -> None:
    with pytest.raises(ValueError):
        check_migrations(bad)


def test_split_statements_handles_strings_comments_and_triggers() -> None:
    sql = """
    CREATE TABLE a (x TEXT); INSERT INTO a VALUES (';');
    -- a comment; with a semicolon
    CREATE TRIGGER t AFTER INSERT ON a BEGIN UPDATE a SET x = 'y'; END;
    -- trailing comment
    """
    statements = list(split_statements(sql))
    assert len(statements) == 3
    assert statements[1] == "INSERT INTO a VALUES (';');"
    assert statements[2].rstrip().endswith("END;")


def test_split_statements_rejects_an_unterminated_statement() -> None:
    with pytest.raises(ValueError, match="incomplete"):
        list(split_statements("CREATE TABLE a (x"))


def test_migrations_literal_can_be_extended_by_a_text_edit(tmp_path: Path) -> None:
    """releaser's tests build a v2 by inserting an entry before the closing bracket."""
    source = (Path(__file__).resolve().parent.parent / "notes" / "schema.py").read_text()
    assert "\nMIGRATIONS = [\n" in source
    end = source.index("\n]\n", source.index("\nMIGRATIONS = [\n"))
    edited = source[:end] + '\n    (2, "additive", """ALTER TABLE notes ADD COLUMN tags TEXT;"""),' + source[end:]
    namespace: dict[str, object] = {"__name__": "notes.schema_v2", "__package__": "notes"}
    exec(compile(edited, "schema_v2.py", "exec"), namespace)
    assert namespace["SCHEMA_VERSION"] == 2
    db = tmp_path / "v2.db"
    migrate_v2 = namespace["migrate"]
    assert migrate_v2(db) == (0, 2)  # type: ignore[operator]
    assert "tags" in columns(db)
