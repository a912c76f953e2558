"""The environment lock: one run at a time, and no lock stranded by a dead run."""

import getpass
import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from releaser.central.repository import CentralRepository
from releaser.errors import CommandError, LockHeld
from releaser.central.ledger import Ledger
from releaser.central.lock import EnvironmentLock
from releaser.hosts.runner import LocalRunner


@pytest.fixture
def central(tmp_path):
    repo = CentralRepository(LocalRunner(), str(tmp_path / "central"))
    repo.init_dirs()
    return repo


def lock_file(central):
    return central.path("locks", "staging.lock")


def leftovers(central) -> list[str]:
    return sorted(os.listdir(central.path("locks")))


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def hold_and_die(central) -> int:
    """Take the lock in another process that exits holding it; return its pid."""
    code = ("import os; from releaser.central.repository import CentralRepository; "
            "from releaser.central.lock import EnvironmentLock; from releaser.hosts.runner import LocalRunner; "
            f"EnvironmentLock(CentralRepository(LocalRunner(), {central.root!r}), 'staging', "
            "'promote staging 0.9').acquire(); print(os.getpid())")
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True)
    return int(done.stdout)


def test_a_held_lock_refuses_a_second_run_and_says_who_holds_it(central):
    with EnvironmentLock(central, "staging", "promote staging 1.0.0"):
        with pytest.raises(LockHeld) as err:
            EnvironmentLock(central, "staging", "rollback staging").acquire()
        message = str(err.value)
        assert f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()}" in message
        assert "(promote staging 1.0.0) for " in message and "s, since " in message
        assert "staging.lock" in message
    # released, with nothing left behind: the next run takes it
    assert leftovers(central) == []
    with EnvironmentLock(central, "staging", "again"):
        pass


def test_the_lock_never_exists_without_its_owner_record(central):
    with EnvironmentLock(central, "staging", "promote staging 1.0.0") as lock:
        owner = json.loads(open(lock_file(central)).read())
        assert owner["pid"] == os.getpid() and owner["command"] == "promote staging 1.0.0"
        assert owner["token"] and lock.taken_over is None


def test_a_lock_left_by_a_dead_process_is_taken_over_and_recorded(central):
    dead = hold_and_die(central)
    lock = EnvironmentLock(central, "staging", "promote staging 1.0").acquire()
    assert lock.taken_over["pid"] == dead and lock.taken_over["command"] == "promote staging 0.9"
    events = [e for e in Ledger.load(central, "staging").data["events"]
              if e["kind"] == "lock-taken-over"]
    assert len(events) == 1 and events[0]["stale"]["pid"] == dead
    assert events[0]["command"] == "promote staging 1.0"
    lock.release()
    assert leftovers(central) == []


def test_racing_takeovers_of_a_dead_run_s_lock_let_exactly_one_through(central):
    hold_and_die(central)
    won, held, start = [], [], threading.Barrier(8, timeout=60)

    def contend():
        lock = EnvironmentLock(central, "staging", "promote")
        start.wait()
        try:
            won.append(lock.acquire())
        except LockHeld as exc:
            held.append(str(exc))

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(held) == 7, held
    events = [e for e in Ledger.load(central, "staging").data["events"]
              if e["kind"] == "lock-taken-over"]
    assert len(events) == 1
    won[0].release()
    assert leftovers(central) == []


def test_release_leaves_another_run_s_lock_in_place(central):
    first = EnvironmentLock(central, "staging", "promote staging 1.0").acquire()
    os.unlink(lock_file(central))  # an operator removed it by hand...
    second = EnvironmentLock(central, "staging", "promote staging 2.0").acquire()  # ...and
    first.release()
    owner = json.loads(open(lock_file(central)).read())
    assert owner["command"] == "promote staging 2.0"
    with pytest.raises(LockHeld, match=r"\(promote staging 2.0\)"):
        EnvironmentLock(central, "staging", "third").acquire()
    second.release()
    assert leftovers(central) == []


@pytest.mark.parametrize("make", ["empty directory", "directory, dead owner", "garbage file"])
def test_a_lock_without_a_usable_owner_record_is_held_and_never_removed(central, make):
    path = lock_file(central)
    if make == "garbage file":
        open(path, "w").write("not json")
    else:
        os.mkdir(path)
        if make == "directory, dead owner":  # an older releaser's lock, its run gone
            open(os.path.join(path, "owner.json"), "w").write(json.dumps(
                {"user": "ops", "host": socket.gethostname(), "pid": dead_pid(),
                 "since": "2026-01-01T00:00:00+00:00", "command": "promote staging"}))
    before = leftovers(central)
    with pytest.raises(LockHeld, match=r"rm -r .*staging\.lock"):
        EnvironmentLock(central, "staging", "promote").acquire()
    assert os.path.lexists(path) and leftovers(central) == before


def test_a_lock_from_another_machine_is_never_taken_over(central):
    central.write_json(lock_file(central),
                       {"user": "ops", "host": "elsewhere", "pid": 1, "token": "ab12",
                        "since": "2026-01-01T00:00:00+00:00", "command": "promote staging"})
    with pytest.raises(LockHeld, match="ops@elsewhere pid 1 \\(promote staging\\) for "):
        EnvironmentLock(central, "staging", "promote").acquire()
    assert json.loads(open(lock_file(central)).read())["host"] == "elsewhere"


def test_an_unusable_locks_directory_is_an_error_not_a_held_lock(central):
    os.rmdir(central.path("locks"))
    open(central.path("locks"), "w").close()  # a file where the directory should be
    with pytest.raises(CommandError, match="locks"):
        EnvironmentLock(central, "staging", "promote").acquire()
