"""`releaser rollback` on a sandbox fleet: binary packages, verified dumps, schema changes.

One story, in order (module-scoped sandbox): v1 with data, v2 changes the
schema, roll back without and with the database, and the ways it must refuse.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.request

import pytest

from releaser.central.repository import CentralRepository
from releaser.sandbox import noderoot
from releaser.hosts import portage_commands as portage_tools
from releaser.cli import main
from releaser.errors import NodeError
from releaser.hosts.runner import LocalRunner

from .sandboxes import Sandbox, add_migration, kill_9_when, wait_for_orphaned_emerges, tree_digests

NODES = ("staging-1", "staging-2")


def cli(sb, *args):
    return main(["-c", str(sb.config_path), *args])


def runner(sb, node):
    return LocalRunner(env=noderoot.portage_env(sb.node_root(node)))


def installed(sb, node):
    return portage_tools.installed_version(runner(sb, node), str(sb.node_root(node)),
                                           "www-apps/notes")


def base_url(sb, node):
    url = next(n.health_url for n in sb.config.environment("staging").nodes if n.name == node)
    return url.rsplit("/", 1)[0]


def get(sb, node, path):
    with urllib.request.urlopen(base_url(sb, node) + path, timeout=5) as r:
        return json.loads(r.read())


def post_note(sb, node, title):
    req = urllib.request.Request(base_url(sb, node) + "/notes", method="POST",
                                 data=json.dumps({"title": title, "body": "b"}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 201


def titles(sb, node):
    return sorted(n["title"] for n in get(sb, node, "/notes"))


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    sandbox = Sandbox(tmp_path_factory.mktemp("rollback"), {"staging": 2})
    yield sandbox
    sandbox.down()


def test_v1_then_v2_with_schema_change(sb):
    assert cli(sb, "promote", "staging") == 0
    for node in NODES:
        post_note(sb, node, "before-upgrade")
    add_migration(sb.source, "v2.0.0")
    assert cli(sb, "promote", "staging") == 0
    for node in NODES:
        assert installed(sb, node) == "2.0.0"
        health = get(sb, node, "/health")
        assert health["version"] == "2.0.0" and health["database"]["schema_version"] == 2
        post_note(sb, node, "after-upgrade")
    # the backups taken before the install: v1's binary package and a dump
    assert (sb.node_root("staging-1") / "var/cache/binpkgs/www-apps/notes-1.0.0.gpkg.tar").exists()
    assert list((sb.central / "binpkgs" / "staging").rglob("notes-1.0.0.gpkg.tar"))
    assert list((sb.central / "dumps" / "staging" / "staging-1").glob("*.db"))


def test_promote_of_an_older_version_is_refused_with_a_pointer_to_rollback(sb, capsys):
    assert cli(sb, "promote", "staging", "--ref", "v1.0.0") == 2
    err = capsys.readouterr().err
    assert "notes-1.0.0 is older than 2.0.0, which staging runs" in err
    assert "releaser rollback staging --to 1.0.0" in err
    for node in NODES:
        assert installed(sb, node) == "2.0.0"


def test_the_plan_asks_the_nodes_at_once(sb, monkeypatch):
    """Each node's questions (Portage, health, the database) take ~1 s: a fleet's plan
    asks its nodes in parallel.  Planned one after the other, the barrier breaks."""
    from releaser.deploy import rollback_plan

    barrier = threading.Barrier(len(NODES), timeout=60)
    real = rollback_plan._plan_node

    def together(node, *args):
        barrier.wait()  # threading.BrokenBarrierError if the other node never comes
        return real(node, *args)

    monkeypatch.setattr(rollback_plan, "_plan_node", together)
    plan = rollback_plan.plan_rollback(sb.config, CentralRepository.from_config(sb.config),
                                       "staging")
    assert [(n.node, n.current, n.binpkg, n.problems) for n in plan.nodes] == \
        [(node, "2.0.0", "node", []) for node in NODES]


def test_dry_run_plans_warns_and_changes_nothing(sb, capsys):
    roots = [sb.central] + [sb.node_root(n) for n in NODES]
    before = tree_digests(*roots)
    assert cli(sb, "rollback", "staging", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "rollback plan for staging: 2.0.0 -> 1.0.0" in out
    assert "database schema 2 is newer than 1.0.0 expects (1)" in out
    # the dump was taken before 2.0.0 was installed; one note per node was written since
    assert "loses 1 note written since (it holds 1 note, schema 1)" in out
    after = tree_digests(*roots)
    changed = [k for k in set(before) | set(after)
               if before.get(k) != after.get(k) and "/var/log/" not in k]
    assert not changed, changed[:5]


def test_interrupted_rollback_is_finished_by_running_it_again(sb, capsys):
    kill_9_when(sb, ["rollback", "staging", "--yes"], ": install")
    wait_for_orphaned_emerges()
    assert cli(sb, "rollback", "staging", "--yes") == 0
    out = capsys.readouterr().out
    assert "staging is back on 1.0.0" in out
    for node in NODES:
        assert installed(sb, node) == "1.0.0"
        health = get(sb, node, "/health")
        assert health["version"] == "1.0.0" and health["schema"] == "ahead"
        assert titles(sb, node) == ["after-upgrade", "before-upgrade"]
    # the bad version is masked in the overlay, and the rollback synced every node: right
    # away, neither an update nor an explicit emerge on a node brings it back
    for node in NODES:
        r = runner(sb, node)
        best = r.run(["portageq", "best_visible", str(sb.node_root(node)), "www-apps/notes"])
        assert best.stdout.strip() == "www-apps/notes-1.0.0"
        with pytest.raises(NodeError, match="mask"):
            portage_tools.emerge(r, "www-apps/notes-2.0.0")
        assert installed(sb, node) == "1.0.0"
    log = subprocess.run(["git", "--git-dir", str(sb.central / "overlays/staging.git"), "log",
                          "-1", "--format=%B"], capture_output=True, text=True).stdout
    assert "www-apps/notes-2.0.0: mask in staging" in log and "rolled back from 2.0.0" in log


def test_rollback_to_the_running_version_is_a_noop(sb, capsys):
    assert cli(sb, "rollback", "staging", "--to", "1.0.0", "--yes") == 0
    out = capsys.readouterr().out
    assert out.count("already runs 1.0.0 and is healthy: nothing to do") == 2


def test_promoting_the_masked_version_again_is_refused(sb, capsys):
    assert cli(sb, "promote", "staging") == 2
    assert "was rolled back in staging and is masked" in capsys.readouterr().err


def test_rollback_with_restore_from_central_after_local_package_loss(sb, capsys):
    add_migration(sb.source, "v3.0.0", number=3)
    assert cli(sb, "promote", "staging") == 0
    for node in NODES:
        assert installed(sb, node) == "3.0.0"
        post_note(sb, node, "lost-on-restore")
    # staging-1 lost its local binary package of the target: it comes from central
    local = sb.node_root("staging-1") / "var/cache/binpkgs/www-apps/notes-1.0.0.gpkg.tar"
    local.unlink()
    assert cli(sb, "rollback", "staging", "--restore-db", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "central" in out
    # what the restore loses, per node: the note written since the dump taken before 3.0.0
    assert out.count("loses 1 note written since (it holds 2 notes, schema 2)") == 2, out
    assert cli(sb, "rollback", "staging", "--restore-db", "--yes") == 0
    for node in NODES:
        assert installed(sb, node) == "1.0.0"
        assert get(sb, node, "/health")["version"] == "1.0.0"
        # the dump taken before 3.0.0 was installed: what was written later is gone
        assert titles(sb, node) == ["after-upgrade", "before-upgrade"]
    assert local.exists()


@pytest.mark.parametrize("args,message", [
    (["rollback", "staging", "--to", "9.9.9", "--yes"], "was never installed and healthy"),
    (["rollback", "qa", "--yes"], "unknown environment 'qa'"),
    (["rollback", "staging", "--to", "2.0.0", "--yes"], "was itself rolled back in staging"),
    (["rollback", "staging", "--to", "1;rm", "--yes"], "not a valid Gentoo version"),
    (["rollback", "staging", "--to", "1.0.0"], "needs confirmation"),
    (["rollback", "staging", "--yes"], "no earlier healthy version than 1.0.0"),
])
def test_bad_input(sb, capsys, args, message):
    assert cli(sb, *args) == 2
    err = capsys.readouterr().err
    assert message in err, err


def test_restore_db_without_a_verified_dump_is_refused(sb, capsys):
    shutil.rmtree(sb.central / "dumps" / "staging")
    for node in NODES:
        shutil.rmtree(sb.node_root(node) / "var/lib/notes/backups", ignore_errors=True)
    assert cli(sb, "rollback", "staging", "--to", "1.0.0", "--restore-db", "--yes") == 2
    assert "no verified dump" in capsys.readouterr().err
    for node in NODES:
        assert installed(sb, node) == "1.0.0"


def test_a_database_that_cannot_be_dumped_stops_that_node_before_the_upgrade(sb, capsys):
    """No node is upgraded without a verified dump of its database."""
    add_migration(sb.source, "v4.0.0", number=4)
    db = sb.node_root("staging-2") / "var/lib/notes/notes.db"
    db.unlink()
    db.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)  # a header, then garbage
    assert cli(sb, "promote", "staging", "--json") == 3
    report = json.loads(capsys.readouterr().out)
    nodes = {n["node"]: n for n in report["nodes"]}
    assert nodes["staging-1"]["status"] == "installed" and installed(sb, "staging-1") == "4.0.0"
    bad = nodes["staging-2"]
    assert bad["status"] == "failed" and bad["phase"] == "backup", bad
    assert "staging-2" in bad["detail"] and "dump" in bad["detail"]
    assert installed(sb, "staging-2") == "1.0.0" and bad["after"] == "1.0.0"


def _dump(writes):
    from releaser.backup import DumpBackup

    return DumpBackup(node="n1", version="1.0.0", node_path="/x", central_path="/y", size=1,
                      sha256="0" * 64, schema_version=1, notes=3,
                      created="2026-01-02T03:04:05.000000+00:00", app="notes", writes=writes)


@pytest.mark.parametrize("dump_writes, live, said", [
    ({"notes": 3}, {"notes": 103}, "restoring the dump of 2026-01-02 03:04:05 UTC loses "
                                   "100 notes written since (it holds 3 notes, schema 1)"),
    # an app that does not count, or a database replaced since (its mark went down)
    (None, {"notes": 103}, "(it holds 3 notes, schema 1) loses every write made after it "
                           "(the app did not say how many)"),
    ({"notes": 3}, None, "loses every write made after it"),
    ({"notes": 3}, {"notes": 2}, "loses every write made after it"),
])
def test_what_a_restore_loses_is_said_in_rows_when_the_app_counts_them(dump_writes, live, said):
    from releaser.deploy.rollback import restore_loss, writes_since

    dump = _dump(dump_writes)
    assert said in restore_loss(dump, writes_since(dump, live))
