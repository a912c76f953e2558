"""Webhook notifications (releaser.deploy.notify) against real local HTTP receivers."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from releaser.central import ledger as ledger_mod
from releaser.central.ledger import Ledger
from releaser.central.repository import CentralRepository
from releaser.config import NotifyConfig, parse_config
from releaser.deploy.notify import Notifier
from releaser.deploy.promote import promote
from releaser.errors import ConfigError

from .conftest import write_config
from .sandboxes import Sandbox


class Receiver:
    """An incoming-webhook endpoint on 127.0.0.1: records each JSON body it is sent."""

    def __init__(self, status: int = 200):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.headers["Content-Type"], json.loads(body)))
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/SECRET-TOKEN"

    @property
    def events(self) -> list[str]:
        return [body["releaser"]["event"] for _type, body in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Hanging:
    """Accepts connections and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.accepted: list[socket.socket] = []
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/hook"


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def hanging():
    h = Hanging()
    yield h
    h.close()


# --- configuration --------------------------------------------------------------
def _load(tmp_path: Path, notify: str):
    path = write_config(tmp_path / "releaser.toml", tmp_path / "src",
                        extra=f"\n[environments.staging]\n\n[environments.staging.notify]\n{notify}\n")
    return parse_config(tomllib.loads(path.read_text()), path)


def test_webhooks_are_read_per_environment(tmp_path):
    config = _load(tmp_path, 'webhooks = ["https://chat.example/hooks/abc"]\ntimeout = 2\n'
                             'retries = 1')
    assert config.environment("staging").notify == NotifyConfig(
        webhooks=("https://chat.example/hooks/abc",), timeout=2.0, retries=1)


@pytest.mark.parametrize("notify, message", [
    ('webhooks = ["ftp://chat.example/x"]', r"webhooks\[0\]: .*must be an http:// or https://"),
    ('webhooks = ["http://chat example/x"]', r"webhooks\[0\]: .*not a URL"),
    ('webhooks = [3]', r"webhooks\[0\]: expected a string"),
    ('timeout = 0', r"timeout: 0.0 must be a number greater than 0"),
    ('retries = -1', r"retries: must not be negative"),
    ('url = "http://x/"', r"url: unknown key"),
])
def test_bad_notify_settings_are_refused_at_load(tmp_path, notify, message):
    with pytest.raises(ConfigError, match=r"environments\.staging\.notify\." + message):
        _load(tmp_path, notify)


# --- the notifier on its own ------------------------------------------------------
def test_events_arrive_in_order_in_the_incoming_webhook_shape(receiver):
    with Notifier(NotifyConfig(webhooks=(receiver.url,)), "staging", "promote") as notifier:
        for i in range(5):
            notifier.send("stage", f"stage {i + 1}", stage=i + 1)
    assert [body["releaser"]["stage"] for _t, body in receiver.received] == [1, 2, 3, 4, 5]
    content_type, body = receiver.received[0]
    assert content_type == "application/json"
    assert body["text"] == "releaser promote staging: stage 1"
    assert body["releaser"]["env"] == "staging" and body["releaser"]["user"]
    assert notifier.problems() == [] and notifier.deliveries[0].delivered == 5


def test_a_receiver_that_is_down_or_hangs_costs_retries_and_is_reported(hanging):
    down = closed_port_url()
    config = NotifyConfig(webhooks=(down, hanging.url), timeout=0.3, retries=1)
    with Notifier(config, "staging", "promote") as notifier:
        notifier.send("start", "starting")
    closed, hung = notifier.deliveries
    # the closed port fails at once (both attempts), the hanging one times out
    assert closed.failed == 1 and closed.delivered == 0 and "refused" in closed.last_error
    problems = notifier.problems()
    assert problems[0] == ("notify: http://127.0.0.1:" + down.split(":")[2].split("/")[0]
                           + ": 1 event(s) not delivered (" + closed.last_error + ")")
    assert "/hook" not in " ".join(problems)  # no path: a webhook's token lives there
    assert hung.delivered == 0 and (hung.failed == 1 or notifier.abandoned == 1)
    assert len(problems) == 2


def test_the_error_event_names_the_exception_not_its_message(receiver):
    with pytest.raises(ConfigError):
        with Notifier(NotifyConfig(webhooks=(receiver.url,)), "staging", "promote"):
            raise ConfigError("password=hunter2 in the message")
    assert receiver.events == ["error"]
    assert "hunter2" not in json.dumps(receiver.received)


# --- a promote on a 1-node sandbox --------------------------------------------------
@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    sb = Sandbox(tmp_path_factory.mktemp("notify"), {"staging": 1})
    yield sb
    sb.down()


def with_webhooks(config, env: str, *urls: str, timeout: float = 2.0, retries: int = 1):
    environment = dataclasses.replace(config.environment(env), notify=NotifyConfig(
        webhooks=urls, timeout=timeout, retries=retries))
    return dataclasses.replace(config, environments={**config.environments, env: environment})


def test_a_promote_tells_the_webhook_each_step_in_order(fleet, receiver):
    report = promote(with_webhooks(fleet.config, "staging", receiver.url), "staging")
    assert report.ok and report.warnings == []
    assert receiver.events == ["start", "stage", "finish"]
    start, stage, finish = (body["releaser"] for _t, body in receiver.received)
    assert start["version"] == "1.0.0" and start["nodes"] == ["staging-1"]
    assert stage["stage"] == 1 and stage["nodes"] == ["staging-1"]
    assert finish["ok"] is True and finish["nodes"] == {"staging-1": "installed"}
    assert "SECRET-TOKEN" not in json.dumps(receiver.received)


def test_a_receiver_down_or_hanging_fails_nothing_and_is_reported(fleet, receiver, hanging):
    down = closed_port_url()
    config = with_webhooks(fleet.config, "staging", down, hanging.url, receiver.url,
                           timeout=0.5, retries=1)
    report = promote(config, "staging")
    assert report.ok
    ledger = Ledger.load(CentralRepository.from_config(fleet.config), "staging")
    assert ledger.release("1.0.0")["state"] == ledger_mod.HEALTHY
    # the hanging receiver holds up the working one behind it, never the run: what
    # reached it came in order, and what did not is reported
    assert receiver.events == ["start", "stage", "finish"][:len(receiver.events)]
    warnings = [w for w in report.warnings if w.startswith("notify: ")]
    assert any(f"127.0.0.1:{down.split(':')[2].split('/')[0]}: " in w for w in warnings)
    assert len(hanging.accepted) >= 1


def test_a_rollback_tells_the_webhook_each_step_in_order(fleet, receiver):
    from releaser.deploy.rollback import execute_rollback, plan_rollback

    from .conftest import commit_all, git

    (fleet.source / "CHANGES").write_text("1.1.0\n")
    commit_all(fleet.source, "notes 1.1.0", when="2026-03-01T00:00:00+00:00")
    git(fleet.source, "tag", "v1.1.0")
    assert promote(fleet.config, "staging").ok
    config = with_webhooks(fleet.config, "staging", receiver.url)
    central = CentralRepository.from_config(config)
    report = execute_rollback(config, central, plan_rollback(config, central, "staging"))
    assert report.warnings == [] and receiver.events == ["start", "stage", "finish"]
    start, stage, finish = (body["releaser"] for _t, body in receiver.received)
    assert start["command"] == "rollback" and start["target"] == "1.0.0"
    assert start["bad"] == "1.1.0" and stage["nodes"] == ["staging-1"]
    assert finish["ok"] is True and finish["nodes"] == {"staging-1": "installed"}


def test_a_halted_rollout_sends_halt_auto_rollback_and_interruption_in_order(receiver):
    """The events a failing promote adds after its stages, from its real report."""
    from releaser.build.release import Release
    from releaser.deploy.promote import PromoteReport, _notify_outcome
    from releaser.deploy.rollout import INSTALLED, ROLLED_BACK, NodeOutcome

    release = Release("notes", "www-apps", "2.0.0", "c" * 40, "main", "v2.0.0", 0, False,
                      None, "2026-01-01T00:00:00+00:00", "t" * 40, {}, {}, {})
    report = PromoteReport(env="staging", release=release, publish=None,
                           nodes=[NodeOutcome("staging-1", ROLLED_BACK),
                                  NodeOutcome("staging-2", INSTALLED)],
                           halted="staging-1 failed its health check", interrupted="SIGINT")
    with Notifier(NotifyConfig(webhooks=(receiver.url,)), "staging", "promote") as notifier:
        _notify_outcome(notifier, report)
    assert receiver.events == ["halt", "auto-rollback", "interrupted"]
    halt, rolled, interrupted = (body["releaser"] for _t, body in receiver.received)
    assert halt["reason"] == "staging-1 failed its health check"
    assert rolled["nodes"] == ["staging-1"] and interrupted["interrupted"] == "SIGINT"
