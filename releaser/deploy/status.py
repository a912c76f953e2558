"""``releaser status [ENV]``: what each node really runs, next to what the
environment's overlay offers and what the ledger last saw healthy.

The installed version is read from each node's vdb (``portageq``), never from
the ledger, so drift made by hand (an ``emerge`` on a node, a failed run) shows.
Beside it, from the ledger: each node's last recorded change (what, when, by
whom) and a run that did not finish (an operator's interruption, installs whose
intent is still open after a kill) with its nodes.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from releaser.build import versions as versioning
from releaser.central.repository import CentralRepository
from releaser.config import Config
from releaser.errors import HostKeyError, ReleaserError
from releaser.central.ledger import Ledger
from releaser.hosts.node import connect
from releaser.central.overlay_git import BRANCH

MASK_FILE = "profiles/package.mask"


@dataclass
class NodeStatus:
    name: str
    installed: str | None
    healthy: bool | None
    detail: str
    drift: str = ""
    last_change: dict | None = None  # the ledger's last journal entry of the node
    in_flight: dict | None = None  # an install's intent no run has settled


@dataclass
class EnvStatus:
    env: str
    offered: list[str] | None  # None: the overlay could not be read (see overlay_error)
    current: str | None  # the version the environment is on (promote, rollback)
    nodes: list[NodeStatus] = field(default_factory=list)
    masked: list[str] = field(default_factory=list)
    overlay_error: str = ""
    interrupted: dict | None = None  # a run an operator stopped, not finished since

    @property
    def drifted(self) -> bool:
        return any(n.drift for n in self.nodes)

    def to_dict(self) -> dict:
        return {"env": self.env, "offered": self.offered, "masked": self.masked,
                "overlay_error": self.overlay_error, "current": self.current,
                "interrupted": self.interrupted, "unfinished": self.unfinished,
                "nodes": [n.__dict__ for n in self.nodes]}

    @property
    def unfinished(self) -> list[str]:
        """Nodes whose install a run began and no run settled (it was killed)."""
        return [n.name for n in self.nodes if n.in_flight]


def _overlay_paths(central: CentralRepository, env: str, path: str) -> list[str] | None:
    """Paths under ``path`` in ``env``'s overlay; None when the overlay does not exist.

    An overlay or a path that is not there is an answer (nothing); a git
    that fails is not: its CommandError goes to the caller.
    """
    repo = central.overlay_repo(env)
    if not central.exists(repo):
        return None
    result = central.runner.run(["git", f"--git-dir={repo}", "ls-tree", "-r", "--name-only",
                                 BRANCH, "--", path])
    return result.stdout.split()


def offered_versions(central: CentralRepository, env: str, cp: str) -> list[str]:
    """Versions whose ebuild is in ``env``'s overlay, in Portage order."""
    pn = cp.split("/", 1)[1]
    names = [posixpath.basename(p) for p in _overlay_paths(central, env, f"{cp}/") or []]
    versions = [name[len(pn) + 1:-len(".ebuild")] for name in names
                if name.startswith(f"{pn}-") and name.endswith(".ebuild")]
    return sorted(versions, key=versioning.sort_key)


def masked_versions(central: CentralRepository, env: str, cp: str) -> list[str]:
    """Versions of ``cp`` masked (``=cp-ver``) in the overlay's profiles/package.mask."""
    if not _overlay_paths(central, env, MASK_FILE):
        return []
    result = central.runner.run(["git", f"--git-dir={central.overlay_repo(env)}", "show",
                                 f"{BRANCH}:{MASK_FILE}"])
    prefix = f"={cp}-"
    return sorted((line.strip()[len(prefix):] for line in result.stdout.splitlines()
                   if line.strip().startswith(prefix)), key=versioning.sort_key)


def environment_status(config: Config, central: CentralRepository, env_name: str) -> EnvStatus:
    env = config.environment(env_name)
    ledger = Ledger.load(central, env_name)
    healthy = ledger.current
    status = EnvStatus(env_name, None, healthy, interrupted=ledger.interrupted)
    try:
        status.offered = offered_versions(central, env_name, config.app.cp)
        status.masked = masked_versions(central, env_name, config.app.cp)
    except ReleaserError as exc:
        # Unknown is not "nothing offered": say that the overlay could not be read.
        status.offered, status.overlay_error = None, f"cannot read the overlay: {exc}"
    for node_cfg in env.nodes:
        status.nodes.append(_node_status(config, node_cfg, healthy))
        status.nodes[-1].last_change = _last_change(ledger.node(node_cfg.name))
        status.nodes[-1].in_flight = ledger.attempt(node_cfg.name)
    return status


def _last_change(entry: dict) -> dict | None:
    """A node's last journal entry, without the intent records kept beside it."""
    change = {k: v for k, v in entry.items() if k not in ("attempt", "last_attempt")}
    return change or None


def _node_status(config: Config, node_cfg, healthy: str | None) -> NodeStatus:
    """What the node runs (its vdb), whether it answers, and how it differs from ``healthy``."""
    try:
        node = connect(config, node_cfg)
        try:
            installed = node.installed_version(config.app.cp)
        finally:
            node.close()
    except HostKeyError as exc:
        return NodeStatus(node_cfg.name, None, None, str(exc), "refused (host key)")
    except ReleaserError as exc:
        return NodeStatus(node_cfg.name, None, None, str(exc), "unreachable")
    health = node.health(installed, timeout=2.0) if installed else None
    ns = NodeStatus(node_cfg.name, installed, health.ok if health else None,
                    health.detail if health else "not installed")
    if installed is None:
        ns.drift = "nothing installed" if healthy else ""
    elif healthy and not versioning.same(installed, healthy):
        ns.drift = f"runs {installed}, environment is on {healthy}"
    elif health and not health.ok:
        ns.drift = "unhealthy"
    return ns
