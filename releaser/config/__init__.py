"""releaser.toml: the one configuration file, loaded with tomllib and validated.

Every error names the file and the dotted key, e.g.
``releaser.toml: environments.staging.nodes[1].port: expected an integer``.
Every value that can reach a command, a path on central or a node, or the
ebuild is checked here, once, against what it may be (``releaser.config.validate``):
a run never starts with a value that was not.
The dataclasses a loaded file becomes live in ``releaser.config.model``; this
module reads and checks the file and is where callers import both from.

The file describes the whole world releaser acts on:

- ``[app]``: where the application's source lives (a git repository and a
  subdirectory), how it is packaged (category, name, licence, dependencies)
  and the values of its contract with releaser (``releaser.appcontract``:
  its database variable, its health path);
- ``[central]``: the central repository host (distfiles, overlays, binary
  packages, ledger, locks) and the URL nodes fetch distfiles from;
- ``[central] sync_uri``: where the nodes sync each environment's overlay from
  (a URL template with ``{env}`` and ``{overlay}``), written into their
  repos.conf by ``releaser host bootstrap``;
- ``[hosts]``: what ``releaser host bootstrap`` requires of a host (free disk,
  oldest Portage) and where its Portage keeps distfiles and binary packages;
- ``[ssh]``: pinned host keys and the identity used for every SSH host;
- ``[environments.NAME]``: an overlay, a database, a rollout policy, hooks run
  around each node (``[environments.NAME.hooks]``) and nodes.
  A node is either a local sandbox root (``root = "..."``) or an SSH host
  (``address = "..."``), and always says where its app answers: the URL of its
  health check (``health_url``), or the app's base URL (``app_url``), checked
  at ``[app] health_path``.  ``health_check`` (``[app]``, overridden per
  environment) says where that URL is asked from: ``"node"`` (the default: on
  the node, through its runner, so the URL is as the node sees it, e.g.
  ``http://127.0.0.1:8080``) or ``"operator"`` (from releaser's own machine).
"""

from __future__ import annotations

import json
import posixpath
import re
import tomllib
from pathlib import Path
from typing import Any, Callable

from releaser.appcontract import DEFAULT_HEALTH_PATH, AppContract, default_database_env
from releaser.config import validate
from releaser.config.exceptions import parse_exceptions
from releaser.config.gate import parse_gate
from releaser.config.model import (
    DATABASE_BACKENDS,
    MIN_FREE_MB,
    MIN_PORTAGE,
    AppConfig,
    CentralConfig,
    Config,
    DatabaseConfig,
    EnvironmentConfig,
    HooksConfig,
    HostsConfig,
    NodeConfig,
    NotifyConfig,
    PolicyConfig,
    SSHConfig,
    default_overlay,
)
from releaser.config.trust import parse_trust
from releaser.errors import ConfigError

#: The package's public surface: the model (kept in releaser.config.model, importable
#: from here as every caller does) and the loaders defined here.
__all__ = [
    "CONFIG_NAME", "DATABASE_BACKENDS", "MIN_FREE_MB", "MIN_PORTAGE",
    "AppConfig", "CentralConfig", "Config", "DatabaseConfig", "EnvironmentConfig",
    "HooksConfig", "HostsConfig", "NodeConfig", "NotifyConfig", "PolicyConfig",
    "SSHConfig", "default_overlay", "load_config", "parse_config",
]

CONFIG_NAME = "releaser.toml"

#: A TOML bare key; other keys are shown quoted in errors (``environments."../x"``).
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")

class _Reader:
    """Typed access to a TOML table that reports the file and dotted key on error."""

    def __init__(self, file: Path, table: dict[str, Any], prefix: str):
        self.file = file
        self.table = table
        self.prefix = prefix

    def key(self, name: str) -> str:
        """The dotted key of ``name``, quoted as TOML quotes it when it is no bare key."""
        if not _BARE_KEY.fullmatch(name.split("[")[0]):
            name = json.dumps(name)
        return f"{self.prefix}.{name}" if self.prefix else name

    def fail(self, name: str, message: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self.key(name)}: {message}")

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = ..., *, required=False,
            check: Callable[[Any], Any] | None = None):
        """The value of ``name`` (or ``default``), of type ``kind``, passed through ``check``.

        ``check`` is a ``releaser.config.validate`` function; its reason is reported
        with the file and the key.  Defaults are checked as well.
        """
        if name not in self.table:
            if required or default is ...:
                raise self.fail(name, "missing (required)")
            value = default
        else:
            value = self._typed(name, kind)
        if check is not None and value is not None:
            value = self.valid(name, check, value)
        return value

    def valid(self, name: str, check: Callable[..., Any], *args: Any) -> Any:
        try:
            return check(*args)
        except validate.Invalid as exc:
            raise self.fail(name, str(exc)) from None

    def _typed(self, name: str, kind):
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

    def local_path(self, name: str, base: Path, default: str | None = ...) -> Path | None:
        """A path on this machine, relative to the configuration file's folder, normalised."""
        value = self.get(name, str, default)
        if value is None:
            return None
        joined = Path(value).expanduser()
        joined = Path(posixpath.normpath(joined if joined.is_absolute() else base / joined))
        return Path(self.valid(name, validate.absolute_path, str(joined)))


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
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    return parse_config(raw, file)


def parse_config(raw: dict[str, Any], file: Path) -> Config:
    """Validate every value once, here: nothing later runs with a value not checked."""
    base = file.parent.resolve()
    top = _Reader(file, raw, "")
    top.unknown({"app", "central", "ssh", "environments", "build", "hosts", "trust",
                 "exceptions", "gate"})
    app = _parse_app(top.table_of("app"), base)
    central = _parse_central(top.table_of("central"), base) if "central" in raw else None
    ssh = _parse_ssh(top.table_of("ssh"), base)
    build = top.table_of("build")
    build.unknown({"out"})
    build_out = build.local_path("out", base, "out")
    envs_reader = top.table_of("environments")
    environments = {}
    for name in envs_reader.table:
        envs_reader.valid(name, validate.env_name, name)
        environments[name] = _parse_environment(name, envs_reader.table_of(name), base, app)
    for env in environments.values():
        if env.promote_from and env.promote_from not in environments:
            raise ConfigError(f"{file}: environments.{env.name}.promote_from: "
                              f"unknown environment {env.promote_from!r}")
        if env.promote_from == env.name:
            raise ConfigError(f"{file}: environments.{env.name}.promote_from: "
                              "an environment cannot promote from itself")
    _check_unique_nodes(file, environments)
    _check_ssh_keys(file, central, ssh, environments)
    _check_sync_uri(file, central, environments)
    exceptions = parse_exceptions(top, environments)
    # Signing is the default: without a [trust] table the defaults apply (the operator's
    # own keyring), and only an unsigned-overlay exception leaves an environment unsigned.
    local_central = central.path if central and central.address is None else None
    unsigned = {env for e in exceptions if e.setting == "unsigned-overlay"
                for env in e.environments}
    trust = parse_trust(top.table_of("trust"), base, local_central,
                        app.source / app.subdir, unsigned)
    return Config(file, app, central, ssh, environments, build_out,
                  _parse_hosts(top.table_of("hosts")), trust, exceptions,
                  gate=parse_gate(top.table_of("gate")))


def _parse_app(r: _Reader, base: Path) -> AppConfig:
    r.unknown({"name", "category", "source", "subdir", "license", "description", "homepage",
               "rdepend", "tag_prefix", "database_env", "health_path", "health_check"})
    name = r.get("name", str, required=True)
    category = r.get("category", str, "www-apps", check=validate.category)
    r.valid("name", validate.package, category, name)
    r.valid("name", validate.module_name, name)
    rdepend = r.get("rdepend", list, [])
    for i, atom in enumerate(rdepend):
        if not isinstance(atom, str):
            raise r.fail(f"rdepend[{i}]", f"{atom!r} is not a valid dependency atom")
        r.valid(f"rdepend[{i}]", validate.atom, atom)
    subdir = r.get("subdir", str, "app", check=validate.relative_path)
    return AppConfig(
        name=name,
        category=category,
        source=r.local_path("source", base, "."),
        subdir=subdir.rstrip("/") or ".",
        license=r.get("license", str, "MIT", check=validate.license_expression),
        description=r.get("description", str, f"{name} application",
                          check=validate.description),
        homepage=r.get("homepage", str, "https://example.invalid/", check=validate.url),
        rdepend=tuple(rdepend),
        tag_prefix=r.get("tag_prefix", str, "v", check=validate.tag_prefix),
        database_env=r.get("database_env", str, default_database_env(name),
                           check=validate.database_env),
        health_path=r.get("health_path", str, DEFAULT_HEALTH_PATH, check=validate.health_path),
        health_check=r.get("health_check", str, AppConfig.health_check,
                           check=validate.health_check),
    )


def _parse_central(r: _Reader, base: Path) -> CentralConfig:
    r.unknown({"path", "distfiles_url", "address", "port", "sync_uri", "lock_lease"})
    url = r.get("distfiles_url", str, required=True,
                check=lambda v: validate.url(v, base=True))
    address = r.get("address", str, None, check=validate.host)
    if address is None:
        path = r.local_path("path", base)
    else:  # a path on the central host: relative to nothing here
        path = Path(r.get("path", str, required=True, check=validate.absolute_path))
    return CentralConfig(
        path=path,
        distfiles_url=url.rstrip("/"),
        address=address,
        port=r.get("port", int, 22, check=validate.port),
        sync_uri=r.get("sync_uri", str, None, check=validate.sync_uri),
        lock_lease=r.get("lock_lease", (int, float, str), CentralConfig.lock_lease,
                         check=validate.duration),
    )


def _parse_hosts(r: _Reader) -> HostsConfig:
    r.unknown({"min_free_mb", "min_portage", "distdir", "pkgdir"})
    hosts = HostsConfig(
        min_free_mb=r.get("min_free_mb", int, MIN_FREE_MB),
        min_portage=r.get("min_portage", str, MIN_PORTAGE, check=validate.portage_version),
        distdir=r.get("distdir", str, HostsConfig.distdir, check=validate.absolute_path),
        pkgdir=r.get("pkgdir", str, HostsConfig.pkgdir, check=validate.absolute_path),
    )
    if hosts.min_free_mb < 0:
        raise r.fail("min_free_mb", "must not be negative")
    return hosts


def _parse_ssh(r: _Reader, base: Path) -> SSHConfig:
    r.unknown({"known_hosts", "identity_file", "user", "connect_timeout"})
    return SSHConfig(
        known_hosts=r.local_path("known_hosts", base, None),
        identity_file=r.local_path("identity_file", base, None),
        user=r.get("user", str, "root", check=validate.user_name),
        connect_timeout=r.get("connect_timeout", float, 10.0, check=validate.positive),
    )


def _parse_environment(name: str, r: _Reader, base: Path, app: AppConfig) -> EnvironmentConfig:
    r.unknown({"overlay", "nodes", "database", "policy", "hooks", "notify", "promote_from",
               "allow_dirty", "health_check", "allow", "keep_versions", "install"})
    contract = app.contract
    health_check = r.get("health_check", str, app.health_check, check=validate.health_check)
    database = _parse_database(r.table_of("database"), contract)
    nodes_raw = r.get("nodes", list, [])
    nodes = tuple(_parse_node(r.file, f"environments.{name}.nodes[{i}]", n, base, contract,
                              health_check) for i, n in enumerate(nodes_raw))
    return EnvironmentConfig(
        name=name,
        overlay=r.get("overlay", str, default_overlay(name), check=validate.repo_name),
        nodes=nodes,
        database=database,
        policy=_parse_policy(r.table_of("policy")),
        hooks=_parse_hooks(r.table_of("hooks")),
        notify=_parse_notify(r.table_of("notify")),
        promote_from=r.get("promote_from", str, None, check=validate.env_name),
        allow_dirty=r.get("allow_dirty", bool, False),
        allow=r.get("allow", str, validate.default_allow(name), check=validate.allow_policy),
        keep_versions=r.get("keep_versions", int, 0, check=validate.non_negative),
        install=r.get("install", str, "source", check=validate.install_mode),
    )


def _parse_policy(pol: _Reader) -> PolicyConfig:
    from releaser.errors import UsageError
    from releaser.deploy.fleet import parse_batch_size, parse_max_fail

    pol.unknown({"canary", "batch_size", "max_fail", "concurrency", "health_timeout",
                 "keep_backups"})
    max_fail = str(pol.get("max_fail", (str, int), "0"))
    try:
        parse_max_fail(max_fail)
    except UsageError:
        raise pol.fail("max_fail", f"{max_fail!r}: give a count (2) or a percentage "
                                   "(25%)") from None
    defaults = PolicyConfig()
    batch_size = pol.get("batch_size", (int, str), defaults.batch_size)
    try:
        parse_batch_size(batch_size)
    except UsageError:
        raise pol.fail("batch_size", f"{batch_size!r}: give a count (2, 0 for all at once) or "
                                     "a percentage of the nodes (25%)") from None
    policy = PolicyConfig(
        canary=pol.get("canary", int, defaults.canary),
        batch_size=batch_size,
        max_fail=max_fail,
        concurrency=pol.get("concurrency", int, 4),
        health_timeout=pol.get("health_timeout", float, 30.0, check=validate.positive),
        keep_backups=pol.get("keep_backups", int, 5),
    )
    for key in ("canary", "keep_backups"):
        if getattr(policy, key) < 0:
            raise pol.fail(key, "must not be negative")
    if policy.concurrency < 1:
        raise pol.fail("concurrency", "must be at least 1")
    return policy


def _parse_database(db: _Reader, contract: AppContract) -> DatabaseConfig:
    """``backend`` with its ``path`` (sqlite) or ``url`` and ``password_env`` (servers)."""
    db.unknown({"backend", "path", "url", "password_env", "refresh_hook", "hook_timeout"})
    backend = db.get("backend", str, "sqlite")
    if backend not in DATABASE_BACKENDS:
        raise db.fail("backend", f"{backend!r} is not one of {', '.join(DATABASE_BACKENDS)}")
    home = contract.default_database_path
    common = dict(
        backend=backend,
        refresh_hook=tuple(db.get("refresh_hook", list, [], check=validate.command)),
        hook_timeout=db.get("hook_timeout", float, DatabaseConfig.hook_timeout,
                            check=validate.positive))
    if backend == "sqlite":
        for key in ("url", "password_env"):
            if key in db.table:
                raise db.fail(key, "is for a server database (backend postgresql or mariadb)")
        path = db.get("path", str, home, check=validate.absolute_path)
        return DatabaseConfig(path=path, dump_dir=contract.dump_dir(path), **common)
    if "path" in db.table:
        raise db.fail("path", f"a {backend} database is named by url, not path")
    url = db.get("url", str, required=True, check=lambda v: validate.database_url(v, backend))
    password_env = db.get("password_env", str, f"{contract.database_env}_PASSWORD",
                          check=validate.database_env)
    return DatabaseConfig(path=url, password_env=password_env,
                          dump_dir=contract.dump_dir(home), **common)


def _parse_hooks(h: _Reader) -> HooksConfig:
    h.unknown({"pre_node", "post_node", "timeout"})
    return HooksConfig(
        pre_node=tuple(h.get("pre_node", list, [], check=validate.command)),
        post_node=tuple(h.get("post_node", list, [], check=validate.command)),
        timeout=h.get("timeout", float, HooksConfig.timeout, check=validate.positive),
    )


def _parse_notify(n: _Reader) -> NotifyConfig:
    n.unknown({"webhooks", "timeout", "retries"})
    webhooks = n.get("webhooks", list, [])
    for i, url in enumerate(webhooks):
        if not isinstance(url, str):
            raise n.fail(f"webhooks[{i}]", f"expected a string, got {url!r}")
        n.valid(f"webhooks[{i}]", validate.url, url)
    notify = NotifyConfig(
        webhooks=tuple(webhooks),
        timeout=n.get("timeout", float, NotifyConfig.timeout, check=validate.positive),
        retries=n.get("retries", int, NotifyConfig.retries),
    )
    if notify.retries < 0:
        raise n.fail("retries", "must not be negative")
    return notify


def _parse_node(file: Path, prefix: str, raw: Any, base: Path,
                contract: AppContract, health_check: str) -> NodeConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: {prefix}: expected a table")
    r = _Reader(file, raw, prefix)
    r.unknown({"name", "root", "address", "port", "health_url", "app_url"})
    address = r.get("address", str, None, check=validate.host)
    if "root" not in raw and address is None:
        raise r.fail("root", "give root (a local sandbox node) or address (an SSH node)")
    if address is None:
        root = r.local_path("root", base)
    else:  # the ROOT on that host: relative to nothing here
        root = r.get("root", str, None, check=validate.absolute_path)
        root = Path(root) if root else None
    return NodeConfig(
        name=r.get("name", str, required=True, check=validate.node_name),
        health_url=_health_url(r, contract),
        root=root,
        address=address,
        port=r.get("port", int, 22, check=validate.port),
        health_check=health_check,
    )


def _health_url(r: _Reader, contract: AppContract) -> str:
    """The node's ``health_url``, or its ``app_url`` with the app's health path."""
    if ("health_url" in r.table) == ("app_url" in r.table):
        raise r.fail("health_url", "give health_url (the app's health check URL) or app_url "
                                   "(where the app answers; checked at [app] health_path), "
                                   "not both")
    if "health_url" in r.table:
        return r.get("health_url", str, check=validate.url)
    app_url = r.get("app_url", str, check=lambda v: validate.url(v, base=True))
    return contract.health_url(app_url)


def _check_ssh_keys(file: Path, central: CentralConfig | None, ssh: SSHConfig,
                    environments: dict[str, EnvironmentConfig]) -> None:
    """An SSH host (central or node) needs the pinned known_hosts and the identity."""
    users = ["central.address"] if central and central.address else []
    users += [f"environments.{env.name}.nodes[{i}].address"
              for env in environments.values() for i, n in enumerate(env.nodes) if n.address]
    missing = [k for k in ("known_hosts", "identity_file") if getattr(ssh, k) is None]
    if users and missing:
        raise ConfigError(f"{file}: ssh.{missing[0]}: missing (required by {users[0]}: "
                          "SSH hosts are reached only with a pinned known_hosts file and "
                          "an identity file)")


def _check_sync_uri(file: Path, central: CentralConfig | None,
                    environments: dict[str, EnvironmentConfig]) -> None:
    """A local ``sync_uri`` reaches only nodes whose ROOT is a folder of this machine.

    A host whose ROOT is ``/`` (an address and no ``root``, or ``root = "/"``)
    syncs over the network: a path there would name a folder of its own.
    """
    if central is None or central.sync_uri is None or \
            not validate.is_local_sync_uri(central.sync_uri):
        return
    for env in environments.values():
        for i, node in enumerate(env.nodes):
            if node.root is None or str(node.root) == "/":
                raise ConfigError(
                    f"{file}: central.sync_uri: {central.sync_uri!r} is a path on this "
                    f"machine, but environments.{env.name}.nodes[{i}] ({node.name}) is a host "
                    "of its own (ROOT /): give an ssh:// or https:// URL it can reach")


def _check_unique_nodes(file: Path, environments: dict[str, EnvironmentConfig]) -> None:
    seen: dict[str, str] = {}
    for env in environments.values():
        for node in env.nodes:
            if node.name in seen:
                raise ConfigError(f"{file}: environments.{env.name}.nodes: node name "
                                  f"{node.name!r} is also used in {seen[node.name]}")
            seen[node.name] = env.name
