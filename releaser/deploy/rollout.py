"""One node's part of a promote: sync, back up, install, restart, health —
each phase journaled, the result read back from the node.

Intent before action: once the backups are taken, and before the install
starts, the node's *attempt* is written to the ledger: the version and
service process it ran, the target, the backups (``Ledger.begin_attempt``).
It is settled only when the node is healthy on the target, or back on the
version it ran.  A run killed anywhere in between (``kill -9`` at install,
restart, health wait or rollback) leaves the attempt open, and the next run
finishes it exactly as the killed run would have:

- the node runs the target, never seen healthy: the install is done again if
  it was not known to have finished (a ``pkg_postinst`` may have died), then
  restart and health check; a failure rolls back to the version of the
  attempt, from the binary package taken for it;
- a rollback was under way: it is finished;
- the node still runs what it ran (the install never merged): the attempt is
  dropped and the node is upgraded as if for the first time.

Otherwise the node's real state decides: it runs the target (checked healthy,
restarted once if not), or it is synced, backed up and upgraded.

Healthy means the service was really restarted (the init system runs a new
process: ``OpenRC.restart_process``) and, while that process runs, the health
endpoint answers the target version (``Node.health``).  A node whose new
version fails its health check, does not start, or is recorded as installed
by an emerge that failed after the merge (a dying ``pkg_postinst``) is put
back on the version it ran, from the binary package taken just before, and
reported rolled back.  An emerge that failed before the merge leaves the
running version, which is checked to still answer healthy.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, TypeVar

from releaser import backup
from releaser.backup.common import database_password
from releaser.build import versions as versioning
from releaser.central import ledger as ledger_mod
from releaser.central.repository import CentralRepository
from releaser.config import Config, EnvironmentConfig, NodeConfig
from releaser.errors import (HookError, HostKeyError, NodeError, OverlayTrustError,
                             ReleaserError)
from releaser.trust.secrets import deliver_for as deliver_secrets
from releaser.central.ledger import Ledger
from releaser.deploy.hooks import PRE_NODE, POST_NODE, NodeHooks
from releaser.deploy.reinstall import reinstall_version
from releaser.hosts.health import HealthResult
from releaser.hosts.node import Node, connect
from releaser.hosts.services import DEFAULT_RUNLEVEL, NOT_READ, NotRead, ServiceProcess
from releaser.build.release import Release
from releaser.hosts.runner import LocalRunner

Progress = Callable[[str], None]
T = TypeVar("T")

# Node outcomes.
INSTALLED, UNCHANGED, FAILED, ROLLED_BACK, PLANNED, SKIPPED, REFUSED = (
    "installed", "unchanged", "failed", "rolled-back", "planned", "skipped", "refused")


@dataclass
class NodeOutcome:
    node: str
    status: str
    before: str | None = None
    after: str | None = None
    phase: str = ""
    detail: str = ""
    seconds: float = 0.0
    portage_seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status in (FAILED, ROLLED_BACK, REFUSED)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(kw_only=True)
class FleetReport:
    """What promote and rollback report alike: each node's outcome, why the run
    stopped early (``halted``), which signal stopped it (``interrupted``), the side
    steps that failed after the outcome was saved (``warnings``), and the time."""

    nodes: list[NodeOutcome] = field(default_factory=list)
    seconds: float = 0.0
    halted: str = ""
    warnings: list[str] = field(default_factory=list)
    interrupted: str = ""


@contextlib.contextmanager
def worker_central(central: CentralRepository) -> Iterator[CentralRepository]:
    """``central`` for a worker thread: the run's shared connection, or one of its own.

    Within ``shared_connections`` (a promote) the workers share the run's one
    connection to the central host, each command on a channel of its own.
    Outside it, a worker gets a connection of its own, closed afterwards.  A
    LocalRunner holds no connection and is shared as it is.
    """
    if isinstance(central.runner, LocalRunner):
        yield central
        return
    from releaser.hosts.ssh import SSHRunner
    from releaser.hosts.ssh_pool import runner_for

    if not isinstance(central.runner, SSHRunner):
        raise TypeError(f"no per-thread connection for a {type(central.runner).__name__}")
    own = runner_for(central.runner.spec)
    try:
        yield central if own is central.runner else CentralRepository(own, central.root)
    finally:
        own.close()


@dataclass
class NodeRollout:
    """Callable doing one node's rollout of ``release`` (used from worker threads).

    Each call reaches ``central``'s repository over a connection of its own
    (``worker_central``); the ledger serialises its own writes.
    """

    config: Config
    env: EnvironmentConfig
    release: Release
    central: CentralRepository
    ledger: Ledger
    progress: Progress
    auto_rollback: bool = True
    #: Binhost mode (``install = "binary"``): the MD5 of the package in the environment's
    #: binhost index; nodes take only it (``--getbinpkgonly``), checked in their vdb.
    binpkg_md5: str | None = None
    #: The hooks around this call's node (set by ``_work``).
    _hooks: NodeHooks | None = field(default=None, init=False, repr=False)

    def __call__(self, node_cfg: NodeConfig) -> NodeOutcome:
        with worker_central(self.central) as central:
            return replace(self, central=central)._work(node_cfg)

    def _work(self, node_cfg: NodeConfig) -> NodeOutcome:
        started = time.monotonic()
        out = NodeOutcome(node_cfg.name, FAILED, phase="connect")
        node: Node | None = None
        self._hooks = NodeHooks(self.env, node_cfg, "promote", self.release.version)
        try:
            node = connect(self.config, node_cfg)
            self._run(node, out)
            self._restore(out)
        except HostKeyError as exc:
            # Not a network blip: the host may not be who it claims.  Nothing ran there.
            out.status = REFUSED
            out.detail = f"refused: {exc}"
        except OverlayTrustError as exc:
            # The node would not take what the central overlay offers (releaser.trust):
            # its overlay and what it runs are as they were.
            out.status = REFUSED
            out.detail = f"overlay refused ({exc.kind}): {exc.reason}"
            out.after = _installed_or_none(node, self.release.cp)
            self.ledger.event("overlay_refused", node=out.node, attack=exc.kind,
                              reason=exc.reason)
        except ReleaserError as exc:
            out.status = FAILED
            out.detail = f"{out.phase} failed: {exc}"
            out.after = _installed_or_none(node, self.release.cp)
        finally:
            if node is not None:
                node.close()
            out.seconds = time.monotonic() - started
        self.ledger.journal(out.node, phase=out.status if out.status not in (FAILED, REFUSED)
                            else f"{out.status}:{out.phase}", version=out.after,
                            target=self.release.version, detail=out.detail)
        self.progress(f"{out.node}: {out.status}: {out.detail}")
        return out

    def _phase(self, node: Node, out: NodeOutcome, phase: str, step: Callable[[], T],
               portage: bool = False, note: Callable[[T], dict] | None = None) -> T:
        """Run ``step`` as ``phase`` and journal it; ``note``: what to add to the node's
        attempt from its result, written with the journal in one write."""
        if not self._hooks.drained:
            out.phase = PRE_NODE  # a failure leaves the node untouched
            if self._hooks.before_change(out.before):
                self.progress(f"{node.name}: {PRE_NODE} hook done")
        out.phase = phase
        self.progress(f"{node.name}: {phase}")
        t0 = time.monotonic()
        result = step()
        if portage:
            out.portage_seconds += time.monotonic() - t0
        with self.ledger.batch():
            self.ledger.journal(node.name, phase=phase, version=out.before,
                                target=self.release.version)
            if note is not None:
                self.ledger.note_attempt(node.name, **note(result))
        return result

    def _run(self, node: Node, out: NodeOutcome) -> None:
        release = self.release
        out.before = node.installed_version(release.cp)
        attempt = self._unsettled_attempt(node, out.before)
        if attempt is not None and attempt.get("rolling_back") and \
                not versioning.same(attempt["target"], release.version):
            self._finish_rollback_of_another(node, out, attempt)
            attempt = None
        if attempt is not None:
            self._resume(node, out, attempt)
        elif self._rolled_back_by_an_earlier_run(node, out):
            return
        elif versioning.same(out.before, release.version):
            self._check_running(node, out)
        else:
            self._phase(node, out, "sync", lambda: node.sync(self.env.overlay), portage=True)
            self._phase(node, out, "secrets",
                        lambda: deliver_secrets(self.config, self.env.name, node,
                                                self.release.commit))
            backups = (self._phase(node, out, "backup", lambda: self._backup(node, out.before))
                       if out.before is not None else {})
            self._attempt(node, out, backups)

    # --- the attempt: intent, install, restart, health ------------------------------
    def _attempt(self, node: Node, out: NodeOutcome, backups: dict) -> None:
        """Journal the intent, then install, restart and check the target."""
        process = self._process_before(node, out.before)
        self.ledger.begin_attempt(node.name, target=self.release.version, before=out.before,
                                  backups=backups,
                                  process=_as_dict(None if process is NOT_READ else process))
        self._install_and_check(node, out, install=True, before=process)

    def _install_and_check(self, node: Node, out: NodeOutcome, *, install: bool,
                           before: ServiceProcess | None | NotRead = NOT_READ) -> None:
        """``before``: the service process read before this install (the restart must
        replace it), or NOT_READ."""
        release, app = self.release, self.config.app
        if install:
            try:
                self._phase(node, out, "install", lambda: self._install(node), portage=True,
                            note=lambda _merged: {"installed": True})
            except NodeError as exc:
                self._after_failed_install(node, out, exc)
                return
        try:
            process = self._phase(node, out, "restart", lambda: node.restart(
                app.contract.service, before=before if install else NOT_READ),
                note=lambda started: {"process": _as_dict(started)})
        except NodeError as exc:
            # The new version is installed but does not start: same as unhealthy.
            out.detail = f"restart failed: {exc}"
            out.after = node.installed_version(release.cp)
            self._after_failure(node, out)
            return
        health = self._health(node, out, release.version, process)
        out.after = node.installed_version(release.cp)
        if health.ok:
            out.status, out.detail = INSTALLED, f"healthy on {release.version}"
            self.ledger.record_schema(release.version, health.app_schema_version)
            self._enable_at_boot(node, out)
            self._settle(node, out)
            return
        out.detail = f"health check failed: {health.detail}"
        self._after_failure(node, out)

    def _install(self, node: Node) -> None:
        """Emerge the release; in binhost mode only the binhost's package, whose MD5 the
        node's vdb must then record (the package this rollout froze, not a rebuild)."""
        cpv = self.release.cpv
        node.install(cpv, getbinpkgonly=self.binpkg_md5 is not None)
        if self.binpkg_md5 is not None:
            merged = node.installed_binpkg_md5(cpv)
            if merged != self.binpkg_md5:
                raise NodeError(f"{node.name}: {cpv} was merged from "
                                f"{'a build on the node' if merged is None else 'MD5 ' + merged}"
                                f", not the binhost package MD5 {self.binpkg_md5}")

    def _health(self, node: Node, out: NodeOutcome, version: str,
                process: ServiceProcess | None) -> HealthResult:
        """The health check of ``version``, answered while ``process`` (if given) runs."""
        out.phase = "health"
        self.progress(f"{node.name}: health")
        watch = (self.config.app.contract.service, process) if process is not None else None
        return node.health(version, self.env.policy.health_timeout, process=watch)

    def _check_running(self, node: Node, out: NodeOutcome) -> None:
        """The node runs the target already (no attempt open): healthy, or restart and check."""
        version = self.release.version
        if self._health(node, out, version, None).ok:
            out.status, out.after = UNCHANGED, out.before
            out.detail = f"already runs {version} and is healthy: nothing to do"
            self._enable_at_boot(node, out)
            return
        process = self._phase(node, out, "restart", lambda: node.restart(self.config.app.contract.service))
        health = self._health(node, out, version, process)
        out.after = node.installed_version(self.release.cp)
        if health.ok:
            out.status, out.detail = INSTALLED, f"healthy on {version} after a restart"
            self._enable_at_boot(node, out)
        else:
            out.detail = f"health check failed: {health.detail}"

    def _enable_at_boot(self, node: Node, out: NodeOutcome) -> None:
        """Have the host start the app at boot: its service added to the default runlevel.

        Done by the rollout, not by the package (Gentoo packages never enable
        services), once the node is healthy on the target; a no-op, and silent,
        when the service is already there, so only the first install reports
        it (a progress line and a ``service_enabled`` event).  A failure fails
        the node, healthy as it is: a host that would come back from a reboot
        without its app is not done; the next promote finds it healthy and
        tries again.  Once the service is in the runlevel the ledger says so
        (``at_boot``), and later upgrades ask the host no more (a service an
        operator removes from the runlevel by hand stays removed); a first
        install (a host rebuilt under the same name) always asks.
        """
        service = self.config.app.contract.service
        if out.before is not None and self.ledger.at_boot(node.name) == service:
            return
        try:
            added = node.enable(service)
        except NodeError as exc:
            out.status, out.phase = FAILED, "enable"
            out.detail += f"; but it would not start at boot: {exc}"
            return
        self.ledger.set_at_boot(node.name, service)
        if added:
            self.progress(f"{node.name}: enable: {service} added to the default runlevel")
            self.ledger.event("service_enabled", node=node.name, service=service,
                              runlevel=DEFAULT_RUNLEVEL)
            out.detail += f"; {service} starts at boot (default runlevel)"

    # --- finishing what an earlier run left ---------------------------------------
    def _unsettled_attempt(self, node: Node, installed: str | None) -> dict | None:
        """The attempt a killed run left on this node, if anything of it is on the node.

        An attempt whose target never merged (the node still runs what it
        ran, or something else) left nothing to finish: it is settled as
        abandoned and the node is upgraded afresh.
        """
        attempt = self.ledger.attempt(node.name)
        if attempt is None:
            return None
        if attempt.get("rolling_back") or versioning.same(installed, attempt.get("target")):
            return attempt
        self.ledger.end_attempt(node.name, "abandoned", f"{attempt.get('target')} never merged: "
                                f"the node runs {installed or 'nothing'}")
        return None

    def _resume(self, node: Node, out: NodeOutcome, attempt: dict) -> None:
        """Finish the attempt of a killed run as that run would have."""
        target, before = attempt["target"], attempt.get("before")
        self.progress(f"{node.name}: an earlier run left {target} unsettled here (it ran "
                      f"{before or 'nothing'} before): finishing it")
        out.before = before
        if attempt.get("rolling_back"):
            out.detail = attempt["rolling_back"]
            self._after_failure(node, out)
        elif not versioning.same(target, self.release.version):
            # The node runs a version never seen healthy here; this release replaces
            # it, and the way back stays the version and backups of that attempt.
            self._phase(node, out, "sync", lambda: node.sync(self.env.overlay), portage=True)
            self._attempt(node, out, attempt.get("backups") or {})
        else:
            if not attempt.get("installed"):
                # Whether that install finished (or its pkg_postinst died) is unknown:
                # doing it again tells, as it told the killed run.
                self._phase(node, out, "sync", lambda: node.sync(self.env.overlay),
                            portage=True)
            self._install_and_check(node, out, install=not attempt.get("installed"))

    def _finish_rollback_of_another(self, node: Node, out: NodeOutcome, attempt: dict) -> None:
        """A killed run was rolling another release back here: finish that first."""
        target, before = attempt["target"], attempt["before"]
        self.progress(f"{node.name}: an earlier run was rolling {target} back to {before} here: "
                      "finishing that first")
        result = reinstall_version(node, self.central, self.env, self.config.app,
                                   f"{self.release.cp}-{before}")
        if not result.ok:
            raise NodeError(f"{node.name}: the rollback of {target} to {before} an earlier run "
                            f"left unfinished did not become healthy: {result.detail}")
        self.ledger.end_attempt(node.name, ROLLED_BACK, attempt["rolling_back"])
        out.before = node.installed_version(self.release.cp)

    def _rolled_back_by_an_earlier_run(self, node: Node, out: NodeOutcome) -> bool:
        """An earlier run rolled this release back here and was killed before recording
        the outcome: the rollback stands, reported as that run would have."""
        last = self.ledger.last_attempt(node.name) or {}
        entry = self.ledger.release(self.release.version) or {}
        if (last.get("outcome") != ROLLED_BACK or entry.get("state") != ledger_mod.PUBLISHED
                or not versioning.same(last.get("target"), self.release.version)
                or not versioning.same(out.before, last.get("before"))):
            return False
        out.status, out.after, out.phase = ROLLED_BACK, out.before, "rollback"
        out.detail = (f"rolled back from {self.release.version} by an earlier run that was "
                      f"stopped before recording it: {last.get('detail', '')}")
        return True

    # --- failures ------------------------------------------------------------------
    def _after_failure(self, node: Node, out: NodeOutcome) -> None:
        if self.auto_rollback and out.before and not versioning.same(out.before,
                                                                     self.release.version):
            self._roll_back(node, out)
        else:
            self._settle(node, out)

    def _after_failed_install(self, node: Node, out: NodeOutcome, exc: NodeError) -> None:
        """Decide from the vdb, not from emerge's exit status, what a failed install left.

        Recorded as installed (a ``pkg_postinst`` that died after the merge):
        the node holds the new version, never restarted into it: it is put
        back on the version it ran, like a failed health check.  Not
        recorded: the merge stopped before any file of the running version
        was replaced; the node still runs it, which is checked.
        """
        out.detail = f"install failed: {exc}"
        out.after = node.installed_version(self.release.cp)
        if versioning.same(out.after, self.release.version):
            out.detail += f"; {out.after} is recorded as installed all the same"
            self._after_failure(node, out)
            return
        if out.before is not None and versioning.same(out.after, out.before):
            out.detail += f"; still on {out.before}: {self._still_serving(node, out.before)}"
        self._settle(node, out)

    def _still_serving(self, node: Node, version: str) -> str:
        """Whether ``version`` still answers healthy, restarting it once if it does not."""
        timeout = self.env.policy.health_timeout
        if node.health(version, timeout).ok:
            return "healthy"
        try:
            process = node.restart(self.config.app.contract.service)
        except NodeError as exc:
            return f"NOT healthy, and a restart failed: {exc}"
        health = node.health(version, timeout, process=(self.config.app.contract.service, process))
        return "restarted, healthy" if health.ok else f"NOT healthy after a restart: {health.detail}"

    def _roll_back(self, node: Node, out: NodeOutcome) -> None:
        """Put the node back on ``out.before`` from its binary package.

        The attempt says a rollback is under way before it starts, so a run
        killed during it leaves the next run to finish it.  A rollback that
        does not become healthy leaves the attempt open for the same reason.
        """
        self.progress(f"{node.name}: {out.detail}; rolling back to {out.before}")
        out.phase = "rollback"
        self.ledger.note_attempt(node.name, rolling_back=out.detail)
        result = reinstall_version(node, self.central, self.env, self.config.app,
                                   f"{self.release.cp}-{out.before}")
        out.after = node.installed_version(self.release.cp)
        if result.ok:
            out.status = ROLLED_BACK
            out.detail += f"; rolled back to {out.before}, healthy"
            self._settle(node, out)
        else:
            out.detail += f"; rollback to {out.before} did not become healthy: {result.detail}"

    def _settle(self, node: Node, out: NodeOutcome) -> None:
        """Close the node's attempt (if one is open) with this outcome."""
        if self.ledger.attempt(node.name) is not None:
            self.ledger.end_attempt(node.name, out.status if out.status != FAILED
                                    else f"failed:{out.phase}", out.detail)

    # --- hooks around the node (releaser.deploy.hooks) ------------------------------
    def _restore(self, out: NodeOutcome) -> None:
        """Run the post_node hook once a drained node serves again: healthy on the
        target, or rolled back healthy.  A failure fails an installed node."""
        if out.status not in (INSTALLED, ROLLED_BACK):
            return
        try:
            self._hooks.after_healthy(out.before, out.status)
        except HookError as exc:
            out.detail += f"; {exc}"
            if out.status == INSTALLED:
                out.status, out.phase = FAILED, POST_NODE

    # --- helpers ---------------------------------------------------------------------
    def _process_before(self, node: Node, installed: str | None) -> ServiceProcess | None | NotRead:
        """The service process before the install: None when the app is not installed
        (nothing of it can run), NOT_READ when it cannot be told."""
        if installed is None:
            return None
        try:
            return node.service_process(self.config.app.contract.service)
        except NodeError:
            return NOT_READ

    def _backup(self, node: Node, version: str) -> dict:
        """Back up the running ``version``; what was taken, for the journal."""
        cpv = f"{self.release.cp}-{version}"
        package = backup.backup_package(node, self.central, self.env.name, cpv)
        dump = backup.dump_database(node, self.central, self.env.name, self.config.app.contract,
                                    self.env.database.path, version,
                                    password=database_password(self.env.database))
        return {"binpkg": package.central_path, "binpkg_sha512": package.sha512,
                "dump": dump.central_path, "dump_sha256": dump.sha256}


def still_on_withdrawn(nodes: list[NodeOutcome], version: str, env: str,
                       previous: str | None) -> str | None:
    """Say which nodes still run ``version`` after the rollout withdrew it, or None.

    Nodes of a batch run at once: when one of them fails past ``max_fail``,
    the others may already be healthy on the release, which the run then
    withdraws and masks.  They are left running it, on purpose: they are
    healthy, and taking them down too would trade a known-good service for a
    second, unplanned change on every one of them.  But nothing may hide it:
    each such node's detail says so, and the warning returned names them and
    the way back: ``releaser rollback ENV --to PREVIOUS`` (planned and
    confirmed like any rollback; the environment's current version is still
    PREVIOUS, so a plain ``rollback`` would go further back), or, when the
    environment ran nothing before, a fixed release.
    """
    running = [n for n in nodes if n.status == INSTALLED]
    for outcome in running:
        outcome.detail += f"; but {version} was withdrawn after: this node still runs it"
    if not running:
        return None
    back = (f"`releaser rollback {env} --to {previous}` puts them back on it" if previous
            else "promote a fixed release to replace it")
    return (f"{', '.join(n.node for n in running)} became healthy on {version} before the "
            f"rollout halted and still run it, although {version} is now withdrawn: {back}")


def _as_dict(process: ServiceProcess | None) -> dict | None:
    return None if process is None else {"pid": process.pid, "started": process.started}


def _installed_or_none(node: Node | None, cp: str) -> str | None:
    if node is None:
        return None
    try:
        return node.installed_version(cp)
    except ReleaserError:
        return None
