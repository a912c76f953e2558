"""The ledger as an append-only audit log, and ``releaser history`` / ``status`` over it.

Unit tests on a local central repository (the Runner seam counts the bytes a
save sends); then one story on a one-node sandbox: promote twice, roll back,
a lock taken over from another machine, each with who, why and nodes.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from releaser.central.audit import Actor, AuditLog
from releaser.central.ledger import HEALTHY, Ledger
from releaser.central.repository import CentralRepository
from releaser.cli import main
from releaser.deploy.history import describe, history, parse_since
from releaser.errors import UsageError
from releaser.hosts.runner import LocalRunner

from .conftest import commit_all, git
from .sandboxes import Sandbox

ME = f"{getpass.getuser()}@{socket.gethostname()}"


@dataclass
class CountingRunner(LocalRunner):
    """A local runner that counts the bytes it sends to the host (stdin and copied files)."""

    sent: list[int] = field(default_factory=list)

    def run(self, argv, *, check=True, env=None, input=None, timeout=None):
        if input is not None:
            self.sent.append(len(input.encode()))
        return super().run(argv, check=check, env=env, input=input, timeout=timeout)

    def put(self, local, remote):
        self.sent.append(Path(local).stat().st_size)
        super().put(local, remote)


@pytest.fixture
def central(tmp_path):
    repo = CentralRepository(CountingRunner(), str(tmp_path / "central"))
    repo.init()
    return repo


def bytes_for(central, action) -> int:
    central.runner.sent.clear()
    action()
    return sum(central.runner.sent)


def one_event(ledger: Ledger) -> None:
    ledger.event("node", node="staging-1", phase="healthy", version="1.0.0")
    ledger.save()


def test_one_more_event_writes_the_same_bytes_after_10000_events(central):
    actor = Actor("ops", "laptop", run="r1", reason="weekly release")
    ledger = Ledger.load(central, "staging", actor)
    ledger.set_release("1.0.0", HEALTHY)
    ledger.save()
    log = AuditLog(central, "staging")
    state = Path(ledger.path)

    def measure() -> tuple[int, int, int]:
        size, state_size = log.size(), state.stat().st_size
        sent = bytes_for(central, lambda: one_event(ledger))
        assert state.stat().st_size == state_size  # an event never rewrites the state
        return sent, log.size() - size, len(ledger.data["nodes"])

    for _ in range(10):
        one_event(ledger)
    small = measure()
    for _batch in range(10):
        for _ in range(1000):
            ledger.event("node", node="staging-1", phase="healthy", version="1.0.0")
        ledger.save()
    assert len(log.read()) >= 10_011
    large = measure()
    assert small == large, (small, large)
    sent, grown, _ = large
    assert sent == grown > 0  # exactly the new line went over the wire, nothing else
    # a node's journal (event + the state, at once) costs the same too
    journal = lambda: ledger.journal("staging-1", phase="healthy", version="1.0.0")  # noqa: E731
    before = bytes_for(central, journal)
    for _ in range(500):
        ledger.event("node", node="staging-2", phase="x")
    ledger.save()
    assert bytes_for(central, journal) == before


def test_every_event_says_who_when_why_and_where(central):
    ledger = Ledger.load(central, "staging", Actor("ops", "laptop", reason="hotfix 42"))
    ledger.set_release("1.0.0", HEALTHY, nodes=["staging-1", "staging-2"])
    ledger.set_current("1.0.0", "promote", nodes=["staging-1", "staging-2"])
    ledger.save()
    [release, current] = Ledger.load(central, "staging").events()
    for event in (release, current):
        assert (event["user"], event["host"], event["why"], event["env"]) == (
            "ops", "laptop", "hotfix 42", "staging")
        assert event["nodes"] == ["staging-1", "staging-2"]
        assert datetime.fromisoformat(event["at"]).tzinfo is not None
    assert "ops@laptop" in describe(current) and "why: hotfix 42" in describe(current)
    assert "nodes=staging-1,staging-2" in describe(current)


def test_an_older_ledger_is_migrated_once_and_loses_nothing(central):
    old = {"current": "1.1.0", "releases": {"1.0.0": {"state": "healthy"},
                                            "1.1.0": {"state": "healthy"}},
           "nodes": {"staging-1": {"phase": "installed", "version": "1.1.0"}},
           "events": [{"at": "2026-01-01T00:00:00+00:00", "kind": "current", "version": "1.0.0"},
                      {"at": "2026-01-02T00:00:00+00:00", "kind": "current", "version": "1.1.0"},
                      {"at": "2026-01-02T00:00:01+00:00", "kind": "node", "node": "staging-1"}]}
    Path(central.path("ledger", "staging.json")).write_text(json.dumps(old))
    ledger = Ledger.load(central, "staging")
    assert ledger.current == "1.1.0" and ledger.current_history() == ["1.0.0", "1.1.0"]
    assert ledger.node("staging-1")["version"] == "1.1.0"
    kinds = [e["kind"] for e in ledger.events()]
    assert kinds == ["current", "current", "node", "ledger-migrated"]
    state = json.loads(Path(ledger.path).read_text())
    assert "events" not in state and state["format"] == 2
    assert json.loads(Path(central.path("ledger", "staging.v1.json")).read_text()) == old
    # loaded again (or by a second run): nothing migrated twice
    assert [e["kind"] for e in Ledger.load(central, "staging").events()] == kinds
    # a torn last line (a power loss mid-write) is skipped, the rest stays readable,
    # and the next event starts a line of its own
    with open(AuditLog(central, "staging").path, "a") as log:
        log.write('{"kind": "node", "at": "2026-')
    again = Ledger.load(central, "staging")
    again.event("after-the-tear")
    again.save()
    assert [e["kind"] for e in again.events()] == [*kinds, "after-the-tear"]


def test_two_processes_appending_at_once_never_interleave_lines(central):
    code = ("import sys; from releaser.central.audit import AuditLog; "
            "from releaser.central.repository import CentralRepository; "
            "from releaser.hosts.runner import LocalRunner; "
            f"log = AuditLog(CentralRepository(LocalRunner(), {central.root!r}), 'staging'); "
            "[log.append([{'kind': 'x', 'who': sys.argv[1], 'i': i, 'pad': 'p' * 3000}]) "
            "for i in range(100)]")
    procs = [subprocess.Popen([sys.executable, "-c", code, who]) for who in "ab"]
    assert [p.wait() for p in procs] == [0, 0]
    lines = Path(AuditLog(central, "staging").path).read_text().splitlines()
    events = [json.loads(line) for line in lines]  # every line whole
    assert sorted((e["who"], e["i"]) for e in events) == sorted(
        (w, i) for w in "ab" for i in range(100))


def test_history_since_and_limit(central):
    old = {"at": "2020-01-01T00:00:00+00:00", "env": "staging", "kind": "current",
           "version": "0.9"}
    AuditLog(central, "staging").append([old])
    for env in ("staging", "production"):
        ledger = Ledger.load(central, env)
        for version in ("1.0.0", "1.1.0"):
            ledger.set_current(version, "promote")
        ledger.save()
    both = ["staging", "production"]
    assert len(history(central, both)) == 5
    assert old not in history(central, both, since=parse_since("1d"))
    assert [e["version"] for e in history(central, ["staging"], limit=1)] == ["1.1.0"]
    assert history(central, both, since=parse_since("2019-12-31"))[0] == old
    with pytest.raises(UsageError, match="--since 'yesterday'"):
        parse_since("yesterday")
    with pytest.raises(UsageError, match="--limit"):
        history(central, both, limit=0)
    now = datetime(2026, 5, 1, 12, tzinfo=timezone.utc)
    assert parse_since("2h", now) == now - timedelta(hours=2)


# --------------------------------------------------------------------------- on a sandbox


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    sandbox = Sandbox(tmp_path_factory.mktemp("history"), {"staging": 1})
    yield sandbox
    sandbox.down()


def cli(sb, *args):
    return main(["-c", str(sb.config_path), *args])


def plant_foreign_stale_lock(sb) -> None:
    """A lock a run on another machine left when it was killed: its lease ran out."""
    token = "f00d"
    owner = {"user": "deploy", "host": "build-7", "pid": 4242, "token": token,
             "since": "2026-01-01T00:00:00+00:00", "expires": "2026-01-01T00:02:00+00:00",
             "lease": 120, "command": "promote staging 9.9.9", "message": None}
    locks = sb.central / "locks"
    (locks / f".staging.lock.{token}").write_text(json.dumps(owner))
    os.link(locks / f".staging.lock.{token}", locks / "staging.lock")


def test_history_after_promote_rollback_and_takeover(sb, capsys):
    assert cli(sb, "promote", "staging", "--reason", "first release") == 0
    (sb.source / "app" / "CHANGES").write_text("v2\n")
    commit_all(sb.source, "v2", when="2026-02-01T00:00:00+00:00")
    git(sb.source, "tag", "v2.0.0")
    assert cli(sb, "promote", "staging", "--reason", "ticket OPS-7") == 0
    assert cli(sb, "rollback", "staging", "--yes", "--reason", "login broken") == 0
    plant_foreign_stale_lock(sb)
    assert cli(sb, "lock", "acquire", "staging", "--reason", "db maintenance") == 0
    assert cli(sb, "lock", "release", "staging") == 0
    assert cli(sb, "promote", "staging", "--reason", "") == 2
    capsys.readouterr()

    assert cli(sb, "history", "staging") == 0
    lines = capsys.readouterr().out.splitlines()

    def line(*parts):
        found = [x for x in lines if all(p in x for p in parts)]
        assert found, (parts, lines)
        return found

    line(ME, "promote-start", "version=1.0.0", "nodes=staging-1", "why: first release")
    line(ME, "current", "version=2.0.0", "nodes=staging-1", "why: ticket OPS-7")
    line(ME, "rollback-start", "target=1.0.0", "bad=2.0.0", "nodes=staging-1",
         "why: login broken")
    line(ME, "current", "version=1.0.0", "nodes=staging-1", "why: login broken")
    line(ME, "lock-taken-over", "from=deploy@build-7", "why: lease expired")
    line(ME, "lock-acquired", "why: db maintenance")
    line(ME, "node", "node=staging-1", "phase=rollback:installed")

    assert cli(sb, "history", "staging", "--json", "--limit", "3") == 0
    events = json.loads(capsys.readouterr().out)
    assert [e["kind"] for e in events] == ["lock-taken-over", "lock-acquired", "lock-released"]
    assert all(e["user"] == getpass.getuser() and e["host"] == socket.gethostname()
               for e in events)
    assert cli(sb, "history", "nosuchenv") == 2


def test_status_shows_each_nodes_last_change_and_an_unfinished_run(sb, capsys):
    capsys.readouterr()
    assert cli(sb, "status", "staging") == 0
    out = capsys.readouterr().out
    assert "LAST CHANGE" in out and "rollback:installed 1.0.0" in out and f"by {ME}" in out
    assert "INTERRUPTED" not in out and "UNFINISHED" not in out
    # a run stopped by the operator, and an install whose intent a kill -9 left open
    central = CentralRepository(LocalRunner(), str(sb.central))
    ledger = Ledger.load(central, "staging", Actor("ops", "laptop"))
    ledger.record_interrupted("promote", "SIGINT", {}, ["staging-1"], version="3.0.0")
    ledger.begin_attempt("staging-1", target="3.0.0", before="1.0.0", backups={})
    ledger.save()
    assert cli(sb, "status", "staging", "--json") == 0
    [status] = json.loads(capsys.readouterr().out)
    assert status["interrupted"]["untouched"] == ["staging-1"]
    assert status["unfinished"] == ["staging-1"]
    assert cli(sb, "status", "staging") == 0
    out = capsys.readouterr().out
    assert "INTERRUPTED: promote 3.0.0 by SIGINT" in out and "(ops@laptop)" in out
    assert "not started: staging-1" in out
    assert "UNFINISHED on staging-1: an install of 3.0.0" in out
