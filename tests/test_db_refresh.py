"""``releaser db refresh staging --from production`` on a sandbox whose environments each have
their own database on a real PostgreSQL server: a complete copy through a verified dump,
masked by the refresh hook before staging serves it, independent of production afterwards,
and refused in the other direction; and promote's warning before a breaking migration
reaches production."""

from __future__ import annotations

import json
import re
import sys
import urllib.request

import pytest

from releaser.cli import main
from releaser.config import load_config
from releaser.db.refresh import refresh
from releaser.deploy.promote import promote
from releaser.errors import UsageError
from releaser.sandbox.dbserver import PASSWORD_FILE
from releaser.sandbox.world import default_app, down_sandbox, init_sandbox

from .conftest import commit_all, git
from .sandboxes import make_source

pytestmark = pytest.mark.slow

#: The masking hook: run on the staging node with the app's environment (its code on
#: PYTHONPATH, the database URL and password), it blanks every note's body.
MASK = [sys.executable, "-P", "-c",
        "from notes.config import load_config; from notes.db import open_database; "
        "open_database(load_config().target).execute(\"UPDATE notes SET body = 'masked'\")"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("db-refresh")
    source = make_source(base / "src")
    directory = base / "sandbox"
    path = init_sandbox(directory, default_app(source), {"staging": 1, "production": 1},
                        db="postgresql")
    text = path.read_text()
    # staging's database table gains the masking hook (an inline table: one more key)
    text = re.sub(r'(url = "[^"]*notes_staging") }', rf"\1, refresh_hook = {json.dumps(MASK)} }}",
                  text)
    path.write_text(text)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NOTES_DATABASE_PASSWORD", (directory / PASSWORD_FILE).read_text().strip())
        try:
            config = load_config(path)
            assert config.environment("staging").database.refresh_hook == tuple(MASK)
            assert promote(config, "staging").ok
            assert promote(config, "production", version="1.0.0").ok
            yield config
        finally:
            down_sandbox(directory)


def url(config, env: str, path: str) -> str:
    node = config.environment(env).nodes[0]
    return node.health_url.rsplit("/health", 1)[0] + path


def notes(config, env: str) -> list[tuple[str, str]]:
    with urllib.request.urlopen(url(config, env, "/notes"), timeout=10) as response:
        return [(n["title"], n["body"]) for n in json.loads(response.read())]


def post(config, env: str, title: str, body: str) -> None:
    request = urllib.request.Request(url(config, env, "/notes"),
                                     data=json.dumps({"title": title, "body": body}).encode(),
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).close()


def test_refresh_production_into_staging_is_refused(world, capsys):
    post(world, "production", "customer", "alice@example.com")
    post(world, "staging", "test data", "from a tester")
    with pytest.raises(UsageError, match="db refresh production --from staging refused"):
        refresh(world, "production", "staging")
    assert main(["-c", str(world.path), "db", "refresh", "production", "--from", "staging",
                 "--yes"]) == 2
    assert "refused" in capsys.readouterr().err
    assert notes(world, "production") == [("customer", "alice@example.com")]


def test_refresh_copies_production_into_staging_masked_and_independent(world):
    report = refresh(world, "staging", "production")
    assert (report.source_node, report.masked) == ("production-1", True)
    assert report.dump["tables"] == {"notes": 1, "schema_migrations": 1}
    assert report.nodes == {"staging-1": "restored"} and len(report.safety_dumps) == 1
    # a complete copy, masked before staging served it; staging's own rows are gone
    assert notes(world, "staging") == [("customer", "masked")]
    assert notes(world, "production") == [("customer", "alice@example.com")]
    # independent: a write on either side stays there
    post(world, "staging", "staging only", "x")
    post(world, "production", "production only", "y")
    assert [t for t, _ in notes(world, "staging")] == ["customer", "staging only"]
    assert [t for t, _ in notes(world, "production")] == ["customer", "production only"]


def test_promote_warns_before_a_breaking_migration_reaches_production(world):
    source = world.app.source
    schema = source / "app" / "notes" / "schema.py"
    text = schema.read_text()
    at = text.rindex("\n]")
    migration = '\n    (2, "breaking", "UPDATE notes SET title = upper(title);"),'
    schema.write_text(text[:at] + migration + text[at:])
    commit_all(source, "a breaking migration", when="2026-03-01T00:00:00+00:00")
    git(source, "tag", "v1.1.0")
    staged = promote(world, "staging")
    assert staged.ok and not staged.warnings  # staging takes releases from no one
    planned = promote(world, "production", version="1.1.0", dry_run=True)
    [warning] = [w for w in planned.warnings if "breaking migration" in w]
    assert warning.startswith("1.1.0 brings breaking migration 2 (as staging's database "
                              "recorded it): once it runs in production, 1.0.0 (schema 1) "
                              "becomes un-rollbackable there without --restore-db")
