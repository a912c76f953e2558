"""Putting a version back on one node from its binary package.

Shared by the rollout's automatic rollback of a failed node and by
``releaser rollback``; apart from both so that neither imports the other.
"""

from __future__ import annotations

from portage.versions import cpv_getversion

from releaser import backup
from releaser.central.repository import CentralRepository
from releaser.config import AppConfig, EnvironmentConfig
from releaser.hosts import portage_commands as portage_tools
from releaser.hosts.health import HealthResult
from releaser.hosts.node import Node


def binpkg_on_node(node: Node, cpv: str) -> bool:
    """Whether the node's Portage lists a binary package of ``cpv`` in its PKGDIR.

    Portage names the files (one per version, or ``PN/PF-N`` on a stock
    host with binpkg-multi-instance); whether one verifies is decided when
    the rollback runs (``backup.ensure_binpkg_on_node``).
    """
    return any(node.runner.run(["test", "-f", str(path)], check=False).ok
               for path in portage_tools.binpkg_paths(node.runner, cpv))


def reinstall_package(node: Node, central: CentralRepository, env: str, cpv: str) -> None:
    """Install ``cpv`` from its binary package, fetching it from central if needed."""
    backup.ensure_binpkg_on_node(node, central, env, cpv)
    node.install(cpv, usepkgonly=True)


def reinstall_version(node: Node, central: CentralRepository, env: EnvironmentConfig,
                      app: AppConfig, cpv: str) -> HealthResult:
    """Put ``cpv`` back on a node from its binary package, restart, health-check."""
    reinstall_package(node, central, env.name, cpv)
    process = node.restart(app.name)
    return node.health(cpv_getversion(cpv), env.policy.health_timeout,
                       process=(app.name, process))
