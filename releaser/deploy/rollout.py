"""One node's part of a promote: sync, back up, install, restart, health —
each phase journaled, the result read back from the node.

The pipeline decides from the node's real state, so a run interrupted at any
point (Ctrl-C, ``kill -9``) is finished by running it again:

- the node already runs the target and answers healthy: nothing to do;
- the target is installed but the service was not restarted: restart and check;
- otherwise: sync, back up the running version (binary package and a verified
  database dump), install, restart, check.

A node whose new version fails its health check, does not start, or is
recorded as installed by an emerge that failed after the merge (a dying
``pkg_postinst``) is put back on the version it ran, from the binary package
taken just before, and reported rolled back.  An emerge that failed before the
merge leaves the running version, which is checked to still answer healthy.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterator

from releaser import backup
from releaser.build import versions as versioning
from releaser.central.repository import CentralRepository
from releaser.config import Config, EnvironmentConfig, NodeConfig
from releaser.errors import HostKeyError, NodeError, ReleaserError
from releaser.central.ledger import Ledger
from releaser.deploy.reinstall import reinstall_version
from releaser.hosts.node import Node, connect
from releaser.build.release import Release
from releaser.hosts.runner import LocalRunner

Progress = Callable[[str], None]

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


@contextlib.contextmanager
def worker_central(central: CentralRepository) -> Iterator[CentralRepository]:
    """``central`` over a connection of this worker thread's own, closed afterwards.

    An SSHRunner serves one thread at a time, and a failed command closes its
    connection (releaser.hosts.ssh): shared by the fleet's worker threads, one
    node's error would cut the transfers of the others.  A LocalRunner holds
    no connection and is shared as it is.
    """
    if isinstance(central.runner, LocalRunner):
        yield central
        return
    from releaser.hosts.ssh import SSHRunner

    if not isinstance(central.runner, SSHRunner):
        raise TypeError(f"no per-thread connection for a {type(central.runner).__name__}")
    own = SSHRunner(central.runner.spec)
    try:
        yield CentralRepository(own, central.root)
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

    def __call__(self, node_cfg: NodeConfig) -> NodeOutcome:
        with worker_central(self.central) as central:
            return replace(self, central=central)._work(node_cfg)

    def _work(self, node_cfg: NodeConfig) -> NodeOutcome:
        started = time.monotonic()
        out = NodeOutcome(node_cfg.name, FAILED, phase="connect")
        node: Node | None = None
        try:
            node = connect(self.config, node_cfg)
            self._run(node, out)
        except HostKeyError as exc:
            # Not a network blip: the host may not be who it claims.  Nothing ran there.
            out.status = REFUSED
            out.detail = f"refused: {exc}"
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

    def _phase(self, node: Node, out: NodeOutcome, phase: str, step: Callable[[], object],
               portage: bool = False) -> None:
        out.phase = phase
        self.progress(f"{node.name}: {phase}")
        t0 = time.monotonic()
        step()
        if portage:
            out.portage_seconds += time.monotonic() - t0
        self.ledger.journal(node.name, phase=phase, version=out.before,
                            target=self.release.version)

    def _run(self, node: Node, out: NodeOutcome) -> None:
        release, app, policy = self.release, self.config.app, self.env.policy
        out.before = node.installed_version(release.cp)
        if versioning.same(out.before, release.version):
            out.phase = "health"
            if node.health(release.version, policy.health_timeout).ok:
                out.status, out.after = UNCHANGED, out.before
                out.detail = f"already runs {release.version} and is healthy: nothing to do"
                return
            self._phase(node, out, "restart", lambda: node.restart(app.name))
        else:
            self._phase(node, out, "sync", lambda: node.sync(self.env.overlay), portage=True)
            if out.before is not None:
                self._phase(node, out, "backup", lambda: self._backup(node, out.before))
            try:
                self._phase(node, out, "install", lambda: node.install(release.cpv),
                            portage=True)
            except NodeError as exc:
                self._after_failed_install(node, out, exc)
                return
            try:
                self._phase(node, out, "restart", lambda: node.restart(app.name))
            except NodeError as exc:
                # The new version is installed but does not start: same as unhealthy.
                out.detail = f"restart failed: {exc}"
                out.after = node.installed_version(release.cp)
                self._after_failure(node, out)
                return
        out.phase = "health"
        health = node.health(release.version, policy.health_timeout)
        out.after = node.installed_version(release.cp)
        if health.ok:
            out.status, out.detail = INSTALLED, f"healthy on {release.version}"
            self.ledger.record_schema(release.version, health.app_schema_version)
            return
        out.detail = f"health check failed: {health.detail}"
        self._after_failure(node, out)

    def _after_failure(self, node: Node, out: NodeOutcome) -> None:
        if self.auto_rollback and out.before and not versioning.same(out.before,
                                                                     self.release.version):
            self._roll_back(node, out)

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
        elif out.before is not None and versioning.same(out.after, out.before):
            out.detail += f"; still on {out.before}: {self._still_serving(node, out.before)}"

    def _still_serving(self, node: Node, version: str) -> str:
        """Whether ``version`` still answers healthy, restarting it once if it does not."""
        timeout = self.env.policy.health_timeout
        if node.health(version, timeout).ok:
            return "healthy"
        try:
            process = node.restart(self.config.app.name)
        except NodeError as exc:
            return f"NOT healthy, and a restart failed: {exc}"
        health = node.health(version, timeout, process=(self.config.app.name, process))
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
    def _process_or_none(self, node: Node) -> ServiceProcess | None:
        """The service process running now, for the journal; None if it cannot be told."""
        try:
            return node.service_process(self.config.app.name)
        except NodeError:
            return None

    def _backup(self, node: Node, version: str) -> dict:
        """Back up the running ``version``; what was taken, for the journal."""
        cpv = f"{self.release.cp}-{version}"
        package = backup.backup_package(node, self.central, self.env.name, cpv)
        dump = backup.dump_database(node, self.central, self.env.name, self.config.app.contract,
                                    self.env.database.path, version)
        return {"binpkg": package.central_path, "binpkg_sha512": package.sha512,
                "dump": dump.central_path, "dump_sha256": dump.sha256}


def _as_dict(process: ServiceProcess | None) -> dict | None:
    return None if process is None else {"pid": process.pid, "started": process.started}


def _installed_or_none(node: Node | None, cp: str) -> str | None:
    if node is None:
        return None
    try:
        return node.installed_version(cp)
    except ReleaserError:
        return None
