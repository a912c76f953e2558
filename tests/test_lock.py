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
        assert "lease until " in message and "lock release staging --break REASON" in message
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
    events = Ledger.load(central, "staging").events("lock-taken-over")
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
    events = Ledger.load(central, "staging").events("lock-taken-over")
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


# --- the lease ------------------------------------------------------------------
def _ledger_events(central, kind):
    return Ledger.load(central, "staging").events(kind)


def _until(condition, seconds=20.0):
    """Poll ``condition`` until it holds (True) or ``seconds`` pass (False)."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_live_run_renews_its_lease_and_is_never_taken_over(central):
    import time

    with EnvironmentLock(central, "staging", "promote staging 1.0", lease=0.6) as held:
        first = json.loads(open(lock_file(central)).read())
        time.sleep(1.8)  # three leases: only the renewals keep it live
        renewed = json.loads(open(lock_file(central)).read())
        assert renewed["token"] == first["token"] and renewed["expires"] > first["expires"]
        with pytest.raises(LockHeld, match="lease until "):
            EnvironmentLock(central, "staging", "rollback staging").acquire()
        assert held.lost is None
    assert _ledger_events(central, "lock-taken-over") == [] and leftovers(central) == []


def test_a_run_killed_on_another_machine_is_taken_over_once_its_lease_expires(central):
    """The holder runs as host 'far-away' (another machine sharing central), renews its
    1 s lease while it lives, and is killed with SIGKILL: its pid means nothing here,
    only the lease's end frees the lock."""
    import signal

    code = ("import socket, sys, time; socket.gethostname = lambda: 'far-away'; "
            "from releaser.central.repository import CentralRepository; "
            "from releaser.central.lock import EnvironmentLock; "
            "from releaser.hosts.runner import LocalRunner; "
            f"EnvironmentLock(CentralRepository(LocalRunner(), {central.root!r}), 'staging', "
            "'promote staging 0.9', lease=1.0).acquire(); print('held', flush=True); "
            "time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        owner = json.loads(open(lock_file(central)).read())
        assert owner["host"] == "far-away" and owner["pid"] == holder.pid
        assert _until(lambda: json.loads(open(lock_file(central)).read())["expires"]
                      != owner["expires"])  # renewed: live
        with pytest.raises(LockHeld, match="far-away pid"):
            EnvironmentLock(central, "staging", "promote staging 1.0").acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()

    taken: list[EnvironmentLock] = []

    def take() -> bool:
        try:
            taken.append(EnvironmentLock(central, "staging", "promote staging 1.0").acquire())
        except LockHeld:
            return False
        return True

    assert _until(take)
    lock = taken[0]
    assert lock.taken_over["host"] == "far-away" and lock.taken_over["pid"] == holder.pid
    assert lock.taken_over["why"].startswith("lease expired at ")
    events = _ledger_events(central, "lock-taken-over")
    assert len(events) == 1 and events[0]["stale"]["host"] == "far-away"
    assert events[0]["why"].startswith("lease expired") and events[0]["host"] == socket.gethostname()
    lock.release()
    assert leftovers(central) == []


def test_a_lock_from_another_machine_with_a_valid_lease_is_never_taken_over(central):
    from datetime import datetime, timedelta, timezone

    expires = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    central.write_json(lock_file(central),
                       {"user": "ops", "host": "elsewhere", "pid": 1, "token": "ab12",
                        "since": "2026-01-01T00:00:00+00:00", "expires": expires,
                        "command": "promote staging"})
    with pytest.raises(LockHeld, match="ops@elsewhere"):
        EnvironmentLock(central, "staging", "promote").acquire()
    assert json.loads(open(lock_file(central)).read())["host"] == "elsewhere"


# --- the operator's commands ------------------------------------------------------
@pytest.fixture
def config_file(tmp_path, central):
    from tests.conftest import write_config

    path = write_config(tmp_path / "releaser.toml", tmp_path / "src",
                        extra='lock_lease = "2m"\n\n[environments.staging]\n')
    central.init()
    return path


def releaser(config_file, *args):
    from releaser.cli import main

    return main(["-c", str(config_file), *args])


def test_lock_lease_is_read_and_validated_at_load(config_file, tmp_path):
    from releaser.config import load_config
    from releaser.errors import ConfigError

    assert load_config(config_file).central.lock_lease == 120.0
    bad = config_file.read_text().replace('lock_lease = "2m"', 'lock_lease = "soon"')
    (tmp_path / "bad.toml").write_text(bad)
    with pytest.raises(ConfigError, match=r"central\.lock_lease: 'soon' is not a duration"):
        load_config(tmp_path / "bad.toml")


def test_a_maintenance_window_holds_off_runs_with_its_message_until_released(
        config_file, central, capsys):
    assert releaser(config_file, "lock", "acquire", "staging", "-m", "x", "--lease", "soon") == 2
    assert "--lease: 'soon' is not a duration" in capsys.readouterr().err
    assert releaser(config_file, "lock", "acquire", "staging", "-m", "db migration",
                    "--lease", "2h") == 0
    owner = json.loads(open(lock_file(central)).read())
    assert owner["pid"] is None and owner["message"] == "db migration" and owner["lease"] == 7200
    with pytest.raises(LockHeld, match=r"maintenance window.*'db migration'"):
        EnvironmentLock(central, "staging", "promote staging 1.0").acquire()
    capsys.readouterr()
    assert releaser(config_file, "lock", "status", "staging") == 0
    assert "'db migration'; lease until " in capsys.readouterr().out
    assert releaser(config_file, "lock", "status", "staging", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["message"] == "db migration" and shown["stale"] is None and "token" not in shown
    assert releaser(config_file, "lock", "release", "staging") == 0
    assert releaser(config_file, "lock", "status", "staging") == 0
    assert "staging: not locked" in capsys.readouterr().out
    assert leftovers(central) == [] and _ledger_events(central, "lock-released")


def test_a_foreign_lock_is_released_only_with_break_and_a_reason(config_file, central,
                                                                  capsys):
    code = ("import socket, time; socket.gethostname = lambda: 'far-away'; "
            "from releaser.central.repository import CentralRepository; "
            "from releaser.central.lock import EnvironmentLock; "
            "from releaser.hosts.runner import LocalRunner; "
            f"EnvironmentLock(CentralRepository(LocalRunner(), {central.root!r}), 'staging', "
            "'lock acquire staging', message='kernel upgrade', maintenance=True, "
            "lease=3600).acquire()")
    subprocess.run([sys.executable, "-c", code], check=True)
    before = open(lock_file(central)).read()
    assert releaser(config_file, "lock", "release", "staging") == 5
    assert "not your maintenance window" in capsys.readouterr().err
    assert releaser(config_file, "lock", "release", "staging", "--break", "") == 2
    assert releaser(config_file, "lock", "release", "staging", "--break", "  ") == 2
    assert "--break needs a reason" in capsys.readouterr().err
    assert open(lock_file(central)).read() == before  # refused: nothing changed
    assert releaser(config_file, "lock", "release", "staging", "--break",
                    "the upgrade finished, its owner is off shift") == 0
    assert leftovers(central) == []
    events = _ledger_events(central, "lock-broken")
    assert len(events) == 1 and events[0]["reason"].startswith("the upgrade finished")
    assert events[0]["owner"]["host"] == "far-away" and "token" not in events[0]["owner"]


def test_a_token_file_releases_the_window_from_another_account(config_file, central,
                                                               tmp_path, monkeypatch):
    token_file = tmp_path / "window.token"
    assert releaser(config_file, "lock", "acquire", "staging", "-m", "backup test",
                    "--token-file", str(token_file)) == 0
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    monkeypatch.setattr(getpass, "getuser", lambda: "someone-else")
    assert releaser(config_file, "lock", "release", "staging") == 5
    assert releaser(config_file, "lock", "release", "staging",
                    "--token-file", str(token_file)) == 0
    assert leftovers(central) == []


def test_a_run_whose_lock_is_broken_stops_renewing_and_knows_it(central):
    from releaser.central.lock import break_lock

    held = EnvironmentLock(central, "staging", "promote staging 1.0", lease=0.6).acquire()
    break_lock(central, "staging", "stuck run, checked by hand")
    assert _until(lambda: held.lost is not None)
    assert "no longer this run's" in held.lost
    assert not os.path.lexists(lock_file(central))  # the renewal did not bring it back
    held.release()
    assert leftovers(central) == []
    assert _ledger_events(central, "lock-broken")[0]["owner"]["command"] == "promote staging 1.0"
