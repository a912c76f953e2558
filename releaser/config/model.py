"""The model of releaser.toml: the frozen dataclasses a loaded configuration is made of.

It exists apart from the loading and validation (``releaser.config``) so that the
shape of the world releaser acts on (app, central host, hosts, SSH, environments,
nodes, policy, hooks, notifications) reads in one place, without the parser
around it.  Every value here has already been validated by ``releaser.config``
when it comes from a file; a Config made in code is trusted as written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from releaser.appcontract import DEFAULT_HEALTH_PATH, AppContract
from releaser.config import validate
from releaser.config.exceptions import SecurityException
from releaser.config.gate import GateConfig
from releaser.config.trust import TrustConfig

@dataclass(frozen=True)
class AppConfig:
    name: str
    category: str
    source: Path
    subdir: str
    license: str = "MIT"
    description: str = ""
    homepage: str = ""
    rdepend: tuple[str, ...] = ()
    tag_prefix: str = "v"
    database_env: str = ""  # "": NAME_DATABASE
    health_path: str = DEFAULT_HEALTH_PATH
    health_check: str = "node"  # where the health URL is asked from: "node" or "operator"

    @property
    def cp(self) -> str:
        return f"{self.category}/{self.name}"

    @property
    def contract(self) -> AppContract:
        """What releaser expects of this app (``releaser.appcontract``)."""
        return AppContract(self.name, self.database_env, self.health_path)


@dataclass(frozen=True)
class SSHConfig:
    known_hosts: Path | None = None
    identity_file: Path | None = None
    user: str = "root"
    connect_timeout: float = 10.0


@dataclass(frozen=True)
class CentralConfig:
    """The central repository: ``path`` on its host; nodes fetch from ``distfiles_url``
    and sync overlays from ``sync_uri`` (None: not configured; ``host bootstrap`` refuses)."""

    path: Path
    distfiles_url: str
    address: str | None = None  # None: the central repository is local
    port: int = 22
    sync_uri: str | None = None  # a template: {env}, {overlay}
    lock_lease: float = 120.0  # seconds an environment lock's owner record stays valid unrenewed

    def overlay_sync_uri(self, env: str, overlay: str) -> str | None:
        """The URL ``env``'s nodes sync its overlay (repository ``overlay``) from."""
        if self.sync_uri is None:
            return None
        return self.sync_uri.format(env=validate.env_name(env),
                                    overlay=validate.repo_name(overlay))


#: ``[hosts] min_portage`` when not set: the Portage releaser's test suite runs
#: (gpkg binary packages, the binary tree API the backups ask).  An older one
#: may work: lower it to try.
MIN_PORTAGE = "3.0.83"
#: ``[hosts] min_free_mb`` when not set: room on ROOT for distfiles, binary
#: packages of a few releases and database dumps.
MIN_FREE_MB = 512


@dataclass(frozen=True)
class HostsConfig:
    """``[hosts]``: what ``releaser host bootstrap`` requires of a host, and where its
    Portage keeps what releaser's backups and rollbacks use (paths as the host sees them)."""

    min_free_mb: int = MIN_FREE_MB
    min_portage: str = MIN_PORTAGE
    distdir: str = "/var/cache/distfiles"
    pkgdir: str = "/var/cache/binpkgs"


#: The databases the app runs on (``[environments.NAME.database] backend``).
DATABASE_BACKENDS = ("sqlite", "postgresql", "mariadb")


@dataclass(frozen=True)
class DatabaseConfig:
    """``[environments.NAME.database]``: where the app's database is.

    ``path`` is what the app is given in its database variable: the SQLite
    file (``path``), or the server database's URL (``url``,
    ``postgresql://USER@HOST:PORT/NAME`` or ``mariadb://...``, never with a
    password).  A server database's password is read from releaser's own
    environment variable ``password_env`` (default ``NAME_DATABASE_PASSWORD``)
    and handed to the app's maintenance commands in theirs.  ``dump_dir``:
    where the nodes keep dumps.  ``refresh_hook``: the masking command
    ``releaser db refresh`` runs on a restored copy before it goes live
    (``releaser.db.refresh``).
    """

    backend: str = "sqlite"
    path: str = "/var/lib/notes/notes.db"
    password_env: str = ""
    dump_dir: str = "/var/lib/notes/backups"
    refresh_hook: tuple[str, ...] = ()
    hook_timeout: float = 600.0

    @property
    def is_server(self) -> bool:
        return self.backend != "sqlite"


@dataclass(frozen=True)
class PolicyConfig:
    """How promote rolls a release over an environment's nodes (releaser.deploy.fleet).

    The defaults are the safe ones, for a user who never thinks about them:
    one canary node, then batches of a quarter of the nodes (at least one) so
    most of the environment keeps serving, and no failure tolerated.
    """

    canary: int = 1
    batch_size: int | str = "25%"  # a count, a percentage of the nodes, 0: all at once
    max_fail: str = "0"
    concurrency: int = 4
    health_timeout: float = 30.0
    keep_backups: int = 5


@dataclass(frozen=True)
class HooksConfig:
    """Commands run on the operator's machine around each node's change
    (``[environments.NAME.hooks]``, run by ``releaser.deploy.hooks``).

    ``pre_node`` before a node is taken out of service, ``post_node`` once it
    is healthy again: argv lists (empty: none), each bounded by ``timeout``.
    """

    pre_node: tuple[str, ...] = ()
    post_node: tuple[str, ...] = ()
    timeout: float = 60.0


@dataclass(frozen=True)
class NotifyConfig:
    """Webhooks told of a promote's and a rollback's progress
    (``[environments.NAME.notify]``, sent by ``releaser.deploy.notify``).

    Each event is POSTed to every URL, each attempt bounded by ``timeout``
    seconds, retried ``retries`` times; a failure never fails the run.
    """

    webhooks: tuple[str, ...] = ()
    timeout: float = 5.0
    retries: int = 2


@dataclass(frozen=True)
class NodeConfig:
    name: str
    health_url: str  # as seen from where health_check says it is asked
    root: Path | None = None  # the node's ROOT: a sandbox directory; "/" on a real host
    address: str | None = None  # SSH node; None: a local sandbox node
    port: int = 22
    health_check: str = "node"  # "node": asked on the node; "operator": from releaser's machine

    @property
    def is_local(self) -> bool:
        return self.address is None


def default_overlay(environment: str) -> str:
    """The repository name of ``environment``'s overlay when ``overlay`` is not set."""
    return f"releaser-{environment}"


@dataclass(frozen=True)
class EnvironmentConfig:
    name: str
    overlay: str  # the overlay's repository name: profiles/repo_name, the nodes' repos.conf
    nodes: tuple[NodeConfig, ...]
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    hooks: HooksConfig = field(default_factory=HooksConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    promote_from: str | None = None  # production: "staging"
    allow_dirty: bool = False  # builds from uncommitted changes may reach it (never production)
    #: What it takes (releaser.deploy.policy): "release" (a vX.Y.Z tag), "rc" (also
    #: release-candidate tags), "any"; default "release" for production, else "any".
    allow: str = "any"
    #: Versions kept in its overlay and the distfile store beyond the running one,
    #: the rollback target and what nodes have installed (0: keep every version).
    keep_versions: int = 0
    #: "source": every node builds the ebuild; "binary": nodes take the gpkg built once
    #: on the build side from the environment's binhost (releaser.central.binhost).
    install: str = "source"


@dataclass(frozen=True)
class Config:
    path: Path
    app: AppConfig
    central: CentralConfig | None
    ssh: SSHConfig
    environments: dict[str, EnvironmentConfig]
    build_out: Path
    hosts: HostsConfig = field(default_factory=HostsConfig)
    #: Always set by ``load_config`` (signing is the default); None only for a Config
    #: made in code: overlays unsigned, nodes verify nothing.
    trust: TrustConfig | None = None
    exceptions: tuple[SecurityException, ...] = ()  # [[exceptions]], none expired
    gate: GateConfig = field(default_factory=GateConfig)  # [gate]: before publishing

    def exception_for(self, setting: str, env: str) -> SecurityException | None:
        """The documented exception that lowers ``setting`` in ``env``, or None."""
        return next((e for e in self.exceptions if e.covers(setting, env)), None)

    def environment(self, name: str) -> EnvironmentConfig:
        from releaser.errors import UsageError

        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(sorted(self.environments)) or "none"
            raise UsageError(f"unknown environment {name!r} (configured: {known})") from None
