"""Hooks around each node (releaser.deploy.hooks): configuration, the command's
contract (variables, exit status, timeout), and a real load balancer that
sees each node drained before its restart and put back once it is healthy.

The load balancer is a real HTTP server keeping a pool of node names
(``POST /drain/NODE``, ``POST /restore/NODE``, ``GET /pool``); the hooks call
it with curl, as an operator's would.  At each call it records what the node
serves at that moment (its /health version) and the pid of its service, so
the order drain -> restart -> healthy -> restore is read from the node itself.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from releaser.cli import main
from releaser.config import EnvironmentConfig, HooksConfig, NodeConfig, parse_config
from releaser.deploy.hooks import POST_NODE, PRE_NODE, NodeHooks, run_node_hook
from releaser.errors import ConfigError, HookError

from .conftest import commit_all, git, write_config
from .sandboxes import Sandbox
from .test_promote import installed

NODES = ("staging-1", "staging-2")


# --------------------------------------------------------------------------- configuration


def _config(tmp_path: Path, hooks: str):
    path = write_config(tmp_path / "releaser.toml", tmp_path, extra=f"""
[environments.staging]
nodes = [{{ name = "n1", root = "n1", health_url = "http://127.0.0.1:9101/health" }}]

[environments.staging.hooks]
{hooks}
""")
    import tomllib

    return parse_config(tomllib.loads(path.read_text()), path)


def test_hooks_are_argv_lists_with_a_timeout(tmp_path):
    config = _config(tmp_path, 'pre_node = ["lb-ctl", "drain", "--pool", "web"]\n'
                               'post_node = ["sh", "-c", "lb-ctl restore \\"$RELEASER_NODE\\""]\n'
                               "timeout = 5")
    hooks = config.environment("staging").hooks
    assert hooks.pre_node == ("lb-ctl", "drain", "--pool", "web")
    assert hooks.post_node == ("sh", "-c", 'lb-ctl restore "$RELEASER_NODE"')
    assert hooks.timeout == 5.0


@pytest.mark.parametrize("hooks, message", [
    ('pre_node = "lb-ctl drain"', "pre_node: expected a list"),
    ("pre_node = [1, 2]", "pre_node: [1, 2] must be a list of strings"),
    ('post_node = ["--rm", "x"]', "post_node: '--rm' is not a program"),
    ('post_node = ["", "x"]', "post_node: '' is not a program"),
    ('pre_node = ["a\\u0000b"]', "pre_node: a command cannot contain a NUL"),
    ("timeout = 0", "timeout: 0.0 must be a number greater than 0"),
    ('pre_restart = ["x"]', "pre_restart: unknown key"),
])
def test_bad_hooks_are_refused_at_load(tmp_path, hooks, message):
    with pytest.raises(ConfigError, match="environments.staging.hooks." + message.replace("[", r"\[")
                       .replace("]", r"\]")):
        _config(tmp_path, hooks)


# --------------------------------------------------------------------------- the command


def _env(tmp_path: Path, **hooks) -> EnvironmentConfig:
    node = NodeConfig("web1", "http://10.0.0.11:8080/health", address="10.0.0.11")
    return EnvironmentConfig("production", "releaser-production", (node,),
                             hooks=HooksConfig(**hooks))


def test_a_hook_gets_the_documented_variables(tmp_path, monkeypatch):
    # A hook gets the operator's environment plus these variables: the caller's own
    # RELEASER_* (CI's RELEASER_JUNIT, a RELEASER_CONFIG) are not what is tested here.
    for name in [k for k in os.environ if k.startswith("RELEASER_")]:
        monkeypatch.delenv(name)
    out = tmp_path / "seen.json"
    script = f'import json, os; json.dump(dict(os.environ), open("{out}", "w"))'
    env = _env(tmp_path, post_node=("python3", "-c", script))
    assert run_node_hook(env, env.nodes[0], POST_NODE, action="promote", version="1.1.0",
                         previous="1.0.0", result="installed")
    seen = json.loads(out.read_text())
    assert {k: v for k, v in seen.items() if k.startswith("RELEASER_")} == {
        "RELEASER_ENV": "production", "RELEASER_ACTION": "promote",
        "RELEASER_PHASE": "post_node", "RELEASER_NODE": "web1",
        "RELEASER_NODE_ADDRESS": "10.0.0.11", "RELEASER_HEALTH_URL": "http://10.0.0.11:8080/health",
        "RELEASER_VERSION": "1.1.0", "RELEASER_PREVIOUS_VERSION": "1.0.0",
        "RELEASER_RESULT": "installed"}
    assert "PATH" in seen  # the operator's environment, plus these


def test_no_hook_configured_runs_nothing(tmp_path):
    env = _env(tmp_path)
    assert run_node_hook(env, env.nodes[0], PRE_NODE, action="promote", version="1",
                         previous=None) is False


@pytest.mark.parametrize("argv, timeout, message", [
    (("sh", "-c", "echo draining; echo 'pool web is locked' >&2; exit 3"), 10,
     "pre_node hook for web1 exited 3: pool web is locked"),
    (("no-such-lb-tool",), 10, "pre_node hook for web1: command not found: no-such-lb-tool"),
    # the grandchild holds the output open: the whole group is ended, the call returns
    (("sh", "-c", "sleep 60 & sleep 60"), 0.5, "pre_node hook for web1: timed out after 0.5 s"),
])
def test_a_failing_hook_is_a_hook_error(tmp_path, argv, timeout, message):
    env = _env(tmp_path, pre_node=argv, timeout=timeout)
    with pytest.raises(HookError) as caught:
        run_node_hook(env, env.nodes[0], PRE_NODE, action="promote", version="1",
                      previous=None)
    assert str(caught.value) == message


def test_post_node_only_for_a_node_that_was_drained(tmp_path):
    marks = tmp_path / "marks"
    env = _env(tmp_path, pre_node=("sh", "-c", f"echo pre >> {marks}"),
               post_node=("sh", "-c", f"echo post >> {marks}"))
    hooks = NodeHooks(env, env.nodes[0], "rollback", "1.0.0")
    hooks.after_healthy("1.1.0", "installed")  # never drained: not put back
    assert not marks.exists()
    assert hooks.before_change("1.1.0") and not hooks.before_change("1.1.0")  # once
    hooks.after_healthy("1.1.0", "installed")
    assert marks.read_text().split() == ["pre", "post"]


# --------------------------------------------------------------------------- a real load balancer


class LoadBalancer:
    """A pool of node names behind a real HTTP server, recording every change."""

    def __init__(self, sb: Sandbox):
        self.nodes = {n.name: n for n in sb.config.environment("staging").nodes}
        self.roots = {name: sb.node_root(name) for name in self.nodes}
        self.pool = set(self.nodes)
        self.refuse: set[str] = set()
        self.log: list[dict] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def hook(self, action: str) -> list[str]:
        """The argv of a hook calling this balancer with the node's variables."""
        query = ("version=$RELEASER_VERSION&previous=$RELEASER_PREVIOUS_VERSION"
                 "&phase=$RELEASER_PHASE&action=$RELEASER_ACTION&result=${RELEASER_RESULT:-}")
        return ["sh", "-c", f'exec curl -fsS -X POST "{self.url}/{action}/$RELEASER_NODE?{query}"']

    def _serving(self, name: str) -> dict:
        """What the node serves now: its /health version and its service's pid."""
        pidfile = self.roots[name] / "run" / "notes.pid"
        try:
            with urllib.request.urlopen(self.nodes[name].health_url, timeout=5) as r:
                version = json.loads(r.read())["version"]
        except OSError:
            version = None
        return {"serving": version,
                "pid": int(pidfile.read_text().split()[0]) if pidfile.exists() else None}

    def _handler(self):
        lb = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                parts = urlsplit(self.path)
                action, _, name = parts.path.strip("/").partition("/")
                if action not in ("drain", "restore") or name not in lb.nodes:
                    return self._answer(404, {"error": "unknown"})
                if name in lb.refuse:
                    return self._answer(409, {"error": f"{name} cannot leave the pool now"})
                with lb.lock:
                    (lb.pool.discard if action == "drain" else lb.pool.add)(name)
                    entry = {"event": action, "node": name, "pool": sorted(lb.pool),
                             **{k: v[0] for k, v in parse_qs(parts.query,
                                                             keep_blank_values=True).items()}}
                    lb.log.append({**entry, **lb._serving(name)})
                self._answer(200, {"pool": sorted(lb.pool)})

            def do_GET(self):
                self._answer(200, sorted(lb.pool)) if self.path == "/pool" else \
                    self._answer(404, {"error": "unknown"})

            def _answer(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args):
                pass

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def cli(sb, *args):
    return main(["-c", str(sb.config_path), *args])


def release(sb: Sandbox, tag: str) -> None:
    (sb.source / "app" / "CHANGES").write_text(f"{tag}\n")
    commit_all(sb.source, tag, when="2026-02-01T00:00:00+00:00")
    git(sb.source, "tag", tag)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    sb = Sandbox(tmp_path_factory.mktemp("hooks"), {"staging": 2})
    lb = LoadBalancer(sb)
    with sb.config_path.open("a") as fh:
        fh.write(f"\n[environments.staging.hooks]\npre_node = {json.dumps(lb.hook('drain'))}\n"
                 f"post_node = {json.dumps(lb.hook('restore'))}\ntimeout = 20\n")
    yield sb, lb
    lb.close()
    sb.down()


SERIAL = ("--canary", "1", "--batch-size", "1", "--concurrency", "1")


def test_each_node_is_drained_before_its_restart_and_restored_once_healthy(world):
    sb, lb = world
    assert cli(sb, "promote", "staging", *SERIAL) == 0  # first install: 1.0.0
    release(sb, "v1.1.0")
    lb.log.clear()
    assert cli(sb, "promote", "staging", *SERIAL) == 0
    assert [(e["event"], e["node"]) for e in lb.log] == [
        ("drain", "staging-1"), ("restore", "staging-1"),
        ("drain", "staging-2"), ("restore", "staging-2")]
    for name in NODES:
        drain, restore = (e for e in lb.log if e["node"] == name)
        # drained while the old version still served; back once the new process served
        assert drain["serving"] == "1.0.0" and restore["serving"] == "1.1.0"
        assert restore["pid"] != drain["pid"]  # the service was restarted in between
        assert drain["phase"] == "pre_node" and restore["phase"] == "post_node"
        assert (drain["version"], drain["previous"], drain["action"]) == ("1.1.0", "1.0.0",
                                                                          "promote")
        assert restore["result"] == "installed"
        assert drain["pool"] == [n for n in NODES if n != name]  # the other one kept serving
    assert lb.pool == set(NODES)


def test_a_failing_pre_node_hook_leaves_its_node_untouched_and_fails_it(world, capsys):
    sb, lb = world
    before = lb._serving("staging-2")
    lb.refuse = {"staging-2"}
    release(sb, "v1.2.0")
    lb.log.clear()
    capsys.readouterr()
    code = cli(sb, "promote", "staging", *SERIAL, "--json")
    report = json.loads(capsys.readouterr().out)
    assert code == 3, report
    nodes = {n["node"]: n for n in report["nodes"]}
    assert nodes["staging-1"]["status"] == "installed"
    assert nodes["staging-2"]["status"] == "failed" and nodes["staging-2"]["phase"] == "pre_node"
    assert "cannot leave the pool" in nodes["staging-2"]["detail"] or "409" in \
        nodes["staging-2"]["detail"]
    # untouched: same version in the vdb, same service process, still in the pool
    assert installed(sb, "staging-2") == "1.1.0"
    assert lb._serving("staging-2") == before
    assert lb.pool == set(NODES)


def test_rollback_drains_and_restores_the_nodes_it_changes(world, capsys):
    sb, lb = world
    lb.refuse = set()
    lb.log.clear()
    assert cli(sb, "rollback", "staging", "--to", "1.1.0", "--yes") == 0
    # staging-2 already runs 1.1.0, healthy: not taken out of service
    assert [(e["event"], e["node"], e["action"]) for e in lb.log] == [
        ("drain", "staging-1", "rollback"), ("restore", "staging-1", "rollback")]
    drain, restore = lb.log
    assert (drain["serving"], restore["serving"]) == ("1.2.0", "1.1.0")
    assert drain["previous"] == "1.2.0" and drain["version"] == "1.1.0"
    assert lb.pool == set(NODES)
