"""The environment lock: one run at a time, and no lock stranded by a dead run."""

import os
import subprocess
import sys

import pytest

from releaser.central import CentralRepository
from releaser.errors import LockHeld
from releaser.lock import EnvironmentLock
from releaser.runner import LocalRunner


@pytest.fixture
def central(tmp_path):
    repo = CentralRepository(LocalRunner(), str(tmp_path / "central"))
    repo.init_dirs()
    return repo


def test_a_held_lock_refuses_a_second_run_and_says_who_holds_it(central):
    with EnvironmentLock(central, "staging", "promote staging 1.0.0"):
        with pytest.raises(LockHeld) as err:
            EnvironmentLock(central, "staging", "rollback staging").acquire()
        message = str(err.value)
        assert f"pid {os.getpid()}" in message and "promote staging 1.0.0" in message
        assert "staging.lock" in message
        assert LockHeld.exit_code == 5
    # released: the next run takes it
    with EnvironmentLock(central, "staging", "again"):
        pass


def test_a_lock_left_by_a_dead_process_is_taken_over(central):
    code = ("import sys; from releaser.central import CentralRepository; "
            "from releaser.lock import EnvironmentLock; from releaser.runner import LocalRunner; "
            f"EnvironmentLock(CentralRepository(LocalRunner(), {central.root!r}), 'staging', "
            "'promote').acquire()")
    subprocess.run([sys.executable, "-c", code], check=True)  # exits holding the lock
    lock = EnvironmentLock(central, "staging", "promote").acquire()
    assert lock.taken_over and lock.taken_over["command"] == "promote"
    lock.release()


def test_a_lock_from_another_machine_is_never_taken_over(central):
    central.runner.run(["mkdir", "-p", central.path("locks", "staging.lock")])
    central.write_json(central.path("locks", "staging.lock", "owner.json"),
                       {"user": "ops", "host": "elsewhere", "pid": 1, "since": "x",
                        "command": "promote staging"})
    with pytest.raises(LockHeld, match="ops@elsewhere"):
        EnvironmentLock(central, "staging", "promote").acquire()
