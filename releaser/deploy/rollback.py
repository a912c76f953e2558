"""``releaser rollback ENV``: put the previous version back, knowing first
whether that is safe.

1. Plan, touching nothing (``releaser.deploy.rollback_plan``): per node the
   running version, the target, where the target's binary package is (node
   or central store), the database's schema version against the one the
   target expects, and what restoring the dump would lose.  Any node that
   cannot roll back makes the plan refuse, unless ``--force`` with a reason.
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
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Callable, Iterator

from releaser import backup
from releaser.backup.common import database_password
from releaser.backup.compat import restore_loss, writes_since
from releaser.central import ledger as ledger_mod
from releaser.build import versions as versioning
from releaser.central.repository import CentralRepository
from releaser.config import Config, EnvironmentConfig
from releaser.errors import ReleaserError, RollbackRefused, UsageError
from releaser.deploy.fleet import RolloutPolicy, plan_stages, run_stages
from releaser.central.audit import Actor
from releaser.central.ledger import Ledger
from releaser.central.masking import mask_version
from releaser.central.lock import EnvironmentLock
from releaser.deploy.notify import Notifier
from releaser.hosts.node import Node, connect, shared_connections
from releaser.deploy.hooks import POST_NODE, PRE_NODE, NodeHooks
from releaser.deploy.reinstall import reinstall_package, sync_nodes
from releaser.deploy.interrupts import interrupted_by, record_interruption
from releaser.deploy.rollout import (FleetReport, FAILED, INSTALLED, SKIPPED, UNCHANGED, NodeOutcome,
                                     worker_central)
from releaser.deploy.rollback_plan import (NodePlan, RollbackPlan, choose_target,
                                           ledger_digest, plan_rollback, recheck_plan)
from releaser.hosts.services import OpenRC
from releaser.trust.secrets import deliver_for, has_secrets

Progress = Callable[[str], None]


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


#: The plan's names are imported from here too (``releaser rollback``, reports, tests).
__all__ = ["NodePlan", "RollbackPlan", "RollbackReport", "choose_target", "execute_rollback",
           "ledger_digest", "plan_rollback", "recheck_plan", "restore_loss", "writes_since"]
