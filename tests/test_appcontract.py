"""The app's contract (releaser.appcontract): its values are checked wherever it is built."""

import pytest

from releaser.appcontract import AppContract, HealthFacts
from releaser.errors import UsageError


def test_a_contract_refuses_values_no_command_may_carry():
    for name, env, path in [("no-tes", "", "/health"), ("notes", "PYTHONPATH", "/health"),
                            ("notes", "notes_db", "/health"), ("notes", "", "health"),
                            ("notes", "", "/a/../b"), ("nötes", "", "/health")]:
        with pytest.raises(UsageError):
            AppContract(name, env, path)
    with pytest.raises(UsageError, match="not one of the app's maintenance commands"):
        AppContract("notes").command("serve", "x")


def test_health_facts_read_only_what_the_contract_names():
    facts = HealthFacts.read({"status": "ok", "version": "1.2.0", "schema": "current",
                              "database": {"schema_version": 3, "app_schema_version": 3},
                              "extra": "ignored"})
    assert facts == HealthFacts(True, "ok", "1.2.0", "current", 3, 3, None)
    degraded = HealthFacts.read({"status": "degraded", "version": 1,
                                 "database": {"schema_version": True, "error": "locked"}})
    assert (degraded.ok, degraded.version, degraded.db_schema_version, degraded.error) == (
        False, "1", None, "locked")
    assert HealthFacts.read(None) == HealthFacts(False, None, None, None, None, None, None)
    assert HealthFacts.read({"database": "not an object"}).db_schema_version is None
