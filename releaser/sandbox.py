"""``releaser sandbox init|down``: a complete local world for the whole pipeline.

Under DIR::

    DIR/releaser.toml        the configuration of this world (written here)
    DIR/sandbox.json         what was started: pids, ports (for ``down``)
    DIR/central/             the central repository (releaser.central)
    DIR/nodes/NAME/          one node root per node, real Portage inside
    DIR/logs/                the HTTP server's log
    DIR/out/                 build output

The central repository's distfiles are served by a real HTTP server
(``releaser.distserver``); every node syncs its environment's overlay from the
central bare git repository with Portage's own git sync, fetches distfiles
over HTTP and checks them against the Manifest.  Each node runs the installed
app on its own loopback port through the ``rc-service`` stand-in
(``releaser.sandbox_rc``), so node code is the same as on an OpenRC host.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import socket
from dataclasses import dataclass
from pathlib import Path

from . import distserver, noderoot, overlay_git, portage_tools, sandbox_rc
from .central import CentralRepository
from .config import AppConfig, load_config
from .errors import UsageError
from .overlay import repo_name, skeleton
from .runner import LocalRunner

STATE = "sandbox.json"
DEFAULT_NODES = {"staging": 2, "production": 2}
ENV_ORDER = ("staging", "production")


@dataclass(frozen=True)
class SandboxNode:
    name: str
    env: str
    root: Path
    port: int

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"


def parse_nodes(text: str) -> dict[str, int]:
    """``staging=2,production=2`` -> {"staging": 2, "production": 2}."""
    counts: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        env, sep, count = part.partition("=")
        if not sep or not count.isdigit() or int(count) < 1:
            raise UsageError(f"--nodes: {part!r} is not ENV=COUNT (COUNT at least 1)")
        skeleton(env)  # an environment needs an overlay skeleton
        counts[env] = int(count)
    if not counts:
        raise UsageError("--nodes: give at least one ENV=COUNT")
    return counts


def provided_packages() -> list[str]:
    """package.provided entries for what the app needs from the machine's Python."""
    return [f"dev-lang/python-{platform.python_version()}",
            f"dev-python/flask-{importlib.metadata.version('flask')}",
            f"dev-python/waitress-{importlib.metadata.version('waitress')}"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_sandbox(directory: Path, app: AppConfig, nodes: dict[str, int] | None = None,
                 progress=lambda _m: None) -> Path:
    """Create (or complete) a sandbox under ``directory``; returns its releaser.toml."""
    directory = Path(directory).absolute()
    nodes = nodes or DEFAULT_NODES
    if (directory / STATE).exists():
        raise UsageError(f"{directory} already holds a sandbox; `releaser sandbox down "
                         f"{directory}` stops it, then remove the folder to start afresh")
    directory.mkdir(parents=True, exist_ok=True)
    central = CentralRepository(LocalRunner(host="central"), str(directory / "central"))
    central.init_dirs()
    progress(f"central repository at {central.root}")
    for env in _ordered(nodes):
        overlay_git.ensure_overlay(central, env, env)
        progress(f"  overlay {env}: {central.overlay_repo(env)}")

    server = distserver.start_server(Path(central.path("distfiles")), "127.0.0.1", 0,
                                     pidfile=directory / "distserver.pid",
                                     logfile=directory / "logs" / "distserver.log")
    progress(f"HTTP distfile server: {server.url} (pid {server.pid})")

    made: list[SandboxNode] = []
    for env in _ordered(nodes):
        for i in range(1, nodes[env] + 1):
            node = SandboxNode(f"{env}-{i}", env, directory / "nodes" / f"{env}-{i}", free_port())
            _make_node(node, central, app)
            made.append(node)
            progress(f"node {node.name}: root {node.root}, app port {node.port}")

    config_path = directory / "releaser.toml"
    config_path.write_text(render_config(app, server.url, made))
    state = {"distserver": {"pidfile": str(directory / "distserver.pid"), "url": server.url},
             "nodes": {n.name: {"env": n.env, "root": str(n.root), "port": n.port} for n in made}}
    (directory / STATE).write_text(json.dumps(state, indent=2) + "\n")
    return config_path


def _ordered(nodes: dict[str, int]) -> list[str]:
    return sorted(nodes, key=lambda e: (ENV_ORDER.index(e) if e in ENV_ORDER else 99, e))


def _make_node(node: SandboxNode, central: CentralRepository, app: AppConfig) -> None:
    repo = _skeleton_repo_name(node.env)
    spec = noderoot.NodeRootSpec(
        root=node.root,
        repos=[noderoot.RepoSpec(repo, sync_type="git", sync_uri=central.overlay_repo(node.env))],
        profile=noderoot.ProfileSpec(repo),
        provided=provided_packages(),
    )
    noderoot.create_node_root(spec)
    sandbox_rc.install_rc_service(node.root,
                                  {app.name: sandbox_rc.ServiceSpec.for_app(app.name, node.port)})
    portage_tools.sync(LocalRunner(host=node.name, env=noderoot.portage_env(node.root)), repo)


def _skeleton_repo_name(env: str) -> str:
    return (skeleton(env) / "profiles" / "repo_name").read_text().strip()


def render_config(app: AppConfig, distfiles_url: str, nodes: list[SandboxNode]) -> str:
    q = json.dumps
    lines = ["# Written by `releaser sandbox init`: a local world, see releaser/sandbox.py.", "",
             "[app]", f"name = {q(app.name)}", f"category = {q(app.category)}",
             f"source = {q(str(app.source))}", f"subdir = {q(app.subdir)}",
             f"license = {q(app.license)}", f"description = {q(app.description)}",
             f"homepage = {q(app.homepage)}", f"rdepend = {q(list(app.rdepend))}",
             f"tag_prefix = {q(app.tag_prefix)}", "",
             "[central]", 'path = "central"', f"distfiles_url = {q(distfiles_url)}", "",
             "[build]", 'out = "out"', ""]
    for env in _ordered({n.env: 1 for n in nodes}):
        lines += [f"[environments.{env}]", f"overlay = {q(_skeleton_repo_name(env))}"]
        if env == "production" and any(n.env == "staging" for n in nodes):
            lines.append('promote_from = "staging"')
        lines.append(f'database = {{ path = "/var/lib/{app.name}/{app.name}.db" }}')
        lines.append("nodes = [")
        for n in (n for n in nodes if n.env == env):
            lines.append(f"  {{ name = {q(n.name)}, root = {q(str(n.root))}, "
                         f"health_url = {q(n.health_url)}, app_port = {n.port} }},")
        lines += ["]", ""]
    return "\n".join(lines)


def down_sandbox(directory: Path, progress=lambda _m: None) -> None:
    """Stop everything ``init_sandbox`` (and later runs) started under ``directory``."""
    directory = Path(directory).absolute()
    state_file = directory / STATE
    if not state_file.exists():
        raise UsageError(f"{directory} holds no sandbox ({STATE} not found)")
    state = json.loads(state_file.read_text())
    try:
        cfg = load_config(directory / "releaser.toml")
        service = cfg.app.name
    except Exception:  # a damaged config must not keep processes running
        service = "notes"
    for name, node in state.get("nodes", {}).items():
        runner = LocalRunner(host=name, env=noderoot.portage_env(Path(node["root"])))
        result = runner.run(["rc-service", service, "stop"], check=False)
        progress(f"node {name}: {service} {'stopped' if result.ok else 'was not running'}")
    if distserver.stop_server(Path(state["distserver"]["pidfile"])):
        progress("HTTP distfile server stopped")
