"""Putting a version back on one node from its binary package, and making the
withdrawal of the other one hold there at once.

Shared by the rollout's automatic rollback of a failed node, by promote and
by ``releaser rollback``; apart from them so that none imports another.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

from portage.versions import cpv_getversion

from releaser import backup
from releaser.central.repository import CentralRepository
from releaser.config import AppConfig, Config, EnvironmentConfig
from releaser.errors import ReleaserError
from releaser.hosts import bintree
from releaser.hosts.health import HealthResult
from releaser.hosts.node import Node, connect


def binpkg_on_node(node: Node, cpv: str) -> bool:
    """Whether the node's Portage lists a binary package of ``cpv`` in its PKGDIR.

    Portage names the files (one per version, or ``PN/PF-N`` on a stock
    host with binpkg-multi-instance); whether one verifies is decided when
    the rollback runs (``backup.ensure_binpkg_on_node``).
    """
    return any(node.runner.run(["test", "-f", str(path)], check=False).ok
               for path in bintree.binpkg_paths(node.runner, cpv))


def reinstall_package(node: Node, central: CentralRepository, env: str, cpv: str) -> None:
    """Install ``cpv`` from its binary package, fetching it from central if needed."""
    backup.ensure_binpkg_on_node(node, central, env, cpv)
    node.install(cpv, usepkgonly=True)


def reinstall_version(node: Node, central: CentralRepository, env: EnvironmentConfig,
                      app: AppConfig, cpv: str) -> HealthResult:
    """Put ``cpv`` back on a node from its binary package, restart, health-check."""
    reinstall_package(node, central, env.name, cpv)
    process = node.restart(app.contract.service)
    return node.health(cpv_getversion(cpv), env.policy.health_timeout,
                       process=(app.contract.service, process))


def sync_nodes(config: Config, env: EnvironmentConfig, names: Iterable[str]) -> list[str]:
    """Sync the environment's overlay on the named nodes, in parallel.

    Called right after a mask commit: a node sees the mask only once it has
    synced, and until then a plain ``emerge -u`` or ``emerge =CAT/PN-PV`` there
    reinstalls the version just withdrawn.  Returns one line per node that
    could not be synced (the mask reaches it at its next sync), for the
    report's warnings.
    """
    wanted = set(names)
    nodes = [n for n in env.nodes if n.name in wanted]

    def sync(node_cfg) -> str | None:
        try:
            node = connect(config, node_cfg)
            try:
                node.sync(env.overlay)
            finally:
                node.close()
        except ReleaserError as exc:
            return (f"{node_cfg.name}: sync after the mask failed ({exc}); the mask holds "
                    "there only from its next sync")
        return None

    with ThreadPoolExecutor(max_workers=max(1, min(env.policy.concurrency, len(nodes)))) as pool:
        return [failure for failure in pool.map(sync, nodes) if failure]
