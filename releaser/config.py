"""releaser.toml: the one configuration file, loaded with tomllib and validated.

Every error names the file and the dotted key, e.g.
``releaser.toml: environments.staging.nodes[1].port: expected an integer``.

The file describes the whole world releaser acts on:

- ``[app]``: where the application's source lives (a git repository and a
  subdirectory) and how it is packaged (category, name, licence, dependencies);
- ``[central]``: the central repository host (distfiles, overlays, binary
  packages, ledger, locks) and the URL nodes fetch distfiles from;
- ``[ssh]``: pinned host keys and the identity used for every SSH host;
- ``[environments.NAME]``: an overlay, a database, a rollout policy and nodes.
  A node is either a local sandbox root (``root = "..."``) or an SSH host
  (``address = "..."``), and always the URL of its health check.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from portage.dep import isvalidatom

from .errors import ConfigError

CONFIG_NAME = "releaser.toml"


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

    @property
    def cp(self) -> str:
        return f"{self.category}/{self.name}"


@dataclass(frozen=True)
class SSHConfig:
    known_hosts: Path | None = None
    identity_file: Path | None = None
    user: str = "root"
    connect_timeout: float = 10.0


@dataclass(frozen=True)
class CentralConfig:
    """The central repository: ``path`` on its host; nodes fetch from ``distfiles_url``."""

    path: Path
    distfiles_url: str
    address: str | None = None  # None: the central repository is local
    port: int = 22


@dataclass(frozen=True)
class DatabaseConfig:
    backend: str = "sqlite"
    path: str = "/var/lib/notes/notes.db"


@dataclass(frozen=True)
class PolicyConfig:
    canary: int = 0
    batch_size: int = 0  # 0: all remaining nodes in one batch
    max_fail: str = "0"
    concurrency: int = 4
    health_timeout: float = 30.0
    keep_backups: int = 5


@dataclass(frozen=True)
class NodeConfig:
    name: str
    health_url: str
    root: Path | None = None  # the node's ROOT: a sandbox directory; "/" on a real host
    address: str | None = None  # SSH node; None: a local sandbox node
    port: int = 22

    @property
    def is_local(self) -> bool:
        return self.address is None


@dataclass(frozen=True)
class EnvironmentConfig:
    name: str
    overlay: str
    nodes: tuple[NodeConfig, ...]
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    promote_from: str | None = None  # production: "staging"
    allow_dirty: bool = False  # builds from uncommitted changes may reach it (never production)


@dataclass(frozen=True)
class Config:
    path: Path
    app: AppConfig
    central: CentralConfig | None
    ssh: SSHConfig
    environments: dict[str, EnvironmentConfig]
    build_out: Path

    def environment(self, name: str) -> EnvironmentConfig:
        from .errors import UsageError

        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(sorted(self.environments)) or "none"
            raise UsageError(f"unknown environment {name!r} (configured: {known})") from None


class _Reader:
    """Typed access to a TOML table that reports the file and dotted key on error."""

    def __init__(self, file: Path, table: dict[str, Any], prefix: str):
        self.file = file
        self.table = table
        self.prefix = prefix

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def fail(self, name: str, message: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self.key(name)}: {message}")

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = ..., *, required=False):
        if name not in self.table:
            if required or default is ...:
                raise self.fail(name, "missing (required)")
            return default
        value = self.table[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and kind is not bool:
            raise self.fail(name, f"expected {_kind_name(kind)}, got {value!r}")
        if not isinstance(value, kind):
            raise self.fail(name, f"expected {_kind_name(kind)}, got {value!r}")
        return value

    def table_of(self, name: str, default: dict | None = None) -> "_Reader":
        value = self.get(name, dict, {} if default is None else default)
        return _Reader(self.file, value, self.key(name))

    def unknown(self, allowed: set[str]) -> None:
        extra = sorted(set(self.table) - allowed)
        if extra:
            raise self.fail(extra[0], f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _kind_name(kind) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a table"}
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


def load_config(path: Path | str | None = None) -> Config:
    """Load and validate releaser.toml (default: ./releaser.toml)."""
    file = Path(path) if path else Path.cwd() / CONFIG_NAME
    try:
        raw = tomllib.loads(file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such configuration file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    return parse_config(raw, file)


def parse_config(raw: dict[str, Any], file: Path) -> Config:
    base = file.parent.resolve()
    top = _Reader(file, raw, "")
    top.unknown({"app", "central", "ssh", "environments", "build"})
    app = _parse_app(top.table_of("app"), base)
    central = _parse_central(top.table_of("central"), base) if "central" in raw else None
    ssh = _parse_ssh(top.table_of("ssh"), base)
    build = top.table_of("build")
    build.unknown({"out"})
    build_out = _path(base, build.get("out", str, "out"))
    envs_reader = top.table_of("environments")
    environments = {}
    for name in envs_reader.table:
        environments[name] = _parse_environment(name, envs_reader.table_of(name), base)
    for env in environments.values():
        if env.promote_from and env.promote_from not in environments:
            raise ConfigError(f"{file}: environments.{env.name}.promote_from: "
                              f"unknown environment {env.promote_from!r}")
    _check_unique_nodes(file, environments)
    return Config(file, app, central, ssh, environments, build_out)


def _path(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _parse_app(r: _Reader, base: Path) -> AppConfig:
    r.unknown({"name", "category", "source", "subdir", "license", "description", "homepage",
               "rdepend", "tag_prefix"})
    name = r.get("name", str, required=True)
    category = r.get("category", str, "www-apps")
    if not isvalidatom(f"{category}/{name}"):
        raise r.fail("name", f"{category}/{name} is not a valid Gentoo package name")
    rdepend = r.get("rdepend", list, [])
    for i, atom in enumerate(rdepend):
        if not isinstance(atom, str) or not isvalidatom(atom):
            raise ConfigError(f"{r.file}: app.rdepend[{i}]: {atom!r} is not a valid dependency atom")
    subdir = r.get("subdir", str, "app")
    if Path(subdir).is_absolute() or ".." in Path(subdir).parts:
        raise r.fail("subdir", f"{subdir!r} must be a relative path inside the repository")
    return AppConfig(
        name=name,
        category=category,
        source=_path(base, r.get("source", str, ".")),
        subdir=subdir.strip("/") or ".",
        license=r.get("license", str, "MIT"),
        description=r.get("description", str, f"{name} application"),
        homepage=r.get("homepage", str, "https://example.invalid/"),
        rdepend=tuple(rdepend),
        tag_prefix=r.get("tag_prefix", str, "v"),
    )


def _parse_central(r: _Reader, base: Path) -> CentralConfig:
    r.unknown({"path", "distfiles_url", "address", "port"})
    url = r.get("distfiles_url", str, required=True)
    if not url.startswith(("http://", "https://", "file://")):
        raise r.fail("distfiles_url", f"{url!r} must be an http://, https:// or file:// URL")
    return CentralConfig(
        path=_path(base, r.get("path", str, required=True)),
        distfiles_url=url.rstrip("/"),
        address=r.get("address", str, None),
        port=r.get("port", int, 22),
    )


def _parse_ssh(r: _Reader, base: Path) -> SSHConfig:
    r.unknown({"known_hosts", "identity_file", "user", "connect_timeout"})
    kh = r.get("known_hosts", str, None)
    ident = r.get("identity_file", str, None)
    return SSHConfig(
        known_hosts=_path(base, kh) if kh else None,
        identity_file=_path(base, ident) if ident else None,
        user=r.get("user", str, "root"),
        connect_timeout=r.get("connect_timeout", float, 10.0),
    )


def _parse_environment(name: str, r: _Reader, base: Path) -> EnvironmentConfig:
    r.unknown({"overlay", "nodes", "database", "policy", "promote_from", "allow_dirty"})
    db = r.table_of("database")
    db.unknown({"backend", "path"})
    backend = db.get("backend", str, "sqlite")
    if backend != "sqlite":
        raise db.fail("backend", f"{backend!r} is not supported yet (supported: sqlite)")
    pol = r.table_of("policy")
    pol.unknown({"canary", "batch_size", "max_fail", "concurrency", "health_timeout",
                 "keep_backups"})
    max_fail = pol.get("max_fail", (str, int), "0")
    policy = PolicyConfig(
        canary=pol.get("canary", int, 0),
        batch_size=pol.get("batch_size", int, 0),
        max_fail=str(max_fail),
        concurrency=pol.get("concurrency", int, 4),
        health_timeout=pol.get("health_timeout", float, 30.0),
        keep_backups=pol.get("keep_backups", int, 5),
    )
    for key in ("canary", "batch_size", "keep_backups"):
        if getattr(policy, key) < 0:
            raise pol.fail(key, "must not be negative")
    if policy.concurrency < 1:
        raise pol.fail("concurrency", "must be at least 1")
    nodes_raw = r.get("nodes", list, [])
    nodes = tuple(_parse_node(r.file, f"environments.{name}.nodes[{i}]", n, base)
                  for i, n in enumerate(nodes_raw))
    return EnvironmentConfig(
        name=name,
        overlay=r.get("overlay", str, f"releaser-{name}"),
        nodes=nodes,
        database=DatabaseConfig(backend=backend, path=db.get("path", str, DatabaseConfig.path)),
        policy=policy,
        promote_from=r.get("promote_from", str, None),
        allow_dirty=r.get("allow_dirty", bool, False),
    )


def _parse_node(file: Path, prefix: str, raw: Any, base: Path) -> NodeConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: {prefix}: expected a table")
    r = _Reader(file, raw, prefix)
    r.unknown({"name", "root", "address", "port", "health_url"})
    root = r.get("root", str, None)
    address = r.get("address", str, None)
    if root is None and address is None:
        raise r.fail("root", "give root (a local sandbox node) or address (an SSH node)")
    if address is not None and root is not None and not Path(root).is_absolute():
        raise r.fail("root", "the ROOT of an SSH node must be an absolute path on that host")
    return NodeConfig(
        name=r.get("name", str, required=True),
        health_url=r.get("health_url", str, required=True),
        root=(Path(root) if address else _path(base, root)) if root else None,
        address=address,
        port=r.get("port", int, 22),
    )


def _check_unique_nodes(file: Path, environments: dict[str, EnvironmentConfig]) -> None:
    seen: dict[str, str] = {}
    for env in environments.values():
        for node in env.nodes:
            if node.name in seen:
                raise ConfigError(f"{file}: environments.{env.name}.nodes: node name "
                                  f"{node.name!r} is also used in {seen[node.name]}")
            seen[node.name] = env.name
