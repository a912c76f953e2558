"""Rollback and the database on each backend: a sandbox node whose app runs on SQLite, or on a
real PostgreSQL or MariaDB server of the sandbox's own (``sandbox init --db``).

One staging node per backend; the tests run in file order and build on each other:

1. 1.0.0 with data;
2. 1.1.0 (migration 2, additive): a dump that does not restore (truncated, corrupted)
   stops the node before the upgrade, it stays on 1.0.0; then the upgrade;
3. the plan back to 1.0.0 says "safe without restore", and the rollback keeps every row
   written after the upgrade;
4. 1.2.0 (migration 3, breaking): the plan says "needs --restore-db" and how many rows
   per table a restore loses; without --restore-db the rollback is refused (unless
   forced); with it the data equals the dump.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.request
from pathlib import Path

import pytest

from releaser import backup
from releaser.backup.compat import NEEDS_RESTORE, SAFE
from releaser.central.repository import CentralRepository
from releaser.config import load_config
from releaser.deploy.promote import promote
from releaser.deploy.rollback import execute_rollback, plan_rollback
from releaser.errors import RollbackRefused
from releaser.hosts.node import connect
from releaser.processes import pid_alive
from releaser.sandbox.dbserver import PASSWORD_FILE
from releaser.sandbox.world import default_app, down_sandbox, init_sandbox

from .conftest import commit_all, git
from .dbservers import BACKENDS
from .sandboxes import make_source

ENV, NODE = "staging", "staging-1"
pytestmark = pytest.mark.slow


@dataclasses.dataclass
class World:
    backend: str
    source: Path
    directory: Path
    config: object

    @property
    def root(self) -> Path:
        return self.directory / "nodes" / NODE

    @property
    def central(self) -> CentralRepository:
        return CentralRepository.from_config(self.config)

    def url(self, path: str) -> str:
        node = self.config.environment(ENV).nodes[0]
        return node.health_url.rsplit("/health", 1)[0] + path

    def http(self, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url(path), data=data,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def titles(self) -> list[str]:
        return [n["title"] for n in self.http("/notes")]

    def installed(self) -> str | None:
        node = connect(self.config, self.config.environment(ENV).nodes[0])
        try:
            return node.installed_version("www-apps/notes")
        finally:
            node.close()

    def stats(self) -> dict:
        node = connect(self.config, self.config.environment(ENV).nodes[0])
        try:
            return backup.database_stats(node, self.config.app.contract,
                                         self.config.environment(ENV).database.path)
        finally:
            node.close()


def add_migration(source: Path, tag: str, number: int, kind: str, sql: str) -> None:
    """A release whose schema gains migration ``number`` of ``kind``."""
    schema = source / "app" / "notes" / "schema.py"
    text = schema.read_text()
    at = text.rindex("\n]")
    schema.write_text(text[:at] + f'\n    ({number}, "{kind}", """{sql}"""),' + text[at:])
    commit_all(source, f"migration {number}", when=f"2026-02-0{number}T00:00:00+00:00")
    git(source, "tag", tag)


@pytest.fixture(scope="module", params=BACKENDS)
def world(request, tmp_path_factory, monkeypatch_module):
    base = tmp_path_factory.mktemp(f"db-{request.param}")
    source = make_source(base / "src")
    directory = base / "sandbox"
    path = init_sandbox(directory, default_app(source), {ENV: 1}, db=request.param)
    if request.param != "sqlite":
        password = (directory / PASSWORD_FILE).read_text().strip()
        monkeypatch_module.setenv("NOTES_DATABASE_PASSWORD", password)
    try:
        yield World(request.param, source, directory, load_config(path))
    finally:
        down_sandbox(directory)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_v1_with_data(world):
    assert promote(world.config, ENV).ok
    for title in ("first", "second"):
        world.http("/notes", {"title": title, "body": "before the upgrade"})
    stats = world.stats()
    assert (stats["backend"], stats["schema_version"], stats["notes"]) == (world.backend, 1, 2)
    assert stats["migrations"] == [{"version": 1, "kind": "additive"}]


def _damage(kind: str) -> str:
    """A sitecustomize for the node's app folder (on the maintenance commands' PYTHONPATH,
    not a file of the package, so no binary package carries it): once ``dump`` has reported
    a good dump, the file on disk is damaged, as a failing disk or tool would leave it."""
    change = ("data[: len(data) // 2]" if kind == "truncated" else
              "data[: len(data) // 2] + b'\\x00garbage\\xff' * 64 + data[len(data) // 2 + 640:]")
    return ("import atexit, sys\nfrom pathlib import Path\n\n\ndef _damage():\n"
            "    if len(sys.argv) >= 3 and sys.argv[1] == 'dump':\n"
            "        out = Path(sys.argv[2])\n"
            "        data = out.read_bytes()\n"
            f"        out.write_bytes({change})\n\n\natexit.register(_damage)\n")


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_a_dump_that_does_not_restore_stops_the_node_before_the_upgrade(world, damage):
    if damage == "truncated":
        add_migration(world.source, "v1.1.0", 2, "additive",
                      "ALTER TABLE notes ADD COLUMN tags TEXT;")
    hook = world.root / "usr/lib/notes/sitecustomize.py"
    hook.write_text(_damage(damage))
    try:
        report = promote(world.config, ENV)
    finally:
        hook.unlink()
    [node] = report.nodes
    assert not report.ok and (node.status, node.phase) == ("failed", "backup"), node
    assert "dump verification failed" in node.detail or "changed between dump" in node.detail
    assert world.installed() == "1.0.0"
    assert world.http("/health")["version"] == "1.0.0"
    assert world.titles() == ["first", "second"]


def test_additive_migration_rollback_is_safe_and_keeps_rows_written_after(world):
    assert promote(world.config, ENV).ok
    assert world.installed() == "1.1.0"
    for title in ("third", "fourth", "fifth"):
        world.http("/notes", {"title": title, "body": "after the upgrade"})
    plan = plan_rollback(world.config, world.central, ENV)
    [node] = plan.nodes
    assert (plan.target, node.verdict, node.db_schema, node.target_schema) == \
        ("1.0.0", SAFE, 2, 1)
    assert node.since == [{"version": 2, "kind": "additive"}]
    assert not plan.unsafe
    assert execute_rollback(world.config, world.central, plan).ok
    assert world.installed() == "1.0.0"
    assert world.titles() == ["first", "second", "third", "fourth", "fifth"]
    assert world.http("/health")["schema"] == "ahead"


def test_breaking_migration_needs_a_restore_and_says_what_it_loses(world):
    add_migration(world.source, "v1.2.0", 3, "breaking", "ALTER TABLE notes DROP COLUMN tags;")
    report = promote(world.config, ENV)
    assert report.ok, [n.detail for n in report.nodes]
    assert world.installed() == "1.2.0"
    world.http("/notes", {"title": "lost", "body": "written after the dump"})
    plan = plan_rollback(world.config, world.central, ENV)
    [node] = plan.nodes
    assert (plan.target, node.verdict, node.db_schema) == ("1.0.0", NEEDS_RESTORE, 3)
    assert node.loses == {"notes": 1}
    assert "needs --restore-db (breaking migration 3 since)" in node.compat
    assert "loses 1 note written since (it holds 5 notes, schema 2)" in node.compat
    with pytest.raises(RollbackRefused, match="unsafe without a database restore"):
        execute_rollback(world.config, world.central, plan)
    assert world.installed() == "1.2.0"


def test_restore_db_rollback_brings_back_exactly_the_dump(world):
    dump = backup.latest_dump(world.central, ENV, NODE, version="1.0.0")
    plan = plan_rollback(world.config, world.central, ENV, restore_db=True)
    assert not plan.unsafe and not plan.problems
    assert execute_rollback(world.config, world.central, plan).ok
    assert world.installed() == "1.0.0"
    assert world.titles() == ["first", "second", "third", "fourth", "fifth"]
    stats = world.stats()
    assert (stats["schema_version"], stats["tables"], stats["writes"]) == \
        (dump.schema_version, dump.tables, dump.writes)


def test_sandbox_down_stops_its_server_by_pid(world):
    state = json.loads((world.directory / "sandbox.json").read_text()).get("db")
    if world.backend == "sqlite":
        assert state is None
        return
    assert state["backend"] == world.backend and pid_alive(state["pid"])
    down_sandbox(world.directory)
    assert not pid_alive(state["pid"])
    assert not Path(state["folder"]).exists()
