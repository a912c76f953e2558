"""Nodes of a batch already healthy on a release that the rollout then withdraws.

They are left running it (healthy; taking them down would be a second,
unplanned change), but said to be on a withdrawn version, node by node and in
one warning naming the command that puts them back; that command does.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from releaser.cli import main
from releaser.deploy.rollout import INSTALLED, ROLLED_BACK, SKIPPED, NodeOutcome, still_on_withdrawn
from releaser.hosts import portage_commands as portage_tools
from releaser.hosts.local_root import portage_env
from releaser.hosts.runner import LocalRunner

from .sandboxes import Sandbox, add_migration


def cli(sb, *args):
    return main(["-c", str(sb.config_path), *args])


def installed(sb, node):
    root = sb.node_root(node)
    return portage_tools.installed_version(LocalRunner(env=portage_env(root)), str(root),
                                           "www-apps/notes")


@pytest.fixture
def sb(tmp_path):
    sandbox = Sandbox(tmp_path, {"staging": 2})
    yield sandbox
    sandbox.down()


def test_healthy_nodes_of_a_withdrawn_batch_are_reported_and_rollback_brings_them_back(
        sb, capsys):
    assert cli(sb, "promote", "staging") == 0
    # staging-2's database already has the column 1.1.0's migration adds: there, and
    # only there, 1.1.0 cannot start, and 1.0.0 can again
    with sqlite3.connect(sb.node_root("staging-2") / "var/lib/notes/notes.db") as db:
        db.execute("ALTER TABLE notes ADD COLUMN extra2 TEXT")
    add_migration(sb.source, "v1.1.0")
    capsys.readouterr()
    code = cli(sb, "promote", "staging", "--canary", "0", "--batch-size", "0", "--json")
    report = json.loads(capsys.readouterr().out)
    nodes = {n["node"]: n for n in report["nodes"]}
    assert code != 0 and report["halted"], json.dumps(report, indent=1)
    assert nodes["staging-2"]["status"] == "rolled-back"
    assert nodes["staging-1"]["status"] == "installed"
    assert nodes["staging-1"]["detail"].endswith(
        "; but 1.1.0 was withdrawn after: this node still runs it")
    assert ("staging-1 became healthy on 1.1.0 before the rollout halted and still run it, "
            "although 1.1.0 is now withdrawn: `releaser rollback staging --to 1.0.0` puts "
            "them back on it") in report["warnings"]
    assert (installed(sb, "staging-1"), installed(sb, "staging-2")) == ("1.1.0", "1.0.0")

    assert cli(sb, "rollback", "staging", "--to", "1.0.0", "--yes") == 0
    assert (installed(sb, "staging-1"), installed(sb, "staging-2")) == ("1.0.0", "1.0.0")


def test_nothing_to_say_when_no_node_kept_the_release():
    nodes = [NodeOutcome("a", ROLLED_BACK, detail="x"), NodeOutcome("b", SKIPPED, detail="y")]
    assert still_on_withdrawn(nodes, "1.1.0", "staging", "1.0.0") is None
    assert [n.detail for n in nodes] == ["x", "y"]
    first = NodeOutcome("c", INSTALLED, detail="healthy on 1.1.0")
    assert still_on_withdrawn([first], "1.1.0", "qa", None) == (
        "c became healthy on 1.1.0 before the rollout halted and still run it, although "
        "1.1.0 is now withdrawn: promote a fixed release to replace it")
