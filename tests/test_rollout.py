"""Rollout over a fleet of SSH nodes: parallel, canary, automatic rollback, resuming after kill -9.

Every node is a real sshd on its own 127.0.0.x address with a pinned host key,
real Portage behind it.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest

from releaser.sandbox import noderoot
from releaser.hosts import portage_commands as portage_tools
from releaser.central.ledger import Ledger
from releaser.central.repository import CentralRepository
from releaser.cli import main
from releaser.hosts.runner import LocalRunner

from .conftest import commit_all, git
from .sandboxes import Sandbox, add_migration, kill_9_when, wait_for_orphaned_emerges

NODES = ("staging-1", "staging-2", "staging-3", "staging-4")


def cli(sb, *args):
    return main(["-c", str(sb.config_path), *args])


def installed(sb, node):
    root = sb.node_root(node)
    return portage_tools.installed_version(LocalRunner(env=noderoot.portage_env(root)),
                                           str(root), "www-apps/notes")


def health_version(sb, node):
    url = next(n.health_url for n in sb.config.environment("staging").nodes if n.name == node)
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())["version"]


def broken_release(source: Path, tag: str) -> None:
    """A release that installs but cannot start: its migration fails when it runs."""
    schema = source / "app" / "notes" / "schema.py"
    text = schema.read_text()
    at = text.rindex("\n]")
    schema.write_text(text[:at] + "\n    (2, \"additive\", \"\"\"INSERT INTO no_such_table VALUES (1);\"\"\"),"
                      + text[at:])
    commit_all(source, "broken", when="2026-03-01T00:00:00+00:00")
    git(source, "tag", tag)


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    sandbox = Sandbox(tmp_path_factory.mktemp("rollout"), {"staging": 4}, ssh=True)
    yield sandbox
    sandbox.down()


def test_parallel_promote(sb, capsys):
    assert cli(sb, "promote", "staging", "--concurrency", "4", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and {n["status"] for n in report["nodes"]} == {"installed"}
    for node in NODES:
        assert installed(sb, node) == "1.0.0" and health_version(sb, node) == "1.0.0"
        # The first install put notes in the node's default runlevel, where OpenRC reads it.
        link = sb.node_root(node) / "etc/runlevels/default/notes"
        assert os.readlink(link) == "/etc/init.d/notes"
    assert all(n["detail"].endswith("notes starts at boot (default runlevel)")
               for n in report["nodes"]), report["nodes"]
    central = CentralRepository(LocalRunner(host="central"), str(sb.central))
    assert sorted(e["node"] for e in Ledger.load(central, "staging").events("service_enabled")) \
        == sorted(NODES)


def test_canary_failure_rolls_back_and_touches_no_other_node(sb, capsys):
    broken_release(sb.source, "v1.1.0")
    code = cli(sb, "promote", "staging", "--canary", "1", "--batch-size", "1", "--json")
    report = json.loads(capsys.readouterr().out)
    assert code == 4, json.dumps(report, indent=1)
    nodes = {n["node"]: n for n in report["nodes"]}
    assert nodes["staging-1"]["status"] == "rolled-back"
    assert nodes["staging-1"]["after"] == "1.0.0"
    assert "migrat" in nodes["staging-1"]["detail"]
    assert {nodes[n]["status"] for n in NODES[1:]} == {"skipped"}
    assert "canary" in report["halted"]
    for node in NODES:
        assert installed(sb, node) == "1.0.0" and health_version(sb, node) == "1.0.0"
    # the bad version is withdrawn: masked, and a second promote of it is refused
    assert cli(sb, "promote", "staging") == 2
    assert "masked" in capsys.readouterr().err


def test_kill_9_mid_rollout_then_rerun_completes(sb, capsys):
    git(sb.source, "reset", "-q", "--hard", "v1.0.0")
    add_migration(sb.source, "v1.2.0")
    seen = kill_9_when(sb, ["promote", "staging", "--concurrency", "1"], "staging-2: install")
    assert any("staging-1: installed" in line for line in seen), seen
    wait_for_orphaned_emerges()
    code = cli(sb, "promote", "staging", "--json")
    report = json.loads(capsys.readouterr().out)
    assert code == 0, json.dumps(report["nodes"], indent=1)
    statuses = {n["node"]: n["status"] for n in report["nodes"]}
    assert statuses["staging-1"] == "unchanged"
    assert statuses["staging-3"] == statuses["staging-4"] == "installed"
    for node in NODES:
        assert installed(sb, node) == "1.2.0" and health_version(sb, node) == "1.2.0"


@pytest.mark.parametrize("args", [
    ["promote", "staging", "--ref", "HEAD;touch /tmp/releaser-pwned"],
    ["promote", "staging", "--ref", "$(touch /tmp/releaser-pwned)"],
    ["promote", "production", "--version", "1.0.0;touch /tmp/releaser-pwned"],
])
def test_shell_metacharacters_are_refused_before_any_command(sb, capsys, args):
    assert cli(sb, *args) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("releaser: error:")
    assert not Path("/tmp/releaser-pwned").exists()


def test_a_worker_closing_central_does_not_cut_another_workers_command(sb, capsys, monkeypatch,
                                                                       tmp_path):
    """Workers share the run's one connection to central (releaser.hosts.ssh's pool):
    one worker's ``close`` of it does not take another's command down.

    staging-2 runs a command on central that lasts until staging-1 has closed
    its central runner; the pool keeps the connection for the run, so
    staging-2's command, on a channel of the same connection, finishes.
    """
    import time

    from releaser import backup

    started, go = tmp_path / "started", tmp_path / "go"
    real_backup = backup.backup_package

    def backup_package(node, central, env, cpv):
        if node.name == "staging-2":
            central.runner.run(["sh", "-c", f"touch {started}; i=0; while [ ! -e {go} ] && "
                                f"[ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; test -e {go}"])
        elif node.name == "staging-1":
            deadline = time.monotonic() + 60
            while not started.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            central.runner.close()
            go.touch()
        return real_backup(node, central, env, cpv)

    monkeypatch.setattr(backup, "backup_package", backup_package)
    (sb.source / "app" / "CHANGES").write_text("1.3.0\n")
    commit_all(sb.source, "notes 1.3.0", when="2026-04-01T00:00:00+00:00")
    git(sb.source, "tag", "v1.3.0")
    code = cli(sb, "promote", "staging", "--concurrency", "4", "--json")
    report = json.loads(capsys.readouterr().out)
    assert started.exists() and go.exists()  # the two commands did overlap
    assert code == 0, json.dumps(report["nodes"], indent=1)
    for node in NODES:
        assert installed(sb, node) == "1.3.0" and health_version(sb, node) == "1.3.0"


def test_an_install_whose_postinst_failed_is_rolled_back(tmp_path, capsys):
    """emerge fails after the merge: the vdb holds the new version, the node is put back."""
    local = Sandbox(tmp_path, {"staging": 1})
    try:
        assert cli(local, "promote", "staging") == 0
        (local.source / "app" / "CHANGES").write_text("1.1.0\n")
        commit_all(local.source, "notes 1.1.0", when="2026-02-01T00:00:00+00:00")
        git(local.source, "tag", "v1.1.0")
        # A site hook of the node's Portage (/etc/portage/env/CAT/PN) that fails
        # the new version's pkg_postinst, as any post-install step of a host can.
        hook = local.node_root("staging-1") / "etc/portage/env/www-apps/notes"
        hook.parent.mkdir(parents=True)
        hook.write_text('post_pkg_postinst() {\n'
                        '\t[[ ${PV} == 1.1.0 ]] && die "site post-install step failed"\n}\n')
        capsys.readouterr()
        code = cli(local, "promote", "staging", "--json")
        report = json.loads(capsys.readouterr().out)
        node = report["nodes"][0]
        assert code == 4, json.dumps(node, indent=1)
        assert node["status"] == "rolled-back" and node["after"] == "1.0.0", node
        assert "postinst" in node["detail"] and "recorded as installed" in node["detail"], node
        assert installed(local, "staging-1") == "1.0.0"
        assert health_version(local, "staging-1") == "1.0.0"

        # Failed before the merge: the vdb still says 1.0.0, which still serves.
        (local.source / "app" / "CHANGES").write_text("1.2.0\n")
        commit_all(local.source, "notes 1.2.0", when="2026-03-01T00:00:00+00:00")
        git(local.source, "tag", "v1.2.0")
        hook.write_text('pre_pkg_preinst() {\n'
                        '\t[[ ${PV} == 1.2.0 ]] && die "site pre-install step failed"\n}\n')
        code = cli(local, "promote", "staging", "--json")
        node = json.loads(capsys.readouterr().out)["nodes"][0]
        assert code == 3, json.dumps(node, indent=1)
        assert node["status"] == "failed" and node["after"] == "1.0.0", node
        assert "preinst" in node["detail"] and "still on 1.0.0: healthy" in node["detail"], node
        assert installed(local, "staging-1") == "1.0.0"
        assert health_version(local, "staging-1") == "1.0.0"
    finally:
        local.down()


def test_the_runlevel_is_asked_for_until_the_ledger_says_the_service_is_there(tmp_path):
    """rc-update runs at a node's first install and at each upgrade until the service is
    in the default runlevel; then the ledger says so and upgrades ask the host no more."""
    from types import SimpleNamespace

    from releaser.deploy.rollout import NodeOutcome, NodeRollout

    central = CentralRepository(LocalRunner(host="central"), str(tmp_path / "central"))
    central.init()
    ledger = Ledger.load(central, "staging")
    asked = []
    node = SimpleNamespace(name="web1", enable=lambda service: asked.append(service) or True)
    config = SimpleNamespace(app=SimpleNamespace(contract=SimpleNamespace(service="notes")))
    rollout = NodeRollout(config, None, None, central, ledger, lambda _line: None)

    def healthy(before):
        out = NodeOutcome("web1", "installed", before=before, detail="healthy on 2.0.0")
        rollout._enable_at_boot(node, out)
        return out

    assert healthy(None).detail.endswith("notes starts at boot (default runlevel)")
    ledger.save()
    assert Ledger.load(central, "staging").at_boot("web1") == "notes"
    assert healthy("1.0.0").detail == "healthy on 2.0.0" and asked == ["notes"]
    healthy(None)  # a first install (a host rebuilt under the same name): asked again
    assert asked == ["notes", "notes"]
    assert [e["node"] for e in ledger.events("service_enabled")] == ["web1", "web1"]
