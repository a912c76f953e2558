"""The environment lock under real contention: many ``releaser promote staging`` at once.

Every contender is its own process running the real ``releaser`` CLI on one
sandbox; they are forked from one driver that imported releaser once, which
keeps twenty contenders cheap.  So that they reach the lock together however
slowly each one starts, each waits at a gate just before the real
``EnvironmentLock.acquire``, and the one that takes the lock keeps it until
every other contender has exited: the outcome then depends on the lock alone,
never on timing.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from .sandboxes import Sandbox

CONTENDERS = 20
ROUNDS = 5

#: Forks the contenders; each runs ``releaser promote staging`` with a gate around
#: the real acquire, its output in GATE/out-PID and its exit code in GATE/exit-PID.
DRIVER = """
import os, sys, time
from pathlib import Path
from releaser import cli
from releaser.central import lock
from releaser.deploy import promote, rollout  # imported once, before forking
gate, config, contenders = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
real = lock.EnvironmentLock.acquire

def wait_for(name):
    while not (gate / name).exists():
        time.sleep(0.02)

def gated(self):
    (gate / f"ready-{os.getpid()}").touch()
    wait_for("go")
    real(self)
    (gate / f"holds-{os.getpid()}").touch()
    wait_for("release")
    return self

lock.EnvironmentLock.acquire = gated
sys.stdout.flush()
children = []
for _ in range(contenders):
    pid = os.fork()
    if pid == 0:
        out = os.open(gate / f"out-{os.getpid()}", os.O_WRONLY | os.O_CREAT, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        code = 70
        try:
            code = cli.main(["-c", config, "promote", "staging"])
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    children.append(pid)
for _ in children:
    pid, status = os.wait()
    (gate / f"exit-{pid}.tmp").write_text(str(os.waitstatus_to_exitcode(status)))
    (gate / f"exit-{pid}.tmp").rename(gate / f"exit-{pid}")
"""


def wait_until(condition, what: str, timeout: float = 300.0) -> None:
    """Poll ``condition``; a deadline only turns a hang into a failure."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    sb = Sandbox(tmp_path_factory.mktemp("lockrace"), {"staging": 1})
    # Build once, so the contenders reuse the release instead of all building it.
    subprocess.run([sys.executable, "-m", "releaser", "-c", str(sb.config_path), "build"],
                   check=True, capture_output=True)
    yield sb
    sb.down()


def race(sb: Sandbox, gate: Path) -> tuple[int, list[tuple[int, str]]]:
    """Start the contenders; return the winner's pid and the losers' (exit code, output)."""
    gate.mkdir()
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(gate), str(sb.config_path),
                               str(CONTENDERS)], stderr=subprocess.PIPE, text=True)
    count = lambda pattern: len(list(gate.glob(pattern)))  # noqa: E731
    try:
        wait_until(lambda: count("ready-*") == CONTENDERS or count("exit-*")
                   or driver.poll() is not None, "every contender at the gate")
        assert count("exit-*") == 0 and driver.poll() is None, "a contender ended early"
        (gate / "go").touch()
        wait_until(lambda: count("holds-*") + count("exit-*") == CONTENDERS,
                   "every contender to take the lock or exit")
        holders = list(gate.glob("holds-*"))
        assert len(holders) == 1, f"{len(holders)} runs held the lock at once"
        winner = int(holders[0].name.split("-")[1])
        losers = [(int(path.read_text()), (gate / f"out-{path.name[5:]}").read_text())
                  for path in gate.glob("exit-*")]
        (gate / "release").touch()
        _out, err = driver.communicate(timeout=300)
        assert driver.returncode == 0, err
        assert (gate / f"exit-{winner}").read_text() == "0", (gate / f"out-{winner}").read_text()
        return winner, losers
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()


def test_twenty_concurrent_promotes_exactly_one_proceeds(sandbox, tmp_path):
    lock = sandbox.central / "locks" / "staging.lock"
    for round_ in range(ROUNDS):
        winner_pid, losers = race(sandbox, tmp_path / f"gate{round_}")
        assert len(losers) == CONTENDERS - 1
        for code, err in losers:
            assert code == 5, err
            assert f"pid {winner_pid} (promote staging 1.0.0)" in err, err
            assert "staging is locked by" in err and " for " in err, err
        assert not lock.exists()
        assert not list(lock.parent.glob(".staging.lock.*")), "a lock handle was left behind"


def test_an_unwritable_central_is_an_error_not_a_held_lock(sandbox):
    """A read-only central repository (a read-only bind mount) exits 1 with the reason."""
    central = str(sandbox.central)
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip("mount namespaces are not available here")
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$1" "$1" && shift && exec "$@"',
         "sh", central, sys.executable, "-m", "releaser", "-c", str(sandbox.config_path),
         "promote", "staging"], capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert "Read-only file system" in done.stderr and "locked" not in done.stderr
    assert done.stderr.count("releaser: error:") == 1 and "Traceback" not in done.stderr
