"""One node of an environment, and the Portage operations releaser runs on it.

A ``Node`` pairs the node's configuration with a ``Runner``: a ``LocalRunner``
carrying the node root's Portage variables for a sandbox node, an
``SSHRunner`` for a real host.  Every method runs the same argv either way;
only ``root`` differs (``/`` on a host, the node directory in the sandbox),
because ``portageq`` takes the root as an argument.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from releaser.hosts import portage_commands as portage_tools
from releaser.hosts.local_root import portage_env
from releaser.config import Config, NodeConfig
from releaser.errors import NodeError
from releaser.hosts.health import FROM_OPERATOR, OPERATOR, HealthResult, NodeTransport, check_health
from releaser.hosts.runner import LocalRunner, Runner
from releaser.hosts.services import NOT_READ, OpenRC, ServiceProcess, NotRead
from releaser.trust.ancestry import OverlayTrust, verified_sync


@dataclass
class Node:
    config: NodeConfig
    runner: Runner
    root: str
    trust: OverlayTrust | None = None  # [trust]: keys delivered, ancestry and age checked

    @property
    def name(self) -> str:
        return self.config.name

    def installed_version(self, cp: str) -> str | None:
        return portage_tools.installed_version(self.runner, self.root, cp)

    def sync(self, repo: str) -> None:
        """Sync ``repo``; with ``[trust]`` also refuse a head older than or diverged from the
        last one this node synced (``OverlayTrustError``, the overlay left as it was)."""
        if self.trust is not None:
            verified_sync(self.runner, self.root, repo, trust=self.trust)
        else:
            portage_tools.sync(self.runner, repo)

    def install(self, cpv: str, *, usepkgonly: bool = False,
                getbinpkgonly: bool = False) -> portage_tools.EmergeResult:
        """``emerge =cpv``, recorded in the world file (not ``--oneshot``).

        The application is what the host is for: ``emerge --depclean`` must
        never remove it.  World names the package without a version, so a
        world update takes the newest visible version of the environment's
        overlay: the newest release published there, minus the rolled-back
        ones, which are masked.  ``getbinpkgonly``: only the package of the
        environment's binhost (``binrepos.conf``), never a build on the node.
        """
        return portage_tools.emerge(self.runner, cpv, oneshot=False, usepkgonly=usepkgonly,
                                    getbinpkgonly=getbinpkgonly)

    def installed_binpkg_md5(self, cpv: str) -> str | None:
        """The MD5 of the binary package ``cpv`` was merged from (the vdb's ``BINPKGMD5``),
        or None when it was built on the node (Portage records none then)."""
        path = f"{self.root.rstrip('/')}/var/db/pkg/{portage_tools.validate_cpv(cpv)}/BINPKGMD5"
        result = self.runner.run(["cat", "--", path], check=False)
        return result.stdout.strip() or None if result.ok else None

    def restart(self, service: str,
                before: ServiceProcess | None | NotRead = NOT_READ) -> ServiceProcess:
        """Restart ``service``; its new process (NodeError if the init system did not replace
        it).  ``before``: the process read before the install, when the caller has it."""
        return OpenRC().restart_process(self.runner, service, self.root, before=before)

    def enable(self, service: str) -> bool:
        """Make the host start ``service`` at boot (its default runlevel); True if this added it."""
        return OpenRC().enable(self.runner, service)

    def service_process(self, service: str) -> ServiceProcess | None:
        """The process the init system runs for ``service`` now, or None."""
        return OpenRC().process(self.runner, service, self.root)

    def health(self, expect_version: str | None, timeout: float, *,
               process: tuple[str, ServiceProcess] | None = None) -> HealthResult:
        """Poll the node's health URL where its ``health_check`` says (on the node through
        its runner, or from here); ``process`` (service, process): healthy only while
        that process runs, and failing at once when it is gone."""
        gone = None
        if process is not None:
            gone = lambda: self._gone(*process)  # noqa: E731
        transport = (OPERATOR if self.config.health_check == FROM_OPERATOR
                     else NodeTransport(self.runner))
        return check_health(self.config.health_url, expect_version=expect_version,
                            timeout=timeout, process_gone=gone, transport=transport)

    def _gone(self, service: str, started: ServiceProcess) -> str | None:
        """Why ``started`` no longer runs ``service``, or None while it does (or cannot be told).

        Asked at every poll of a health check: one read of the process's
        ``/proc`` entry while it runs; the init system is asked only to say why not.
        """
        if OpenRC().still_runs(self.runner, started):
            return None
        try:
            now = self.service_process(service)
        except NodeError:
            return None
        if now is None:
            return (f"{service} {started} is not running any more"
                    f"{OpenRC().log_excerpt(self.runner, service, self.root)}")
        if now != started:
            return f"{service} now runs {now}, not {started} that was started"
        return None

    def close(self) -> None:
        """Close the node's connection (one of a pool stays open until the run ends)."""
        close = getattr(self.runner, "close", None)
        if close:
            close()


def shared_connections(config: Config) -> contextlib.AbstractContextManager:
    """A block within which each SSH host of ``config`` is connected once
    (``releaser.hosts.ssh_pool.shared_connections``); nothing to share without SSH hosts."""
    central = getattr(config, "central", None)
    if (central is None or central.address is None) and all(
            n.is_local for env in config.environments.values() for n in env.nodes):
        return contextlib.nullcontext()
    from releaser.hosts import ssh_pool  # paramiko/fabric: only when there is an SSH host

    return ssh_pool.shared_connections()


def connect(config: Config, node: NodeConfig) -> Node:
    """The Node for ``node``: local sandbox root, or an SSH host with pinned keys."""
    if node.is_local:
        return Node(node, LocalRunner(host=node.name, env=portage_env(node.root)),
                    str(node.root), trust=OverlayTrust.of(config, node.name, str(node.root)))
    from releaser.hosts.ssh import HostSpec
    from releaser.hosts.ssh_pool import runner_for

    spec = HostSpec.configured(config.ssh, address=node.address, port=node.port,
                               name=node.name, where=str(config.path))
    root = str(node.root or "/")
    return Node(node, runner_for(spec), root, trust=OverlayTrust.of(config, node.name, root))
