"""``releaser sandbox init|down``: a complete local world for the whole pipeline.

Under DIR::

    DIR/releaser.toml        the configuration of this world (written here)
    DIR/sandbox.json         what was started: pids, ports (for ``down``)
    DIR/central/             the central repository (releaser.central.repository)
    DIR/nodes/NAME/          one node root per node, real Portage inside
    DIR/logs/                the HTTP server's log
    DIR/out/                 build output

The central repository's distfiles are served by a real HTTP server
(``releaser.sandbox.distserver``); every node syncs its environment's overlay from the
central bare git repository with Portage's own git sync, fetches distfiles
over HTTP and checks them against the Manifest.  Each node runs the installed
app on its own loopback port through the ``rc-service`` stand-in
(``releaser.sandbox.rc``), so node code is the same as on an OpenRC host.

A node starts as a *bare* root (``noderoot.create_bare_root``): what a host
has before releaser, Portage and its own configuration, state folders, a
root-only passwd and group.  Once releaser.toml is written, every node is
prepared by ``releaser host bootstrap`` (``releaser.hosts.bootstrap``) through
its own runner, as a real host is: the overlay's repos.conf entry (syncing from
``[central] sync_uri``, here the bare repositories' path), releaser's make.conf
file, the app's user and group, its folders, the overlay's first clone.
Nothing of that is written behind the bootstrap's back.

With ``ssh=True`` (``sandbox init --ssh``) nothing is reached by path any more:
the central repository and every node get their own real sshd on their own
loopback address (``releaser.sandbox.ssh``), releaser.toml names them by
address and port with a pinned known_hosts file, and every command, file
copy and git push goes over SSH, as against production.  Each node's app then
listens on the node's own address.  The bare roots are laid out here with
local file operations (installing the host, as an installer would); the
bootstrap then runs over each node's sshd.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import subprocess
import platform
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from releaser.sandbox import dbserver, distserver
from releaser.sandbox import noderoot
from releaser.central import overlay, overlay_git
from releaser.sandbox import rc as sandbox_rc
from releaser.sandbox import ssh as sandbox_ssh
from releaser.central.repository import CentralRepository
from releaser.config import AppConfig, default_overlay, load_config, validate
from releaser.errors import ReleaserError, SandboxError, UsageError
from releaser.hosts.runner import LocalRunner, Runner
from releaser.sandbox.sshd import SandboxSSHD

STATE = "sandbox.json"
DEFAULT_NODES = {"staging": 2, "production": 2}
#: The pipeline, in order: each of these present in a sandbox promotes from the
#: one before it that is present (development -> staging -> production).  Any
#: other environment (qa, ...) builds its own releases.
ENV_ORDER = ("development", "staging", "production")


def default_app(source: Path | None = None) -> AppConfig:
    """The demo app of this repository (``app/`` of ``source``, default the current
    folder), for a sandbox or demo run without a releaser.toml."""
    return AppConfig(name="notes", category="www-apps", source=source or Path.cwd(),
                     subdir="app",
                     description="Notes, the demo web application releaser ships",
                     homepage="https://example.invalid/notes",
                     rdepend=(">=dev-lang/python-3.11", "dev-python/flask",
                              "dev-python/waitress"))


@dataclass(frozen=True)
class SandboxNode:
    """One node: ``port`` is its app's port on ``address``; ``ssh_port`` None = local node."""

    name: str
    env: str
    root: Path | None  # None: a host whose ROOT is / (an LXC container)
    port: int
    address: str = "127.0.0.1"
    ssh_port: int | None = None

    @property
    def health_url(self) -> str:
        """Where the app's health answers; a whole host (``root`` None) is asked on the
        host itself, where its app listens on loopback as its own config says."""
        host = "127.0.0.1" if self.root is None else self.address
        return f"http://{host}:{self.port}/health"


def parse_nodes(text: str) -> dict[str, int]:
    """``staging=2,production=2`` -> {"staging": 2, "production": 2}."""
    counts: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        env, sep, count = part.partition("=")
        if not sep or not count.isdigit() or int(count) < 1:
            raise UsageError(f"--nodes: {part!r} is not ENV=COUNT (COUNT at least 1)")
        counts[env] = int(count)
    if not counts:
        raise UsageError("--nodes: give at least one ENV=COUNT")
    return counts


#: The app's dependencies the nodes take from releaser's own Python (the
#: ``sandbox`` extra of setup.py), by distribution name.
APP_DISTRIBUTIONS = ("flask", "waitress")


def provided_packages() -> list[str]:
    """package.provided entries for what the app needs from the machine's Python.

    The nodes run the app with this Python, so Portage is told the versions
    installed here.  Without the ``sandbox`` extra they are missing: a
    UsageError saying how to install them, before anything is made.
    """
    entries = [f"dev-lang/python-{platform.python_version()}"]
    for dist in APP_DISTRIBUTIONS:
        try:
            entries.append(f"dev-python/{dist}-{importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            raise UsageError(f"the sandbox runs the app with {dist}, which is not installed: "
                             "pip install 'releaser[sandbox]' (scripts/bootstrap does)") from None
    return entries


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def init_sandbox(directory: Path, app: AppConfig, nodes: dict[str, int] | None = None,
                 progress=lambda _m: None, *, ssh: bool = False,
                 stock_binpkgs: bool = False, overlays: Mapping[str, str] | None = None,
                 trust: bool = True, hosts: str = "dir", db: str = "sqlite") -> Path:
    """Create a sandbox under ``directory``; returns its releaser.toml.

    ``db``: the app's database, "sqlite" (a file per node) or a server of the
    sandbox's own ("postgresql", "mariadb", ``releaser.sandbox.dbserver``) with
    one database per environment, stopped by ``down_sandbox``.

    ``hosts``: "dir" (every node a folder of this machine, the fast default)
    or "lxc" (every node an LXC container, ``releaser.sandbox.lxc_world``;
    ``ssh`` and ``stock_binpkgs`` do not apply: such hosts are always reached
    over SSH and keep the image's Portage defaults).

    ``trust``: a ``[trust]`` table with a keyring in ``directory/gnupg`` holding a
    release key per environment: signed overlays that nodes verify (releaser.trust),
    as everywhere by default, whatever ``hosts`` (the LXC hosts' image has gnupg and
    gemato, which Portage verifies with).  False (``sandbox init --unsigned``):
    releaser.toml documents an ``unsigned-overlay`` exception instead
    (``render_config``).

    ``overlays``: the repository name of some environments' overlays (the
    ``overlay`` setting written to releaser.toml); the others get the
    default, ``releaser-<environment>``.

    ``ssh``: put the central repository and every node behind their own sshd
    (see the module docstring).  ``stock_binpkgs``: nodes keep Portage's
    default binary package layout (binpkg-multi-instance), as a stock Gentoo
    host does (``noderoot.NodeRootSpec.stock_binpkgs``).  If setting up fails
    half way, the daemons already started (sshds, HTTP server) are stopped
    again before the error propagates, so a failed ``init`` leaves no process
    behind.

    Bad arguments are refused (UsageError) before anything is made; a failure
    after that is a SandboxError saying what is left in ``directory``.
    """
    directory = Path(directory).absolute()
    nodes = nodes or DEFAULT_NODES
    if (directory / STATE).exists():
        raise UsageError(f"{directory} already holds a sandbox; `releaser sandbox down "
                         f"{directory}` stops it, then remove the folder to start afresh")
    if hosts not in HOSTS:
        raise UsageError(f"--hosts: {hosts!r} is not one of {', '.join(HOSTS)}")
    _check_nodes(nodes, ssh)
    dbserver.check_backend(db)
    names = overlay_names(nodes, overlays or {})
    if hosts == "lxc":
        if ssh or stock_binpkgs:
            raise UsageError("--hosts lxc: its hosts are always reached over SSH and keep "
                             "their image's Portage; --ssh and stock binpkgs are for "
                             "--hosts dir")
        return _init_lxc(directory, app, nodes, names, progress, trust)
    if db != "sqlite" and hosts != "dir":
        raise UsageError(f"--db {db}: a database server is for --hosts dir")
    provided = provided_packages() + dbserver.driver_provided(db)
    app = dataclasses.replace(app, rdepend=tuple(dict.fromkeys(
        app.rdepend + dbserver.driver_atoms(db))))
    directory.mkdir(parents=True, exist_ok=True)
    world = _World(directory, ssh, stock_binpkgs, provided, names)
    world.db = db
    world.trust = sandbox_trust(directory, nodes) if trust else None
    try:
        return world.build(app, nodes, progress)
    except BaseException as exc:
        world.undo()
        if isinstance(exc, (ReleaserError, OSError)):
            raise SandboxError(f"sandbox init stopped part way: {exc}; the processes it had "
                               f"started were stopped, the files made so far are left in "
                               f"{directory} (remove it to start afresh)") from exc
        raise


#: What ``sandbox init --hosts`` takes.
HOSTS = ("dir", "lxc")


def _init_lxc(directory: Path, app: AppConfig, nodes: dict[str, int],
              overlays: dict[str, str], progress, trust: bool) -> Path:
    """An LXC sandbox; a failure part way takes down what was made (``down_sandbox``)."""
    from releaser.sandbox import lxc_world

    directory.mkdir(parents=True, exist_ok=True)
    try:
        return lxc_world.build(directory, app, nodes, overlays, progress,
                               sandbox_trust(directory, nodes) if trust else None)
    except BaseException as exc:
        if (directory / STATE).exists():
            try:
                down_sandbox(directory)
            finally:
                (directory / STATE).unlink(missing_ok=True)
        if isinstance(exc, (ReleaserError, OSError)):
            raise SandboxError(f"sandbox init stopped part way: {exc}; the containers, bridge "
                               f"and processes it had made were removed, the files made so "
                               f"far are left in {directory} (remove it to start afresh)") from exc
        raise


def overlay_names(nodes: dict[str, int], overlays: Mapping[str, str]) -> dict[str, str]:
    """The overlay repository name of every environment of ``nodes`` (UsageError if bad)."""
    unknown = sorted(set(overlays) - set(nodes))
    if unknown:
        raise UsageError(f"overlay names for environments without nodes: {', '.join(unknown)}")
    return {env: overlay.check_repo_name(overlays.get(env, default_overlay(env)))
            for env in nodes}


def _check_nodes(nodes: dict[str, int], ssh: bool) -> None:
    """Refuse node counts a sandbox cannot hold, before anything is made."""
    for env, count in nodes.items():
        try:
            validate.env_name(env)  # a table name of releaser.toml, part of node names
        except validate.Invalid as exc:
            raise UsageError(str(exc)) from None
        if not isinstance(count, int) or count < 1:
            raise UsageError(f"environment {env}: {count!r} nodes (at least 1)")
    if ssh:
        sandbox_ssh.node_address(sum(nodes.values()))  # every node gets its own address


class _World:
    """What one ``init_sandbox`` starts, so a failure can stop it again."""

    def __init__(self, directory: Path, ssh: bool, stock_binpkgs: bool,
                 provided: list[str], overlays: dict[str, str]) -> None:
        self.directory = directory
        self.ssh = ssh
        self.stock_binpkgs = stock_binpkgs
        self.provided = provided
        self.overlays = overlays
        self.daemons: dict[str, SandboxSSHD] = {}
        self.pidfile = directory / "distserver.pid"
        self.client_key = sandbox_ssh.client_key(directory) if ssh else ""
        self.trust = None  # a TrustConfig when the sandbox signs its overlays
        self.db = "sqlite"
        self.databases: dbserver.SandboxDatabases | None = None

    def build(self, app: AppConfig, nodes: dict[str, int], progress) -> Path:
        directory = self.directory
        central = CentralRepository(self._central_runner(progress), str(directory / "central"),
                                    trust=self.trust)
        try:
            central.init()
            progress(f"central repository at {central.root}")
            for env in ordered_environments(nodes):
                overlay_git.ensure_overlay(central, env, self.overlays[env])
                progress(f"  overlay {env} ({self.overlays[env]}): "
                         f"{central.overlay_repo(env)}")
        finally:
            _close(central.runner)

        server = distserver.start_server(Path(directory / "central" / "distfiles"), "127.0.0.1",
                                         0, pidfile=self.pidfile,
                                         logfile=directory / "logs" / "distserver.log")
        progress(f"HTTP distfile server: {server.url} (pid {server.pid})")
        if self.db != "sqlite":
            self.databases = dbserver.start_sandbox_databases(directory, self.db,
                                                              ordered_environments(nodes))
            progress(f"{self.db} server: {self.databases.server.folder} port "
                     f"{self.databases.server.port} (pid {self.databases.server.pid})")

        made: list[SandboxNode] = []
        for env in ordered_environments(nodes):
            for i in range(1, nodes[env] + 1):
                name = f"{env}-{i}"
                address = sandbox_ssh.node_address(len(made) + 1) if self.ssh else "127.0.0.1"
                node = SandboxNode(name, env, directory / "nodes" / name, free_port(address),
                                   address)
                node = self._make_node(node, app)
                made.append(node)
                via = f", sshd {node.address}:{node.ssh_port}" if node.ssh_port else ""
                progress(f"node {node.name}: root {node.root}, app port {node.port}{via}")

        config_path = directory / "releaser.toml"
        # The nodes share this machine's filesystem: they sync from the bare
        # repositories' path (central's overlays/ENV.git), a configured value.
        config_path.write_text(render_config(app, server.url, made, central=self._central(),
                                             overlays=self.overlays,
                                             sync_uri=central.overlay_repo("{env}"),
                                             trust=self.trust,
                                             databases=self.databases))
        self._bootstrap(config_path, progress)
        state = {"distserver": {"pidfile": str(self.pidfile), "url": server.url},
                 "nodes": {n.name: {"env": n.env, "root": str(n.root), "port": n.port,
                                    "address": n.address, "ssh_port": n.ssh_port}
                           for n in made}}
        if self.databases is not None:
            state["db"] = self.databases.to_state()
        if self.ssh:
            state["ssh"] = {"client_key": str(directory / sandbox_ssh.CLIENT_KEY),
                            "known_hosts": str(directory / sandbox_ssh.KNOWN_HOSTS),
                            "sshd": {name: sandbox_ssh.to_state(d)
                                     for name, d in self.daemons.items()}}
        (directory / STATE).write_text(json.dumps(state, indent=2) + "\n")
        return config_path

    def _central_runner(self, progress) -> Runner:
        if not self.ssh:
            return LocalRunner(host="central")
        daemon = self._start(sandbox_ssh.CENTRAL, sandbox_ssh.CENTRAL_ADDRESS, {})
        progress(f"central sshd on {daemon.address}:{daemon.port} (pid {daemon.pid})")
        return self._runner(sandbox_ssh.CENTRAL)

    def _central(self) -> CentralHost | None:
        daemon = self.daemons.get(sandbox_ssh.CENTRAL)
        if daemon is None:
            return None
        return CentralHost(daemon.address, daemon.port, self.directory / "central")

    def _start(self, name: str, address: str, env) -> SandboxSSHD:
        daemon = sandbox_ssh.start_sshd(self.directory, name, address, env, self.client_key)
        self.daemons[name] = daemon
        sandbox_ssh.write_trust(self.directory, self.daemons.values())
        return daemon

    def _runner(self, name: str) -> Runner:
        from releaser.hosts.ssh import SSHRunner

        return SSHRunner(sandbox_ssh.host_spec(self.directory, name, self.daemons[name]))

    def _make_node(self, node: SandboxNode, app: AppConfig) -> SandboxNode:
        """The node's bare root, its init system (the rc-service stand-in) and, in an SSH
        sandbox, its sshd: a host as installed, before releaser prepares it."""
        repo = self.overlays[node.env]
        spec = noderoot.NodeRootSpec(
            root=node.root,
            # The host's main repository and profile: its environment's standalone
            # overlay (a Gentoo host's are ::gentoo's).  Its repos.conf entry is the
            # bootstrap's.
            repos=[noderoot.RepoSpec(repo)],
            profile=noderoot.ProfileSpec(repo),
            provided=self.provided,
            stock_binpkgs=self.stock_binpkgs,
        )
        noderoot.create_bare_root(spec)
        spec = sandbox_rc.ServiceSpec.for_app(app.name, node.port, host=node.address)
        if self.databases is not None:
            spec = dataclasses.replace(spec, database_url=self.databases.urls[node.env],
                                       password_file=self.databases.password_file)
        sandbox_rc.install_rc_service(node.root, {app.name: spec})
        if not self.ssh:
            return node
        daemon = self._start(node.name, node.address, noderoot.portage_env(node.root))
        return dataclasses.replace(node, ssh_port=daemon.port)

    def _bootstrap(self, config_path: Path, progress) -> None:
        bootstrap_all(config_path, progress)

    def undo(self) -> None:
        if self.trust is not None:  # key generation and signing started its agent
            stop_keyring_agent(self.trust.gnupghome, lambda _m: None)
        if self.databases is not None:
            dbserver.stop_sandbox_databases(self.databases.to_state())
        try:
            if self.daemons:
                sandbox_ssh.stop_all({n: sandbox_ssh.to_state(d)
                                      for n, d in self.daemons.items()})
        finally:
            distserver.stop_server(self.pidfile)


def bootstrap_all(config_path: Path, progress) -> None:
    """Prepare every node with ``releaser host bootstrap``, as the CLI would (over SSH
    in an SSH or LXC sandbox: proof that the login works before anyone relies on it)."""
    from releaser.hosts.bootstrap import bootstrap

    config = load_config(config_path)
    for env in ordered_environments({e: 1 for e in config.environments}):
        report = bootstrap(config, env)
        for host in report.hosts:
            progress(f"node {host.node}: {host.status} by host bootstrap "
                     f"({len(host.changes)} change(s))")
            if not host.ok:
                raise SandboxError(f"host bootstrap of {host.node}: {host.reason}")


def _close(runner: Runner) -> None:
    close = getattr(runner, "close", None)
    if close:
        close()


def ordered_environments(nodes: dict[str, int]) -> list[str]:
    """The environments of ``nodes`` in pipeline order (ENV_ORDER first, then by name)."""
    return sorted(nodes, key=lambda e: (ENV_ORDER.index(e) if e in ENV_ORDER else 99, e))


def promote_from(env: str, present: list[str]) -> str | None:
    """The environment ``env`` promotes from: the one before it in ENV_ORDER among
    ``present``; None for the first one present and for any other name."""
    if env not in ENV_ORDER:
        return None
    earlier = [e for e in ENV_ORDER[:ENV_ORDER.index(env)] if e in present]
    return earlier[-1] if earlier else None


@dataclass(frozen=True)
class CentralHost:
    """The central repository of an SSH sandbox: its sshd, and its path on that host."""

    address: str
    port: int
    path: Path


def render_config(app: AppConfig, distfiles_url: str, nodes: list[SandboxNode],
                  central: CentralHost | None = None,
                  overlays: Mapping[str, str] | None = None,
                  sync_uri: str | None = None, trust=None, databases=None) -> str:
    """releaser.toml text; ``central`` given: an SSH sandbox (``[ssh]``, addresses);
    ``overlays``: overlay repository names by environment (default ``releaser-ENV``);
    ``sync_uri``: ``[central] sync_uri``, where the nodes sync overlays from."""
    q = json.dumps
    world = "a local world" if central is None else "a local world reached over SSH"
    lines = [f"# Written by `releaser sandbox init`: {world}, see releaser/sandbox/world.py.", "",
             "[app]", f"name = {q(app.name)}", f"category = {q(app.category)}",
             f"source = {q(str(app.source))}", f"subdir = {q(app.subdir)}",
             f"license = {q(app.license)}", f"description = {q(app.description)}",
             f"homepage = {q(app.homepage)}", f"rdepend = {q(list(app.rdepend))}",
             f"tag_prefix = {q(app.tag_prefix)}", "",
             "[central]"]
    sync = [f"sync_uri = {q(sync_uri)}"] if sync_uri else []
    remote_nodes = any(n.ssh_port is not None for n in nodes)
    if central is None:
        lines += ['path = "central"', f"distfiles_url = {q(distfiles_url)}", *sync, ""]
        if remote_nodes:  # nodes reached by SSH from a local central repository
            lines += ["[ssh]", f"known_hosts = {q(str(sandbox_ssh.KNOWN_HOSTS))}",
                      f"identity_file = {q(str(sandbox_ssh.CLIENT_KEY))}",
                      f"user = {q(sandbox_ssh.USER)}", ""]
    else:
        # A path on the central host: absolute, as it is not relative to this file there.
        lines += [f"address = {q(central.address)}", f"port = {central.port}",
                  f"path = {q(str(central.path))}", f"distfiles_url = {q(distfiles_url)}",
                  *sync, "", "[ssh]", f"known_hosts = {q(str(sandbox_ssh.KNOWN_HOSTS))}",
                  f"identity_file = {q(str(sandbox_ssh.CLIENT_KEY))}",
                  f"user = {q(sandbox_ssh.USER)}", ""]
    lines += ["[build]", 'out = "out"', ""]
    if trust is not None:
        lines += ["[trust]", f"gnupghome = {q(str(trust.gnupghome))}", ""]
    present = ordered_environments({n.env: 1 for n in nodes})
    if trust is None:  # unsigned only as a documented exception, as anywhere else
        lines += unsigned_exception(present)
    for env in present:
        name = (overlays or {}).get(env, default_overlay(env))
        lines += [f"[environments.{env}]", f"overlay = {q(name)}"]
        source = promote_from(env, present)
        if source is not None:
            lines.append(f"promote_from = {q(source)}")
        if databases is None:
            lines.append(f'database = {{ path = "/var/lib/{app.name}/{app.name}.db" }}')
        else:
            lines.append(f"database = {{ backend = {q(databases.server.backend)}, url = "
                         f"{q(databases.urls[env])} }}")
        lines.append("nodes = [")
        for n in (n for n in nodes if n.env == env):
            where = "" if n.ssh_port is None else \
                f"address = {q(n.address)}, port = {n.ssh_port}, "
            root = "" if n.root is None else f"root = {q(str(n.root))}, "
            lines.append(f"  {{ name = {q(n.name)}, {where}{root}"
                         f"health_url = {q(n.health_url)} }},")
        lines += ["]", ""]
    return "\n".join(lines)


def unsigned_exception(environments: list[str]) -> list[str]:
    """The ``[[exceptions]]`` lines an unsigned sandbox's releaser.toml documents itself
    with (releaser.config.exceptions): its environments, a year ahead."""
    expires = datetime.date.today() + datetime.timedelta(days=365)
    return ["[[exceptions]]", 'setting = "unsigned-overlay"',
            f"environments = {json.dumps(environments)}", 'reason = "sandbox"',
            'owner = "releaser sandbox"', f"expires = {expires.isoformat()}", ""]


def sandbox_trust(directory: Path, nodes: dict[str, int]):
    """A keyring in ``directory/gnupg`` with a release key for every environment."""
    from releaser.config.trust import TrustConfig
    from releaser.trust.keys import Keyring

    home = directory / "gnupg"
    keyring = Keyring(home)
    for env in ordered_environments(nodes):
        keyring.init(env)
    return TrustConfig(gnupghome=home)


def stop_keyring_agent(home: Path, progress) -> None:
    """Stop the gpg-agent that signing started for the sandbox's keyring: each one
    left behind keeps inotify instances (128 per user by default) and a process."""
    if home.is_dir():
        done = subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
                              capture_output=True, text=True)
        if done.returncode == 0:
            progress("keyring agent stopped")


def down_sandbox(directory: Path, progress=lambda _m: None) -> None:
    """Stop everything ``init_sandbox`` (and later runs) started under ``directory``.

    The apps first, then the sshds, then the HTTP server; running it again
    finds nothing left to stop and says so.  The apps are stopped through
    each node's ``rc-service`` run locally, even in an SSH sandbox: ``down``
    must work when a node's sshd is stopped or refuses us (a test, a changed
    host key), and the node's files are on this machine anyway.
    """
    directory = Path(directory).absolute()
    state_file = directory / STATE
    if not state_file.exists():
        raise UsageError(f"{directory} holds no sandbox ({STATE} not found)")
    state = json.loads(state_file.read_text())
    stop_keyring_agent(directory / "gnupg", progress)
    if state.get("hosts") == "lxc":
        from releaser.sandbox import lxc_world

        try:
            lxc_world.down(state, progress)  # the apps go with their containers
        finally:
            if distserver.stop_server(Path(state["distserver"]["pidfile"])):
                progress("HTTP server stopped")
        return
    try:
        cfg = load_config(directory / "releaser.toml")
        service = cfg.app.name
    except Exception:  # a damaged config must not keep processes running
        service = "notes"
    for name, node in state.get("nodes", {}).items():
        runner = LocalRunner(host=name, env=noderoot.portage_env(Path(node["root"])))
        result = runner.run(["rc-service", service, "stop"], check=False)
        progress(f"node {name}: {service} {'stopped' if result.ok else 'was not running'}")
    if state.get("ssh"):
        sandbox_ssh.stop_all(state["ssh"].get("sshd", {}), progress)
    dbserver.stop_sandbox_databases(state.get("db"), progress)
    if distserver.stop_server(Path(state["distserver"]["pidfile"])):
        progress("HTTP distfile server stopped")
