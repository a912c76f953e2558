"""Interrupts that leave a truthful state (releaser.cli.signals, releaser.deploy.interrupts).

A Ctrl-C at the terminal sends SIGINT to the whole foreground process group.
releaser then starts no further node, finishes the ones in flight (their
commands run in sessions of their own, so the signal never reached them),
records the interruption in the ledger, releases the lock and exits 130; a
second one stops at once, and the next run finishes the job.

The sandbox tests run ``releaser promote`` as a real process in a process
group of its own and signal that group, as a terminal would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request

import pytest

from releaser.central.ledger import HEALTHY, INTERRUPTED, Ledger
from releaser.central.repository import CentralRepository
from releaser.cli import main
from releaser.cli.signals import stop_on_signals
from releaser.deploy.fleet import STOPPED, RolloutPolicy, run_stages
from releaser.hosts.runner import LocalRunner

from .conftest import commit_all, git
from .sandboxes import Sandbox, wait_for_orphaned_emerges
from .test_promote import installed

# --------------------------------------------------------------------------- the scheduler


def test_a_stop_starts_no_further_node_and_lets_the_running_one_finish():
    stop = threading.Event()
    started = []

    def work(name):
        started.append(name)
        if name == "n1":
            stop.set()  # the operator's Ctrl-C while n1 works
        return f"{name} done"

    policy = RolloutPolicy(concurrency=1, canary=1, batch_size=2, max_fail="0")
    run = run_stages([["n1"], ["n2", "n3"]], work, policy=policy, failed=lambda _r: False,
                     stop=stop)
    assert started == ["n1"]
    assert run.results == [("n1", "n1 done")]
    assert run.untouched == ["n2", "n3"] and run.halted == STOPPED


def test_a_stop_after_the_last_node_started_interrupts_nothing():
    stop = threading.Event()

    def work(name):
        if name == "n2":
            stop.set()
        return name

    run = run_stages([["n1"], ["n2"]], work, policy=RolloutPolicy(concurrency=1),
                     failed=lambda _r: False, stop=stop)
    assert [r for _n, r in run.results] == ["n1", "n2"]
    assert run.untouched == [] and run.halted == ""


# --------------------------------------------------------------------------- the handlers


def test_the_first_signal_asks_the_run_to_stop_and_the_handlers_are_put_back():
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals() as stop:
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        stop.wait(5)
        assert stop.is_set() and stop.reason == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_local_command_runs_outside_releasers_process_group():
    """What keeps a terminal's Ctrl-C from an emerge or a restart in flight."""
    out = LocalRunner().run(["sh", "-c", "ps -o pgid=,sid= -p $$"]).stdout.split()
    assert int(out[0]) != os.getpgrp() and int(out[1]) != os.getsid(0)


# --------------------------------------------------------------------------- on a sandbox


def cli(sb, *args):
    return main(["-c", str(sb.config_path), *args])


def ledger(sb) -> Ledger:
    return Ledger.load(CentralRepository(LocalRunner(), str(sb.central)), "staging")


def serving(sb, node) -> str:
    url = next(n.health_url for n in sb.config.environment("staging").nodes if n.name == node)
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())["version"]


def release(sb: Sandbox, tag: str) -> None:
    (sb.source / "app" / "CHANGES").write_text(f"{tag}\n")
    commit_all(sb.source, tag, when="2026-02-01T00:00:00+00:00")
    git(sb.source, "tag", tag)


#: One batch of both nodes, one at a time: staging-2 waits while staging-1 works.
ONE_BATCH = ("promote", "staging", "--canary", "0", "--batch-size", "0", "--concurrency", "1")


class Releaser:
    """``releaser ARGS`` as a process group of its own, as a shell runs a command."""

    def __init__(self, sb: Sandbox, args):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "releaser", "-c", str(sb.config_path), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []

    def until(self, marker: str) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            if marker in line:
                return
        raise AssertionError(f"never printed {marker!r}: {''.join(self.lines)}")

    def ctrl_c(self) -> None:
        """SIGINT to the whole process group, as a terminal's Ctrl-C."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def finish(self) -> int:
        self.lines += self.proc.stdout.readlines()
        return self.proc.wait(300)

    @property
    def output(self) -> str:
        return "".join(self.lines)


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    sandbox = Sandbox(tmp_path_factory.mktemp("interrupts"), {"staging": 2})
    assert cli(sandbox, "promote", "staging") == 0
    yield sandbox
    sandbox.down()


def test_ctrl_c_mid_batch_finishes_the_node_in_flight_and_exits_130(sb, capsys):
    release(sb, "v1.1.0")
    run = Releaser(sb, ONE_BATCH)
    run.until("staging-1: restart")
    run.ctrl_c()  # reaches releaser only: the restart in flight goes on
    assert run.finish() == 130, run.output
    assert "INTERRUPTED by SIGINT" in run.output and "not started: staging-2" in run.output
    # in flight: finished, healthy on the new version (not cut, not rolled back)
    assert installed(sb, "staging-1") == "1.1.0" and serving(sb, "staging-1") == "1.1.0"
    # never started: untouched
    assert installed(sb, "staging-2") == "1.0.0" and serving(sb, "staging-2") == "1.0.0"
    # the ledger says so, and the lock was released
    state = ledger(sb)
    assert state.release("1.1.0")["state"] == INTERRUPTED and state.current == "1.0.0"
    event = state.events("interrupted")[-1]
    assert event["signal"] == "SIGINT" and event["command"] == "promote"
    assert event["done"] == {"staging-1": "installed"} and event["untouched"] == ["staging-2"]
    assert not (sb.central / "locks" / "staging.lock").exists()

    # the next run completes the job
    capsys.readouterr()
    assert cli(sb, "promote", "staging", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert {n["node"]: n["status"] for n in report["nodes"]} == {
        "staging-1": "unchanged", "staging-2": "installed"}
    assert serving(sb, "staging-2") == "1.1.0"
    state = ledger(sb)
    assert state.release("1.1.0")["state"] == HEALTHY and state.current == "1.1.0"


def test_a_second_ctrl_c_stops_at_once_and_the_next_run_finishes(sb):
    release(sb, "v1.2.0")
    run = Releaser(sb, ONE_BATCH)
    run.until("staging-1: install")
    run.ctrl_c()
    run.until("no further node will be started")
    run.ctrl_c()
    assert run.finish() == 130, run.output
    assert "stopping at once" in run.output
    assert "INTERRUPTED by" not in run.output  # no report: it did not wait for staging-1
    wait_for_orphaned_emerges()  # the emerge in flight runs on by itself, as after kill -9

    rerun = Releaser(sb, ("promote", "staging"))
    assert rerun.finish() == 0, rerun.output
    for node in ("staging-1", "staging-2"):
        assert installed(sb, node) == "1.2.0" and serving(sb, node) == "1.2.0"
    assert ledger(sb).current == "1.2.0"
