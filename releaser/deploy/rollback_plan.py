"""The plan of ``releaser rollback ENV``, made touching nothing, and its check under the lock.

Per node: the running version, the target, where the target's binary
package is (node or central store), the database's schema version against
the one the target expects, and what restoring the dump would lose
(``releaser.deploy.rollback`` carries it out).  ``recheck_plan`` is the cheap
check of a plan under the lock when no run touched the environment since it
was made; otherwise the plan is made again.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from releaser import backup
from releaser.appcontract import write_marks
from releaser.backup import compat
from releaser.backup.common import database_password
from releaser.backup.compat import restore_loss, writes_since
from releaser.build import versions as versioning
from releaser.central import ledger as ledger_mod
from releaser.central.ledger import Ledger
from releaser.central.repository import CentralRepository
from releaser.config import AppConfig, Config, EnvironmentConfig
from releaser.deploy.reinstall import binpkg_on_node
from releaser.deploy.rollout import worker_central
from releaser.errors import ReleaseNotFound, ReleaserError, UsageError
from releaser.hosts import bintree
from releaser.hosts.node import Node, connect, shared_connections


@dataclass
class NodePlan:
    node: str
    current: str | None
    target: str
    binpkg: str | None = None  # "node", "central" or None
    db_schema: int | None = None
    target_schema: int | None = None
    dump: dict | None = None
    #: Rows written since the dump, per table (what restoring it loses); None: unknown.
    loses: dict[str, int] | None = None
    #: ``releaser.backup.compat``: "safe without restore", "needs --restore-db", "no dump:
    #: cannot restore" or "unknown"; None when the node is not rolled back.
    verdict: str | None = None
    #: The migrations since the target's schema, ``{"version", "kind"}``.
    since: list[dict] = field(default_factory=list)
    #: The verdict in words (schemas, why, what a restore loses).
    compat: str | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def noop(self) -> bool:
        return versioning.same(self.current, self.target)

    def decision(self) -> tuple:
        """What this node's rollback would do and from what (not the informational rest)."""
        return (self.current, self.target, self.binpkg, tuple(self.problems),
                (self.dump or {}).get("sha256"))

    def to_dict(self) -> dict:
        return dict(self.__dict__, noop=self.noop)


@dataclass
class RollbackPlan:
    env: str
    cp: str
    bad: str | None  # the version being rolled back from
    target: str
    restore_db: bool
    nodes: list[NodePlan] = field(default_factory=list)
    asked: str | None = None  # the --to version, None for "the previous healthy one"
    #: The digest of the ledger's state the plan was made from (``ledger_digest``):
    #: unchanged, no releaser run touched the environment since.
    ledger_state: str | None = None
    #: What each node's Portage said of its binary tree (PKGDIR) while planning: the
    #: execution's connections take it instead of asking again (one Portage start).
    bintrees: dict[str, bintree.Bintree] = field(default_factory=dict, repr=False,
                                                      compare=False)

    @property
    def problems(self) -> list[str]:
        return [f"{n.node}: {p}" for n in self.nodes for p in n.problems]

    @property
    def unsafe(self) -> list[str]:
        """Nodes whose database the target cannot run on as it is, and this plan does not
        restore: a rollback refuses them unless forced."""
        return [f"{n.node}: {n.compat}" for n in self.nodes
                if n.verdict == compat.NO_DUMP
                or (n.verdict == compat.NEEDS_RESTORE and not self.restore_db)]

    def changes_since(self, shown: "RollbackPlan") -> list[str]:
        """What differs from the plan ``shown`` in what the rollback would do."""
        changes = [f"{what} is now {now or 'nothing'}, was {then or 'nothing'}"
                   for what, now, then in (("the version rolled back from", self.bad, shown.bad),
                                           ("the target", self.target, shown.target))
                   if now != then]
        before = {n.node: n for n in shown.nodes}
        for n in self.nodes:
            old = before.pop(n.node, None)
            if old is None:
                changes.append(f"{n.node} was not in the plan")
            elif n.decision() != old.decision():
                changes.append(f"{n.node} changed (runs {n.current or 'nothing'}, was "
                               f"{old.current or 'nothing'}; package {n.binpkg or 'missing'}, "
                               f"was {old.binpkg or 'missing'})")
        changes += [f"{name} left the plan" for name in before]
        return changes

    def to_dict(self) -> dict:
        return {"env": self.env, "from": self.bad, "to": self.target,
                "restore_db": self.restore_db, "problems": self.problems,
                "unsafe": self.unsafe,
                "nodes": [n.to_dict() for n in self.nodes]}


def choose_target(ledger: Ledger, cp_name: str, to: str | None) -> tuple[str | None, str]:
    """(version rolled back from, target version).

    A promote killed before it settled leaves nodes on a version that never
    became current (``Ledger.in_flight``): that is the one rolled back from,
    to ``current``, the version the environment was healthy on before it.
    """
    current = ledger.current
    in_flight = ledger.in_flight()
    if in_flight is not None and current is not None and not versioning.same(in_flight, current):
        if to is None:
            return in_flight, current
        current = in_flight
    if to is not None:
        versioning.validate(to)
        entry = ledger.release(to)
        if entry is None or not entry.get("healthy_at"):
            raise ReleaseNotFound(f"{cp_name}-{to} was never installed and healthy in "
                                  f"{ledger.env}; nothing to roll back to")
        if entry.get("state") == ledger_mod.WITHDRAWN:
            raise UsageError(f"{cp_name}-{to} was itself rolled back in {ledger.env} and is "
                             f"masked there ({entry.get('reason', 'no reason recorded')})")
        return current, ledger.spelling(to)
    if current is None:
        raise UsageError(f"nothing has been promoted to {ledger.env} yet: nothing to roll back")
    for version in reversed(ledger.current_history()):
        entry = ledger.release(version) or {}
        if not versioning.same(version, current) and entry.get("healthy_at") and \
                entry.get("state") != ledger_mod.WITHDRAWN:
            return current, version
    raise UsageError(f"{ledger.env} has no earlier healthy version than {current} to roll back to")


def ledger_digest(ledger: Ledger) -> str:
    """A digest of the ledger's state: every promote and rollback changes it (each node's
    journal entry is stamped), so an equal digest means none ran in between."""
    text = json.dumps(ledger.data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def plan_rollback(config: Config, central: CentralRepository, env_name: str, *,
                  to: str | None = None, restore_db: bool = False) -> RollbackPlan:
    """What a rollback of ``env_name`` would do, touching nothing.

    Nodes are asked in parallel (the environment's concurrency, each over a
    connection of its own; the central host's shared per run): each costs a
    few Portage and app questions (~1 s), which one after the other would make
    a fleet's plan as slow as the rollback itself.
    """
    env = config.environment(env_name)
    ledger = Ledger.load(central, env_name)
    bad, target = choose_target(ledger, config.app.name, to)
    plan = RollbackPlan(env_name, config.app.cp, bad, target, restore_db, asked=to,
                        ledger_state=ledger_digest(ledger))
    target_schema = ledger.schema_of(target)

    workers = max(1, min(env.policy.concurrency, len(env.nodes)))

    def plan_one(node_cfg) -> tuple[NodePlan, bintree.Bintree | None]:
        np = NodePlan(node_cfg.name, None, target, target_schema=target_schema)
        if workers == 1:  # one thread at a time: the caller's connection serves
            return np, _plan_on(config, central, env, node_cfg, np, restore_db)
        with worker_central(central) as own_central:
            return np, _plan_on(config, own_central, env, node_cfg, np, restore_db)

    with shared_connections(config), ThreadPoolExecutor(max_workers=workers) as pool:
        for np, tree in pool.map(plan_one, env.nodes):
            plan.nodes.append(np)
            if tree is not None:
                plan.bintrees[np.node] = tree
    return plan


def _plan_on(config: Config, central: CentralRepository, env: EnvironmentConfig, node_cfg,
             np: NodePlan, restore_db: bool) -> bintree.Bintree | None:
    """Fill ``np`` from the node; what its Portage said of its binary tree, if asked."""
    try:
        node = connect(config, node_cfg)
    except ReleaserError as exc:
        np.problems.append(f"unreachable: {exc}")
        return None
    try:
        _plan_node(node, central, env, config.app, f"{config.app.cp}-{np.target}", np,
                   restore_db)
    except ReleaserError as exc:
        np.problems.append(str(exc))
    finally:
        node.close()
    return bintree.known_bintree(node.runner)


def _plan_node(node: Node, central, env: EnvironmentConfig, app: AppConfig, target_cpv: str,
               np: NodePlan, restore_db: bool) -> None:
    np.current = node.installed_version(app.cp)
    if np.noop and not restore_db:
        return
    np.binpkg = _binpkg_source(node, central, env.name, target_cpv)
    if np.binpkg is None:
        np.problems.append(f"no binary package of {target_cpv} on the node or the central store")
    health = node.health(None, timeout=3.0)
    np.db_schema = health.db_schema_version
    password = database_password(env.database)
    stats = backup.database_stats(node, app.contract, env.database.path, password=password)
    if stats and isinstance(stats.get("schema_version"), int):
        np.db_schema = stats["schema_version"]  # the database's own word, even when down
    if np.db_schema is not None and np.target_schema is not None:
        if np.db_schema > np.target_schema:
            np.warnings.append(
                f"database schema {np.db_schema} is newer than {np.target} expects "
                f"({np.target_schema}): without --restore-db the old code runs on the newer schema")
    elif np.target_schema is None:
        np.warnings.append(f"schema version of {np.target} unknown (never seen healthy here)")
    dump = backup.latest_dump(central, env.name, node.name, version=np.target)
    if dump is not None:
        np.dump = dump.to_dict()
        np.loses = writes_since(dump, write_marks(stats))
        np.warnings.append(restore_loss(dump, np.loses))
    elif env.database and np.current is not None:
        np.warnings.append(f"no verified dump of the database taken while {np.target} ran")
    _check_dump(np, restore_db)
    if not np.noop:
        verdict = compat.assess(stats, np.db_schema, np.target_schema, dump, write_marks(stats))
        np.verdict, np.since, np.compat = verdict.verdict, verdict.since, \
            verdict.describe(np.target)


def _binpkg_source(node: Node, central, env: str, target_cpv: str) -> str | None:
    """Where the target's binary package is: "node", "central", or None (nowhere)."""
    if binpkg_on_node(node, target_cpv):
        return "node"
    return "central" if backup.find_binpkg(central, env, target_cpv) else None


def _check_dump(np: NodePlan, restore_db: bool) -> None:
    if np.dump is None and restore_db:
        np.problems.append("--restore-db asked, but there is no verified dump to restore")


def recheck_plan(config: Config, central: CentralRepository, shown: RollbackPlan,
                 opened: dict[str, Node]) -> RollbackPlan:
    """``shown`` with what its decisions rest on read again, the cheap way.

    For a plan whose ledger state is still the environment's (no promote or
    rollback ran since, ``ledger_digest``): per node only what can change
    without the ledger knowing, by hand: the version it runs, where the
    target's package is, the dump a restore would use.  The database's
    schema and the health answer are not asked again: only a release
    changes them, and a release changes the ledger.  A node with problems in
    ``shown`` keeps them (it is skipped or refused as shown).  The nodes
    connected for it are left open in ``opened`` for the rollback to use.
    """
    env = config.environment(shown.env)
    target_cpv = f"{shown.cp}-{shown.target}"
    plan = replace(shown, nodes=[])
    for old in shown.nodes:
        np = replace(old, problems=list(old.problems), warnings=list(old.warnings))
        plan.nodes.append(np)
        if old.problems:
            continue
        try:
            node = opened[np.node] = connect(config, next(n for n in env.nodes
                                                         if n.name == np.node))
            if np.node in shown.bintrees:
                bintree.remember_bintree(node.runner, shown.bintrees[np.node])
            np.current = node.installed_version(config.app.cp)
            if np.noop and not shown.restore_db:
                np.binpkg = None
                continue
            np.binpkg = _binpkg_source(node, central, env.name, target_cpv)
        except ReleaserError as exc:
            np.problems.append(str(exc))
            continue
        if np.binpkg is None:
            np.problems.append(f"no binary package of {target_cpv} on the node or the "
                               "central store")
        dump = backup.latest_dump(central, env.name, np.node, version=shown.target)
        np.dump = dump.to_dict() if dump is not None else None
        _check_dump(np, shown.restore_db)
    return plan
