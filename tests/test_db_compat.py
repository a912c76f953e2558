"""The rollback plan's database verdict (releaser.backup.compat), from what the database
recorded of its migrations: pure logic, no node."""

from __future__ import annotations

import pytest

from releaser.backup.common import DumpBackup
from releaser.backup.compat import (NEEDS_RESTORE, NO_DUMP, SAFE, UNKNOWN, assess,
                                    migrations_between)


def dump(schema: int = 1, writes: dict | None = None) -> DumpBackup:
    return DumpBackup(node="n1", version="1.0.0", node_path="/x", central_path="/y", size=1,
                      sha256="0" * 64, schema_version=schema, notes=2,
                      created="2026-01-02T03:04:05.000000+00:00", app="notes",
                      writes=writes if writes is not None else {"notes": 2})


def stats(*kinds: str, notes_mark: int = 5) -> dict:
    return {"schema_version": len(kinds), "writes": {"notes": notes_mark},
            "migrations": [{"version": i, "kind": k} for i, k in enumerate(kinds, start=1)]}


def test_no_migration_since_the_target_is_safe() -> None:
    verdict = assess(stats("additive"), None, 1, None, None)
    assert (verdict.verdict, verdict.since, verdict.unsafe) == (SAFE, [], False)
    assert "no migration since" in verdict.describe("1.0.0")


def test_only_additive_migrations_since_is_safe_and_keeps_every_row() -> None:
    verdict = assess(stats("additive", "additive"), None, 1, dump(), {"notes": 5})
    assert verdict.verdict == SAFE and not verdict.unsafe
    line = verdict.describe("1.0.0")
    assert line.startswith("database schema 2, 1.0.0 expects 1: safe without restore")
    assert "only additive migrations since (2)" in line


def test_a_breaking_migration_needs_a_restore_and_says_what_it_loses() -> None:
    verdict = assess(stats("additive", "additive", "breaking"), None, 1, dump(),
                     {"notes": 5})
    assert (verdict.verdict, verdict.breaking, verdict.loses) == (NEEDS_RESTORE, [3],
                                                                 {"notes": 3})
    assert verdict.unsafe
    line = verdict.describe("1.0.0")
    assert "needs --restore-db (breaking migration 3 since)" in line
    assert "restoring the dump of 2026-01-02 03:04:05 UTC loses 3 notes written since" in line


def test_a_breaking_migration_without_a_dump_cannot_be_restored() -> None:
    verdict = assess(stats("additive", "breaking"), None, 1, None, {"notes": 5})
    assert verdict.verdict == NO_DUMP and verdict.unsafe
    assert "no dump: cannot restore" in verdict.describe("1.0.0")


def test_a_dump_whose_schema_is_past_the_breaking_migration_cannot_bring_it_back() -> None:
    verdict = assess(stats("additive", "breaking", "additive"), None, 1, dump(schema=2), None)
    assert verdict.verdict == NO_DUMP


def test_a_dump_ahead_by_additive_migrations_only_still_serves() -> None:
    verdict = assess(stats("additive", "additive", "breaking"), None, 1, dump(schema=2), None)
    assert verdict.verdict == NEEDS_RESTORE


def test_a_migration_the_database_did_not_record_counts_as_breaking() -> None:
    recorded = {"schema_version": 3, "migrations": [{"version": 3, "kind": "additive"}]}
    assert migrations_between(recorded, 1, 3) == [{"version": 2, "kind": "unrecorded"},
                                                  {"version": 3, "kind": "additive"}]
    assert assess(recorded, None, 1, dump(), None).verdict == NEEDS_RESTORE


@pytest.mark.parametrize("db_schema,target_schema", [(None, 1), (2, None)])
def test_without_both_schemas_the_verdict_is_unknown_never_safe(db_schema, target_schema) -> None:
    verdict = assess(None, db_schema, target_schema, None, None)
    assert verdict.verdict == UNKNOWN and not verdict.unsafe
    assert "compatibility unknown" in verdict.describe("1.0.0")
