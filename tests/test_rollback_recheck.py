"""What a rollback asks a node, and the check under the lock that the plan still holds.

One story on one SSH sandbox node (module-scoped, tests in file order):
1.0.0, then 2.0.0 (its backup asks Portage's binary tree once), a plan whose
node changed before it ran is refused, and the rollback asks the bintree once
per node (in its plan), does not plan again under the lock when no run
touched the environment since the plan, and connects to the node once (the
check, the node's rollback and the sync after the mask share it).
"""

from __future__ import annotations

import shutil
from collections import Counter

import pytest

from releaser.central.repository import CentralRepository
from releaser.deploy import promote as promote_mod
from releaser.deploy import rollback, rollback_plan
from releaser.central.ledger import Ledger
from releaser.errors import RollbackRefused
from releaser.hosts import bintree
from releaser.hosts import portage_commands as portage_tools
from releaser.hosts.runner import LocalRunner
from releaser.hosts.ssh import SSHRunner
from releaser.sandbox import noderoot

from .sandboxes import Sandbox, add_migration

ENV, NODE, CP = "staging", "staging-1", "www-apps/notes"


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    sandbox = Sandbox(tmp_path_factory.mktemp("recheck"), {ENV: 1}, ssh=True)
    assert promote_mod.promote(sandbox.config, ENV).ok
    add_migration(sandbox.source, "v2.0.0", number=2)
    yield sandbox
    sandbox.down()


@pytest.fixture
def bintree_asks(monkeypatch) -> Counter:
    """How often Portage's binary tree is asked (a Python start on the node), per host."""
    asks: Counter = Counter()
    real = bintree._ask_bintree

    def counting(runner, action, cpv):
        asks[getattr(runner, "host", "?")] += 1
        return real(runner, action, cpv)

    monkeypatch.setattr(bintree, "_ask_bintree", counting)
    return asks


def central(sb: Sandbox) -> CentralRepository:
    return CentralRepository.from_config(sb.config)


def installed(sb: Sandbox) -> str | None:
    runner = LocalRunner(env=noderoot.portage_env(sb.node_root(NODE)))
    return portage_tools.installed_version(runner, str(sb.node_root(NODE)), CP)


def test_a_promote_backup_asks_the_bintree_once(sb, bintree_asks):
    assert promote_mod.promote(sb.config, ENV).ok
    assert installed(sb) == "2.0.0"
    # the node's packages listed, quickpkg's before and after: one Portage start
    assert bintree_asks[NODE] == 1, bintree_asks


def test_a_node_that_changed_since_the_plan_is_refused(sb):
    plan = rollback.plan_rollback(sb.config, central(sb), ENV, to="1.0.0")
    assert [(n.current, n.binpkg) for n in plan.nodes] == [("2.0.0", "node")]
    # meanwhile, by hand: the node loses its own package of the target
    package = sb.node_root(NODE) / "var/cache/binpkgs/www-apps/notes-1.0.0.gpkg.tar"
    kept = package.with_name("kept")
    shutil.move(package, kept)
    try:
        with pytest.raises(RollbackRefused, match=r"changed since the rollback plan was made: "
                           r"staging-1 changed \(runs 2.0.0, was 2.0.0; package central, "
                           r"was node\)"):
            rollback.execute_rollback(sb.config, central(sb), plan)
    finally:
        shutil.move(kept, package)
    assert installed(sb) == "2.0.0"


def test_a_rollback_asks_the_bintree_once_per_node_and_does_not_plan_again(
        sb, bintree_asks, monkeypatch):
    repository = central(sb)
    plan = rollback.plan_rollback(sb.config, repository, ENV, to="1.0.0")
    assert bintree_asks[NODE] == 1, bintree_asks
    planned, connected = [], Counter()
    real_plan_node = rollback_plan._plan_node
    monkeypatch.setattr(rollback_plan, "_plan_node",
                        lambda *a, **k: planned.append(a) or real_plan_node(*a, **k))
    real_connection = SSHRunner._new_connection

    def counting_connection(self):
        connected[self.host] += 1
        return real_connection(self)

    monkeypatch.setattr(SSHRunner, "_new_connection", counting_connection)
    report = rollback.execute_rollback(sb.config, repository, plan)
    assert report.ok, report.to_dict()
    assert installed(sb) == "1.0.0"
    # the check under the lock, the backup of 2.0.0 and the install of 1.0.0 take
    # PKGDIR from the plan: no Portage start on the node; no health or database
    # question asked again
    assert bintree_asks[NODE] == 1, bintree_asks
    assert planned == []
    # ... and one connection to it, the sync after the mask included
    assert any(e["kind"] == "mask-synced" for e in Ledger.load(repository, ENV).events())
    assert connected[NODE] == 1, connected


def test_the_command_plans_and_rolls_back_on_one_connection_per_host(sb, monkeypatch):
    """``releaser rollback --yes``: the plan and the rollback share the run's connections."""
    from releaser.cli import main

    add_migration(sb.source, "v3.0.0", number=3)  # 2.0.0 is masked since its rollback
    assert promote_mod.promote(sb.config, ENV).ok
    connected: Counter = Counter()
    real_connection = SSHRunner._new_connection

    def counting_connection(self):
        connected[self.host] += 1
        return real_connection(self)

    monkeypatch.setattr(SSHRunner, "_new_connection", counting_connection)
    assert main(["-c", str(sb.config_path), "rollback", ENV, "--to", "1.0.0", "--yes"]) == 0
    assert installed(sb) == "1.0.0"
    assert connected[NODE] == 1 and set(connected.values()) == {1}, connected
