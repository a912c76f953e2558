"""The health check asked on the node, through its Runner (``health_check = "node"``).

At the Runner seam: a fake runner answers each ``python3 -I -S -c`` as the
node's python3 would (an HTTP answer, a refused connection, a timeout) or
fails to run it, and the one polling loop of ``check_health`` judges those
answers exactly as it judges the operator's own requests.  Then the real
program through a real ``LocalRunner`` against a real HTTP server, and the
configuration that chooses between the two transports.
"""

from __future__ import annotations

import base64
import json
import socket
from pathlib import Path

import pytest

from releaser.config import NodeConfig, parse_config
from releaser.errors import CommandError, ConfigError, UnreachableError
from releaser.hosts import health, health_fetch
from releaser.hosts.health import NodeTransport, check_health
from releaser.hosts.node import Node
from releaser.hosts.runner import CommandResult, LocalRunner
from tests.health_server import scripted_health_server

URL = "http://127.0.0.1:9101/health"


class _Clock:
    """health's clock, advanced only by its own sleeps: attempts are counted, not timed."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeRunner:
    """A node's runner whose successive commands give ``outcomes`` (the last one repeats):
    a (returncode, stdout, stderr) triple, or an exception raised by ``run``."""

    host = "node1"

    def __init__(self, *outcomes):
        self.outcomes, self.calls = list(outcomes), []

    def run(self, argv, *, check=True, env=None, input=None, timeout=None):
        self.calls.append((list(argv), check, timeout))
        outcome = self.outcomes[min(len(self.calls), len(self.outcomes)) - 1]
        if isinstance(outcome, Exception):
            raise outcome
        code, out, err = outcome
        return CommandResult(tuple(argv), code, out, err)


def http(status: int, body) -> tuple[int, str, str]:
    """What the node's python3 prints for an HTTP answer."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return 0, json.dumps({"status": status, "body": base64.b64encode(raw).decode()}) + "\n", ""


def no_answer(kind: str, reason: str) -> tuple[int, str, str]:
    """What the node's python3 prints when no HTTP answer came."""
    return 0, json.dumps({"status": None, "error": kind, "reason": reason}) + "\n", ""


OK = {"status": "ok", "version": "1.1.0", "schema": "current",
      "database": {"schema_version": 3, "app_schema_version": 3}}


def on_node(runner, monkeypatch, **kwargs):
    monkeypatch.setattr(health, "time", _Clock())
    kwargs.setdefault("expect_version", "1.1.0")
    kwargs.setdefault("timeout", 2.0)
    kwargs.setdefault("interval", 0.5)
    return check_health(URL, transport=NodeTransport(runner), **kwargs)


def test_healthy_answer_is_one_argv_command_on_the_node(monkeypatch):
    runner = FakeRunner(http(200, OK))
    result = on_node(runner, monkeypatch, request_timeout=4.0)
    assert result.ok and result.attempts == 1 and result.status_code == 200
    assert (result.version, result.db_schema_version, result.app_schema_version) == ("1.1.0", 3, 3)
    assert result.detail == f"{URL} on node1 is healthy: version 1.1.0, schema current"
    [(argv, check, timeout)] = runner.calls
    # an argv list, the URL one word of it: no shell string anywhere
    assert argv[:4] == ["python3", "-I", "-S", "-c"] and argv[5:] == [URL, "2"]
    assert argv[4] == Path(health_fetch.__file__).read_text()
    assert check is False and timeout == 2.0 + health.COMMAND_SLACK


def test_503_fails_after_consecutive_server_errors(monkeypatch):
    body = {"status": "error", "schema": "unknown", "version": "1.1.0",
            "database": {"error": "unable to open database file"}}
    runner = FakeRunner(http(503, body))
    result = on_node(runner, monkeypatch, timeout=30)
    assert not result.ok and result.status_code == 503
    assert result.attempts == len(runner.calls) == health.FAIL_AFTER_5XX
    assert result.detail == (f"{URL} on node1 answered HTTP 503 (status error, schema unknown, "
                             "version 1.1.0: unable to open database file) "
                             "(3 server errors in a row)")


def test_wrong_version_is_polled_until_the_timeout(monkeypatch):
    runner = FakeRunner(http(200, {**OK, "version": "1.0.0"}))
    result = on_node(runner, monkeypatch, timeout=1.0, interval=0.25)
    assert not result.ok and result.attempts == 5 and result.version == "1.0.0"
    assert result.detail == f"{URL} on node1 answered version 1.0.0, expected 1.1.0"


def test_refused_then_healthy_after_the_restart(monkeypatch):
    runner = FakeRunner(no_answer(health_fetch.REFUSED, "Connection refused"),
                        no_answer(health_fetch.REFUSED, "Connection refused"), http(200, OK))
    result = on_node(runner, monkeypatch)
    assert result.ok and result.attempts == 3


def test_connection_refused_until_the_timeout(monkeypatch):
    runner = FakeRunner(no_answer(health_fetch.REFUSED, "Connection refused"))
    result = on_node(runner, monkeypatch, timeout=1.0)
    assert not result.ok and result.status_code is None and result.attempts == 3
    assert result.detail == f"{URL} on node1: connection refused"


def test_timeouts_in_the_program_and_in_the_runner(monkeypatch):
    runner = FakeRunner(no_answer(health_fetch.TIMEOUT, "timed out"))
    result = on_node(runner, monkeypatch, timeout=0, request_timeout=3.0)
    assert result.detail == f"{URL} on node1: no answer within 0.2 s"
    runner = FakeRunner(CommandError(["python3"], 124, "", "timed out after 12 s", "node1"))
    result = on_node(runner, monkeypatch, timeout=1.0, request_timeout=3.0)
    assert not result.ok and result.attempts == 3
    # the last attempt had what was left of the timeout, at least 0.2 s
    assert result.detail == f"{URL} on node1: no answer within 0.2 s"
    assert [timeout for _, _, timeout in runner.calls] == [
        1.0 + health.COMMAND_SLACK, 0.5 + health.COMMAND_SLACK, 0.2 + health.COMMAND_SLACK]


def test_a_node_without_python3_is_unhealthy_with_the_reason(monkeypatch):
    runner = FakeRunner(CommandError(["python3"], 127, "", "command not found: python3", "node1"))
    result = on_node(runner, monkeypatch, timeout=0)
    assert not result.ok
    assert result.detail == (f"{URL} on node1: cannot run python3 on the node: "
                             "command not found: python3")


def test_a_program_that_says_nothing_readable(monkeypatch):
    runner = FakeRunner((1, "", "Traceback (most recent call last):\nSyntaxError: oops\n"),
                        (0, "not json\n", ""))
    first = on_node(runner, monkeypatch, timeout=0)
    assert first.detail == (f"{URL} on node1: python3 on the node gave no answer (exit 1): "
                            "SyntaxError: oops")
    second = on_node(runner, monkeypatch, timeout=0)
    assert "gave no answer (exit 0): not json" in second.detail


def test_a_lost_connection_is_unreachable_not_unhealthy(monkeypatch):
    runner = FakeRunner(UnreachableError("host node1 (test): connection lost while running "
                                         "python3; its outcome is unknown"))
    with pytest.raises(UnreachableError, match="connection lost"):
        on_node(runner, monkeypatch)


def test_a_dead_process_ends_the_check_on_the_node_too(monkeypatch):
    runner = FakeRunner(no_answer(health_fetch.REFUSED, "Connection refused"))
    result = on_node(runner, monkeypatch, timeout=30,
                     process_gone=lambda: "notes pid 42 is not running any more")
    assert not result.ok and result.attempts == 1
    assert result.detail == (f"notes pid 42 is not running any more; {URL} on node1: "
                             "connection refused")


# --- the real program, through a real LocalRunner ----------------------------------------

@pytest.fixture
def server():
    """The scripted health server answering OK (``state["answers"]`` to change it)."""
    with scripted_health_server((200, OK)) as (state, url):
        yield state, url


def test_the_program_runs_on_a_real_local_node(server, monkeypatch):
    state, url = server
    # the node's environment may say anything about proxies and PYTHONPATH: ignored
    runner = LocalRunner(host="node1", env={"http_proxy": "http://127.0.0.1:9/",
                                            "PYTHONPATH": "/nonexistent"})
    transport = NodeTransport(runner)
    result = check_health(url, expect_version="1.1.0", timeout=5, transport=transport)
    assert result.ok and result.app_schema_version == 3
    assert result.detail == f"{url} on node1 is healthy: version 1.1.0, schema current"
    state["answers"] = [(503, {"status": "error", "database": {"error": "disk I/O error"}})]
    result = check_health(url, expect_version=None, timeout=0, transport=transport)
    assert result.status_code == 503 and result.detail.endswith("(status error: disk I/O error)")


def test_the_program_reports_refused_and_silent_servers():
    transport = NodeTransport(LocalRunner(host="node1"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/health"
    result = check_health(url, expect_version=None, timeout=0, transport=transport)
    assert result.detail == f"{url} on node1: connection refused"
    with socket.socket() as listener:  # accepts (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/health"
        result = check_health(url, expect_version=None, timeout=0, transport=transport)
    assert result.detail == f"{url} on node1: no answer within 0.2 s"


# --- the configuration chooses the transport ---------------------------------------------

def _config(tmp_path: Path, app: dict | None = None, staging: dict | None = None):
    raw = {"app": {"name": "notes", **(app or {})},
           "environments": {
               "staging": {"nodes": [{"name": "s1", "root": "s1",
                                      "health_url": "http://127.0.0.1:9101/health"}],
                           **(staging or {})},
               "production": {"nodes": [{"name": "p1", "root": "p1",
                                         "health_url": "http://127.0.0.1:9102/health"}]}}}
    return parse_config(raw, tmp_path / "releaser.toml")


def test_health_check_defaults_to_the_node_and_is_overridden_per_environment(tmp_path):
    config = _config(tmp_path)
    assert {n.health_check for e in config.environments.values() for n in e.nodes} == {"node"}
    config = _config(tmp_path, app={"health_check": "operator"}, staging={"health_check": "node"})
    assert config.environment("staging").nodes[0].health_check == "node"
    assert config.environment("production").nodes[0].health_check == "operator"


@pytest.mark.parametrize("where, value", [("app", "nodes"), ("app", 1), ("staging", "ssh")])
def test_a_bad_health_check_is_refused_with_its_key(tmp_path, where, value):
    kwargs = {where: {"health_check": value}}
    key = "app.health_check" if where == "app" else "environments.staging.health_check"
    with pytest.raises(ConfigError, match=rf"releaser.toml: {key}: "):
        _config(tmp_path, **kwargs)


@pytest.mark.parametrize("where, asks_node", [("node", True), ("operator", False)])
def test_node_health_uses_the_configured_transport(server, where, asks_node):
    _, url = server
    runner = FakeRunner(http(200, OK))
    node = Node(NodeConfig("s1", url, health_check=where), runner, "/")
    result = node.health("1.1.0", timeout=2)
    assert result.ok
    assert bool(runner.calls) is asks_node
    assert result.detail.startswith(f"{url} on node1 " if asks_node else f"{url} is healthy")


# --- both transports against the real app on a sandbox node --------------------------------

def test_status_asks_on_the_node_by_default_and_from_here_when_configured(tmp_path, capsys):
    """The real notes app after a real promote: ``releaser status`` asks its health on
    the node (the default), then, with ``health_check = "operator"`` for the
    environment, from releaser's own process; both see it healthy."""
    from releaser.cli import main

    from .sandboxes import Sandbox

    sb = Sandbox(tmp_path, {"staging": 1})
    try:
        config = ["-c", str(sb.config_path)]
        assert main([*config, "promote", "staging"]) == 0
        url = sb.config.environment("staging").nodes[0].health_url

        def status_detail() -> str:
            capsys.readouterr()
            assert main([*config, "status", "staging", "--json"]) == 0
            [env] = json.loads(capsys.readouterr().out)
            [node] = env["nodes"]
            assert node["healthy"] is True, node
            return node["detail"]

        assert status_detail() == f"{url} on staging-1 is healthy: version 1.0.0, schema current"
        text = sb.config_path.read_text()
        sb.config_path.write_text(text.replace(
            "[environments.staging]\n", '[environments.staging]\nhealth_check = "operator"\n', 1))
        assert status_detail() == f"{url} is healthy: version 1.0.0, schema current"
    finally:
        sb.down()
