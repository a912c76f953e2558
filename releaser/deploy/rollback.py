"""``releaser rollback ENV``: put the previous version back, knowing first
whether that is safe.

1. Plan, touching nothing: per node the running version, the target, where
   the target's binary package is (node or central store), the database's
   schema version against the one the target expects, and what restoring the
   dump would lose.  Any node that cannot roll back makes the plan refuse,
   unless ``--force`` with a reason.
2. Execute, per node: take a binary package of the running version (so rolling
   forward stays possible), install the target from its binary package
   (``emerge --usepkgonly``; fetched from the central store when the node lacks
   it), restore the database only with ``--restore-db`` and only from a
   verified dump, restart, health-check.
3. Mask the bad version in the environment's overlay, by a commit saying why,
   so no later sync or world update brings it back; record everything.

Each step reads the node's real state first, so a rollback interrupted midway
is finished by running it again.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Callable, Iterator

from releaser import backup
from releaser.backup import compat
from releaser.backup.common import database_password
from releaser.backup.compat import restore_loss, writes_since
from releaser.appcontract import write_marks
from releaser.central import ledger as ledger_mod
from releaser.build import versions as versioning
from releaser.central.repository import CentralRepository
from releaser.config import AppConfig, Config, EnvironmentConfig
from releaser.errors import ReleaseNotFound, ReleaserError, RollbackRefused, UsageError
from releaser.deploy.fleet import RolloutPolicy, plan_stages, run_stages
from releaser.central.audit import Actor
from releaser.central.ledger import Ledger
from releaser.central.masking import mask_version
from releaser.central.lock import EnvironmentLock
from releaser.deploy.notify import Notifier
from releaser.hosts.node import Node, connect, shared_connections
from releaser.deploy.hooks import POST_NODE, PRE_NODE, NodeHooks
from releaser.deploy.reinstall import binpkg_on_node, reinstall_package, sync_nodes
from releaser.deploy.interrupts import interrupted_by, record_interruption
from releaser.deploy.rollout import (FleetReport, FAILED, INSTALLED, SKIPPED, UNCHANGED, NodeOutcome,
                                     worker_central)
from releaser.hosts.services import OpenRC
from releaser.trust.secrets import deliver_for, has_secrets

Progress = Callable[[str], None]


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


@dataclass
class RollbackReport(FleetReport):
    plan: RollbackPlan
    masked: bool = False

    @property
    def ok(self) -> bool:
        return not self.halted and all(n.status in (INSTALLED, UNCHANGED) for n in self.nodes)

    def to_dict(self) -> dict:
        return {**self.plan.to_dict(), "ok": self.ok, "masked": self.masked,
                "warnings": self.warnings, "halted": self.halted,
                "interrupted": self.interrupted, "seconds": round(self.seconds, 3),
                "results": [n.to_dict() for n in self.nodes]}


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
    env = config.environment(env_name)
    ledger = Ledger.load(central, env_name)
    bad, target = choose_target(ledger, config.app.name, to)
    plan = RollbackPlan(env_name, config.app.cp, bad, target, restore_db, asked=to,
                        ledger_state=ledger_digest(ledger))
    target_cpv = f"{config.app.cp}-{target}"
    for node_cfg in env.nodes:
        np = NodePlan(node_cfg.name, None, target, target_schema=ledger.schema_of(target))
        plan.nodes.append(np)
        try:
            node = connect(config, node_cfg)
        except ReleaserError as exc:
            np.problems.append(f"unreachable: {exc}")
            continue
        try:
            _plan_node(node, central, env, config.app, target_cpv, np, restore_db)
        except ReleaserError as exc:
            np.problems.append(str(exc))
        finally:
            node.close()
    return plan


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


def execute_rollback(config: Config, central: CentralRepository, plan: RollbackPlan, *,
                     force_reason: str | None = None, progress: Progress = lambda _m: None,
                     concurrency: int | None = None,
                     stop: threading.Event | None = None,
                     reason: str | None = None) -> RollbackReport:
    """Carry out ``plan``, as shown to the user, under the environment's lock.

    ``reason``: the operator's why, on every event the rollback records.

    ``stop``, once set (an operator's SIGINT), starts no further node: the
    nodes in flight finish, the interruption is recorded, and the version
    rolled back from is neither withdrawn nor masked until a run finishes.

    The plan was made before the lock was taken: another run may have changed
    the environment since.  It is checked again under the lock (made again
    when the ledger changed, ``recheck_plan`` when it did not), and any
    difference in what it would do refuses the rollback, so what runs (and
    the version masked, the ledger's current one) is what was confirmed.
    """
    with shared_connections(config):
        return _execute(config, central, plan, force_reason=force_reason, progress=progress,
                        concurrency=concurrency, stop=stop, reason=reason)


def _execute(config: Config, central: CentralRepository, plan: RollbackPlan, *,
             force_reason: str | None, progress: Progress, concurrency: int | None,
             stop: threading.Event | None, reason: str | None) -> RollbackReport:
    """``execute_rollback`` with each SSH host connected once for the run: the check
    under the lock, each node's rollback and the sync after the mask share a node's
    connection (and what its Portage said of its binary tree)."""
    started = time.monotonic()
    env = config.environment(plan.env)
    _refuse_problems(plan, force_reason)
    opened: dict[str, Node] = {}
    with EnvironmentLock(central, plan.env, f"rollback {plan.env} to {plan.target}",
                         lease=config.central.lock_lease), \
            Notifier(env.notify, plan.env, "rollback") as notifier, \
            _closing(opened):
        ledger = Ledger.load(central, plan.env, Actor.here(reason or force_reason))
        shown = plan
        if plan.ledger_state is not None and plan.ledger_state == ledger_digest(ledger):
            plan = recheck_plan(config, central, shown, opened)
        else:
            plan = plan_rollback(config, central, plan.env, to=plan.asked,
                                 restore_db=plan.restore_db)
        changes = plan.changes_since(shown)
        if changes:
            raise RollbackRefused(f"{plan.env} changed since the rollback plan was made: "
                                  + "; ".join(changes) + "; nothing was done, run the "
                                  "rollback again to see the new plan")
        _refuse_problems(plan, force_reason)
        report = RollbackReport(plan)
        ledger.event("rollback-start", target=plan.target, bad=plan.bad,
                     restore_db=plan.restore_db, force=force_reason,
                     nodes=[n.node for n in plan.nodes])
        notifier.send("start", f"rolling back {plan.bad or 'nothing'} to {plan.target}",
                      target=plan.target, bad=plan.bad, restore_db=plan.restore_db,
                      nodes=[n.node for n in plan.nodes])
        by_name = {n.name: n for n in env.nodes}
        todo = [by_name[n.node] for n in plan.nodes if not n.problems]
        skipped = [n for n in plan.nodes if n.problems]
        for n in skipped:
            report.nodes.append(NodeOutcome(n.node, FAILED, before=n.current, after=n.current,
                                            phase="plan", detail="; ".join(n.problems)))
        work = _NodeRollback(config, env, central, plan, ledger, progress, opened=opened)
        policy = RolloutPolicy(concurrency=concurrency or env.policy.concurrency,
                               max_fail="100%")
        run = run_stages(plan_stages(todo, policy), work, policy=policy,
                         failed=lambda o: o.status == FAILED, stop=stop,
                         on_stage=lambda i, stage: notifier.send(
                             "stage", f"stage {i + 1}: {', '.join(n.name for n in stage)}",
                             stage=i + 1, nodes=[n.name for n in stage], target=plan.target))
        report.nodes += [o for _n, o in run.results]
        report.nodes += [NodeOutcome(n.name, SKIPPED, detail=f"not touched: {run.halted}")
                         for n in run.untouched]
        report.halted, report.interrupted = run.halted, interrupted_by(stop, run.untouched)
        if report.interrupted:
            record_interruption(ledger, "rollback", report.interrupted, run, progress,
                                target=plan.target, bad=plan.bad)
            notifier.send("interrupted", f"rollback to {plan.target} interrupted",
                          target=plan.target, interrupted=report.interrupted)
        done = not run.untouched and all(o.status in (INSTALLED, UNCHANGED)
                                         for _n, o in run.results)
        withdraw = done and bool(plan.bad) and not versioning.same(plan.bad, plan.target)
        why = _reason(plan, force_reason)
        if done:
            nodes = [o.node for _n, o in run.results]
            if withdraw:
                ledger.set_release(plan.bad, ledger_mod.WITHDRAWN, reason=why, masked=False,
                                   nodes=nodes)
            if not skipped:
                ledger.set_current(plan.target, "rollback", nodes=nodes)
        ledger.save()  # the outcome first: the mask below may fail, this must not be lost
        if withdraw and _mask_withdrawn(central, plan, why, ledger, report):
            synced = [o.node for _n, o in run.results]
            report.warnings += sync_nodes(config, env, synced)
            ledger.event("mask-synced", version=plan.bad, nodes=synced)
        ledger.save()
        notifier.send("finish", f"rollback to {plan.target} {'done' if done else 'failed'}",
                      target=plan.target, bad=plan.bad, ok=done,
                      nodes={o.node: o.status for o in report.nodes})
    report.warnings += notifier.problems()
    report.seconds = time.monotonic() - started
    return report


@contextlib.contextmanager
def _closing(opened: dict[str, Node]) -> Iterator[None]:
    """Close the nodes left in ``opened`` (connected by ``recheck_plan``, not taken by
    a node's rollback) on the way out."""
    try:
        yield
    finally:
        for node in list(opened.values()):
            node.close()
        opened.clear()


def _refuse_problems(plan: RollbackPlan, force_reason: str | None) -> None:
    if plan.problems and not force_reason:
        raise RollbackRefused("cannot roll back: " + "; ".join(plan.problems)
                              + " (fix it, or --force REASON to roll back the other nodes)")
    if plan.unsafe and not force_reason:
        raise RollbackRefused("unsafe without a database restore: " + "; ".join(plan.unsafe)
                              + " (--restore-db to restore the dump, or --force REASON to run "
                              f"{plan.target} on the database as it is)")


def _mask_withdrawn(central: CentralRepository, plan: RollbackPlan, reason: str, ledger: Ledger,
                    report: RollbackReport) -> bool:
    """Mask the version rolled back from; a failure is reported, the ledger keeps the rest.

    True when the overlay masks it (now or already).
    """
    def mask() -> None:
        report.masked = mask_version(central, plan.env, plan.cp, plan.bad, reason)

    failure = ledger.side_step("mask", mask)
    if failure is None:
        ledger.note_release(plan.bad, masked=True)
    else:
        report.warnings.append(f"{failure}; {plan.cp}-{plan.bad} is withdrawn in the ledger "
                               "but still offered by the overlay: mask it by hand")
    return failure is None


def _reason(plan: RollbackPlan, force_reason: str | None) -> str:
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    text = f"rolled back from {plan.bad} to {plan.target} on {when} by {getpass.getuser()}"
    return text + (f" (forced: {force_reason})" if force_reason else "")


@dataclass
class _NodeRollback:
    config: Config
    env: EnvironmentConfig
    central: CentralRepository
    plan: RollbackPlan
    ledger: Ledger
    progress: Progress
    #: A server database the environment's nodes share is restored once per rollback.
    shared: "_SharedRestore" = field(default_factory=lambda: _SharedRestore())
    #: Nodes already connected (``recheck_plan``), taken by their node's rollback.
    opened: dict[str, Node] = field(default_factory=dict)
    #: The hooks around this call's node (set by ``_work``).
    _hooks: NodeHooks | None = field(default=None, init=False, repr=False)

    def __call__(self, node_cfg) -> NodeOutcome:
        with worker_central(self.central) as central:
            return replace(self, central=central)._work(node_cfg)

    def _work(self, node_cfg) -> NodeOutcome:
        started = time.monotonic()
        app = self.config.app
        target_cpv = f"{app.cp}-{self.plan.target}"
        out = NodeOutcome(node_cfg.name, FAILED, phase="connect")
        node = None
        self._hooks = NodeHooks(self.env, node_cfg, "rollback", self.plan.target)
        try:
            node = self.opened.pop(node_cfg.name, None) or connect(self.config, node_cfg)
            out.before = node.installed_version(app.cp)
            on_target = versioning.same(out.before, self.plan.target)
            if on_target and not self.plan.restore_db:
                out.phase = "health"
                health = node.health(self.plan.target, self.env.policy.health_timeout)
                if health.ok:
                    out.status, out.after = UNCHANGED, out.before
                    out.detail = f"already runs {self.plan.target} and is healthy: nothing to do"
                    return out
            commit = self._secrets_commit(node)
            if commit is not None:
                self._step(node, out, "secrets", lambda: deliver_for(
                    self.config, self.env.name, node, commit))
            if out.before and not on_target:
                self._step(node, out, "backup", lambda: backup.backup_package(
                    node, self.central, self.env.name, f"{app.cp}-{out.before}"))
            if not on_target:
                self._step(node, out, "install", lambda: reinstall_package(
                    node, self.central, self.env.name, target_cpv))
            if self.plan.restore_db:
                self._step(node, out, "restore-db", lambda: self._restore_db(node))
            service = app.contract.service
            process = self._step(node, out, "restart", lambda: node.restart(service))
            out.phase = "health"
            # Healthy only while the process the restart started answers, as in promote.
            health = node.health(self.plan.target, self.env.policy.health_timeout,
                                 process=(service, process))
            out.after = node.installed_version(app.cp)
            if health.ok:
                out.status, out.detail = INSTALLED, f"healthy on {self.plan.target}"
                self._hooks.after_healthy(out.before, INSTALLED)
            else:
                out.detail = f"health check failed: {health.detail}"
        except ReleaserError as exc:
            # Only the post_node hook fails after the node was found healthy.
            healthy, out.status = out.status == INSTALLED, FAILED
            out.phase = POST_NODE if healthy else out.phase
            out.detail = (f"healthy on {self.plan.target}, but {exc}" if healthy
                          else f"{out.phase} failed: {exc}")
            try:
                out.after = node.installed_version(app.cp) if node else None
            except ReleaserError:
                out.after = None
        finally:
            if node is not None:
                node.close()
            out.seconds = time.monotonic() - started
        self.ledger.journal(out.node, phase=f"rollback:{out.status}", version=out.after,
                            target=self.plan.target, detail=out.detail)
        self.progress(f"{out.node}: {out.status}: {out.detail}")
        return out

    def _step(self, node, out: NodeOutcome, phase: str, step):
        """Run one phase (draining the node first if a hook is configured); its result."""
        if not self._hooks.drained:
            out.phase = PRE_NODE  # a failure leaves the node untouched
            self._hooks.before_change(out.before)
        out.phase = phase
        self.progress(f"{node.name}: {phase}")
        result = step()
        self.ledger.journal(node.name, phase=f"rollback:{phase}", target=self.plan.target)
        return result

    def _secrets_commit(self, node: Node) -> str | None:
        """The commit whose secrets the node gets back: the target release's (the ledger
        records it), or None when there is nothing to deliver.  A release recorded
        without a commit leaves the node the secrets it has, and says so."""
        commit = (self.ledger.release(self.plan.target) or {}).get("commit")
        if commit is None:
            self.progress(f"{node.name}: secrets: no commit recorded for {self.plan.target}: "
                          "the node keeps the secrets it has")
            return None
        return commit if has_secrets(self.config, self.env.name, commit) else None

    def _restore_db(self, node: Node) -> None:
        if not self.env.database.is_server:
            self._restore_on(node)
            return
        with self.shared.lock:  # one database for every node: the first restores it
            if self.shared.done is None:
                self.shared.done = self._restore_on(node)
            else:
                self.progress(f"{node.name}: database already restored from {self.shared.done}")

    def _restore_on(self, node: Node) -> str:
        """Restore the dump taken while the target ran on ``node``; the dump's name."""
        dump = backup.latest_dump(self.central, self.env.name, node.name,
                                  version=self.plan.target)
        if dump is None:
            raise UsageError(f"{node.name}: no verified dump of {self.plan.target}'s database")
        password = database_password(self.env.database)
        backup.verify_dump_on_node(node, dump, self.central, self.config.app.contract,
                                   password=password)
        OpenRC().stop(node.runner, self.config.app.contract.service, node.root)
        backup.restore_database(node, self.config.app.contract, self.env.database.path, dump,
                                password=password)
        return dump.name


@dataclass
class _SharedRestore:
    """Whether this rollback restored the environment's shared server database yet."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    done: str | None = None
