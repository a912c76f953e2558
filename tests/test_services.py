"""OpenRC service control through the sandbox's rc-service stand-in, with the real notes app.

Every test that starts the app stops it in a finalizer, by pidfile and, as a
last resort, by the node's marker in /proc/PID/environ, so no notes process
outlives a failing test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from releaser.sandbox.distserver import pid_alive
from releaser.errors import NodeError, UsageError
from releaser.hosts.health import check_health
from releaser.hosts.runner import LocalRunner
from releaser.sandbox.rc import (MARKER, RC_SERVICE, SERVICES_FILE, Service, ServiceSpec,
                                 install_rc_service, load_services, stop)
from releaser.hosts.services import OpenRC, ServiceProcess, check_service_name

APP_PACKAGE = Path(__file__).resolve().parent.parent / "app" / "notes"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _kill_marked(root: Path) -> None:
    """SIGKILL every process carrying this node's marker (finalizer fallback)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(e.startswith(f"{MARKER}={root}:".encode()) for e in environ):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


class Node:
    """A fake node root with the stand-in installed; ``install()`` copies the app in."""

    def __init__(self, root: Path, port: int):
        self.root = root
        self.port = port
        self.spec = ServiceSpec.for_app("notes", port)
        self.url = f"http://127.0.0.1:{port}/health"
        # NOTES_VERSION in the caller's environment must not reach the service.
        self.runner = LocalRunner(env={"ROOT": str(root),
                                       "PATH": f"{root}/.releaser/bin:" + os.environ["PATH"],
                                       "NOTES_VERSION": "9.9.9"})

    def install(self, version: str = "1.2.3") -> None:
        shutil.copytree(APP_PACKAGE, self.root / "usr/lib/notes/notes",
                        ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        self.set_version(version)

    def set_version(self, version: str) -> None:
        (self.root / "usr/lib/notes/VERSION").write_text(version + "\n")

    def rc(self, *args: str):
        return self.runner.run(["rc-service", *args], check=False, timeout=60)

    @property
    def service(self) -> Service:
        return Service(self.root, "notes", self.spec)

    def cleanup(self) -> None:
        stop(self.service, lambda line, is_error: None)
        _kill_marked(self.root)


@pytest.fixture
def node(tmp_path: Path):
    node = Node(tmp_path / "NODE", _free_port())
    node.root.mkdir()
    install_rc_service(node.root, {"notes": node.spec})
    yield node
    node.cleanup()


@pytest.fixture
def installed(node: Node) -> Node:
    node.install("1.2.3")
    return node


# --------------------------------------------------------------------------
# Service names and the OpenRC argv
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["notes", "net.eth0", "postgresql-16", "getty@tty1", "a_b"])
def test_valid_service_names(name):
    assert check_service_name(name) == name


@pytest.mark.parametrize("name", ["", "-rf", ".hidden", "..", "a/b", "notes; rm -rf /", "a b",
                                  "$(id)", "`id`", "a|b", "a&b", "x\n", "notes'", "a>b"])
def test_invalid_service_names_are_usage_errors(name):
    with pytest.raises(UsageError):
        check_service_name(name)


def test_openrc_validates_before_running_anything(node: Node):
    with pytest.raises(UsageError):
        OpenRC().restart(node.runner, "notes; touch /tmp/pwned")


def test_openrc_command_prefix_for_non_root_hosts(installed: Node):
    # A real host may need ("sudo", "-n", "rc-service"); any prefix is an argv prefix.
    manager = OpenRC(command=("env", "rc-service"))
    manager.start(installed.runner, "notes")
    assert manager.status(installed.runner, "notes") is True


# --------------------------------------------------------------------------
# The stand-in and OpenRC together
# --------------------------------------------------------------------------


def test_install_writes_services_json_and_script(node: Node):
    script = node.root / RC_SERVICE
    assert os.access(script, os.X_OK)
    assert script.read_text().startswith(f"#!{sys.executable}\n")
    assert load_services(node.root) == {"notes": node.spec}
    data = json.loads((node.root / SERVICES_FILE).read_text())
    assert data == {"notes": {"module": "notes", "app_dir": "usr/lib/notes",
                              "config": "etc/notes/notes.toml", "database": "var/lib/notes/notes.db",
                              "host": "127.0.0.1", "port": node.port, "log": "var/log/notes/notes.log",
                              "database_url": "", "password_file": ""}}


def test_start_health_restart_stop(installed: Node):
    node = installed
    manager = OpenRC()
    started = node.rc("notes", "start")
    assert started.returncode == 0, started.stderr
    assert " * Starting notes ..." in started.stdout

    health = check_health(node.url, expect_version="1.2.3", timeout=15)
    assert health.ok, health.detail
    assert health.schema == "current"
    assert (node.root / "var/lib/notes/notes.db").is_file()
    assert node.rc("notes", "status").returncode == 0
    assert manager.status(node.runner, "notes") is True
    first_pid = node.service.recorded_pid()

    again = node.rc("notes", "start")
    assert again.returncode == 0 and "already been started" in again.stderr

    node.set_version("1.2.4")
    manager.restart(node.runner, "notes")
    health = check_health(node.url, expect_version="1.2.4", timeout=15)
    assert health.ok, health.detail
    assert node.service.recorded_pid() != first_pid
    assert not pid_alive(first_pid)

    manager.stop(node.runner, "notes")
    assert node.rc("notes", "status").returncode == 3
    assert manager.status(node.runner, "notes") is False
    assert not (node.root / "run/notes.pid").exists()
    down = check_health(node.url, expect_version="1.2.4", timeout=0.5, interval=0.1)
    assert not down.ok
    assert "connection refused" in down.detail

    second = node.rc("notes", "stop")
    assert second.returncode == 0 and "already stopped" in second.stderr
    log = (node.root / "var/log/notes/notes.log").read_text()
    assert "notes 1.2.3 serving" in log and "notes 1.2.4 serving" in log


def test_health_times_out_on_the_wrong_version(installed: Node):
    OpenRC().start(installed.runner, "notes")
    result = check_health(installed.url, expect_version="2.0.0", timeout=1.0, interval=0.2)
    assert not result.ok and result.version == "1.2.3"
    assert result.detail == f"{installed.url} answered version 1.2.3, expected 2.0.0"


def test_start_when_not_installed_fails_clearly(node: Node):
    result = node.rc("notes", "start")
    assert result.returncode == 1
    assert "notes is not installed" in result.stderr
    with pytest.raises(NodeError, match="notes is not installed"):
        OpenRC().restart(node.runner, "notes")
    assert node.rc("notes", "status").returncode == 3


def test_failed_migration_keeps_the_service_stopped(installed: Node):
    (installed.root / "var/lib/notes/notes.db").mkdir(parents=True)  # not a database file
    result = installed.rc("notes", "start")
    assert result.returncode == 1
    assert "migrate failed" in result.stderr
    assert installed.rc("notes", "status").returncode == 3


def test_port_taken_by_another_program(installed: Node):
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", installed.port))
        squatter.listen(5)
        result = installed.rc("notes", "start")
    assert result.returncode == 1
    assert "already in use" in result.stderr


def test_crashed_service_reports_32_and_starts_again(installed: Node):
    OpenRC().start(installed.runner, "notes")
    pid = installed.service.recorded_pid()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    status = installed.rc("notes", "status")
    assert status.returncode == 32 and "crashed" in status.stdout
    assert OpenRC().status(installed.runner, "notes") is False
    OpenRC().restart(installed.runner, "notes")
    assert check_health(installed.url, expect_version="1.2.3", timeout=15).ok


def test_stale_pidfile_of_an_unrelated_process_is_not_killed(installed: Node):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (installed.root / "run").mkdir(exist_ok=True)
        (installed.root / "run/notes.pid").write_text(f"{sleeper.pid}\n")
        assert installed.rc("notes", "stop").returncode == 0
        assert sleeper.poll() is None
        (installed.root / "run/notes.pid").write_text(f"{sleeper.pid}\n")
        restarted = installed.rc("notes", "restart")
        assert restarted.returncode == 0, restarted.stderr
        assert sleeper.poll() is None
        assert check_health(installed.url, expect_version="1.2.3", timeout=15).ok
    finally:
        sleeper.kill()
        sleeper.wait()


def test_node_root_from_the_script_location_without_root(installed: Node):
    runner = LocalRunner(env={"ROOT": ""})
    result = runner.run([str(installed.root / RC_SERVICE), "notes", "status"], check=False, timeout=60)
    assert result.returncode == 3, result.stderr


def test_unknown_service_and_bad_usage(node: Node):
    unknown = node.rc("nosuch", "start")
    assert unknown.returncode == 1 and "does not exist" in unknown.stderr
    with pytest.raises(NodeError, match="does not exist"):
        OpenRC().status(node.runner, "nosuch")
    assert node.rc("notes").returncode != 0
    assert node.rc("notes", "frobnicate").returncode != 0
    assert node.rc("-l").stdout.split() == ["notes"]


@pytest.mark.parametrize("bad", [{"app_dir": "/usr/lib/notes"}, {"log": "../escape.log"},
                                 {"port": 0}, {"module": "no-tes"}])
def test_service_spec_validation(tmp_path: Path, bad):
    spec = {**ServiceSpec.for_app("notes", 9101).__dict__, **bad}
    with pytest.raises(UsageError):
        install_rc_service(tmp_path, {"notes": spec})


def test_service_name_validated_on_install(tmp_path: Path):
    with pytest.raises(UsageError):
        install_rc_service(tmp_path, {"no tes": ServiceSpec.for_app("notes", 9101)})


def test_concurrent_restarts_leave_exactly_one_server(installed: Node):
    procs = [subprocess.Popen(["rc-service", "notes", "restart"], env={**os.environ, **installed.runner.env},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    codes = [p.wait(timeout=120) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert codes == [0, 0, 0]
    assert check_health(installed.url, expect_version="1.2.3", timeout=15).ok
    servers = [d for d in Path("/proc").iterdir() if d.name.isdigit()
               and f"{MARKER}={installed.root}:notes".encode() in _environ(d)]
    assert [int(d.name) for d in servers] == [installed.service.recorded_pid()]


def _environ(proc_dir: Path) -> list[bytes]:
    try:
        return (proc_dir / "environ").read_bytes().split(b"\0")
    except OSError:
        return []


# --------------------------------------------------------------------------
# The service's process, as the init system reports it
# --------------------------------------------------------------------------


def _start_ticks(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])


def test_process_is_the_pidfile_and_its_start_time(installed: Node):
    """What OpenRC.process reads from the stand-in is what a host's OpenRC keeps:
    ``rc-service notes status`` and the pidfile (/run/notes.pid under the root)."""
    manager = OpenRC()
    assert manager.process(installed.runner, "notes", str(installed.root)) is None
    manager.start(installed.runner, "notes")
    process = manager.process(installed.runner, "notes", str(installed.root))
    pid = int((installed.root / "run/notes.pid").read_text())
    assert process == ServiceProcess(pid, _start_ticks(pid))
    assert f"{MARKER}={installed.root}:notes".encode() in _environ(Path(f"/proc/{pid}"))


def test_restart_process_returns_the_new_process(installed: Node):
    manager = OpenRC()
    manager.start(installed.runner, "notes")
    old = manager.process(installed.runner, "notes", str(installed.root))
    new = manager.restart_process(installed.runner, "notes", str(installed.root))
    assert new != old and not pid_alive(old.pid)
    assert new == manager.process(installed.runner, "notes", str(installed.root))


def test_a_restart_that_replaced_nothing_is_an_error(installed: Node, tmp_path: Path):
    """An init script whose restart exits 0 and leaves the old process serving."""
    OpenRC().start(installed.runner, "notes")
    lazy = tmp_path / "lazy-rc-service"
    lazy.write_text('#!/bin/sh\n[ "$2" = restart ] && exit 0\nexec rc-service "$@"\n')
    lazy.chmod(0o755)
    manager = OpenRC(command=(str(lazy),))
    running = manager.process(installed.runner, "notes", str(installed.root))
    with pytest.raises(NodeError, match="the same process still runs .*was not restarted"):
        manager.restart_process(installed.runner, "notes", str(installed.root))
    assert manager.process(installed.runner, "notes", str(installed.root)) == running


def test_a_restart_after_which_nothing_runs_is_an_error(installed: Node, tmp_path: Path):
    OpenRC().start(installed.runner, "notes")
    stops = tmp_path / "stopping-rc-service"
    stops.write_text('#!/bin/sh\n[ "$2" = restart ] && exec rc-service "$1" stop\n'
                     'exec rc-service "$@"\n')
    stops.chmod(0o755)
    with pytest.raises(NodeError, match="restart exited 0 but notes is not running"):
        OpenRC(command=(str(stops),)).restart_process(installed.runner, "notes",
                                                      str(installed.root))


def test_a_crashed_service_has_no_process(installed: Node):
    manager = OpenRC()
    manager.start(installed.runner, "notes")
    pid = manager.process(installed.runner, "notes", str(installed.root)).pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert manager.process(installed.runner, "notes", str(installed.root)) is None


# --------------------------------------------------------------------------
# What releaser reads on a host: rc-service's status, the pidfile, the log
# --------------------------------------------------------------------------


class _HostRunner:
    """A host's runner at the seam: answers each argv from ``answers`` (first word match)."""

    host = "web1"

    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def run(self, argv, *, check=True, env=None, input=None, timeout=None):
        from releaser.hosts.runner import CommandResult

        self.calls.append(list(argv))
        code, out, err = self.answers[(argv[0], argv[-1])]
        return CommandResult(tuple(argv), code, out, err)


def test_on_a_host_the_init_scripts_own_paths_are_read_at_the_real_root():
    log = "serving\n--- start\nnotes: cannot open /var/lib/notes/notes.db: permission denied\n\n"
    runner = _HostRunner({
        ("rc-service", "status"): (0, " * status: started\n", ""),
        # the pidfile's pid, then its /proc/PID/stat, in one command (PROCESS_SCRIPT)
        ("sh", "/run/notes.pid"): (0, "4242\n4242 (python3) S " + "1 " * 18 + "777 0\n", ""),
        # as OpenRC prints a failed start_pre: the reason, its eend, then the generic error
        ("rc-service", "restart"): (1, " * Migrating the notes database ...\n",
                                    "Traceback (most recent call last):\n"
                                    "notes: error: duplicate column name: extra2\n"
                                    " * notes migrate failed; the service was not started\n"
                                    " * ERROR: notes failed to start\n"),
        ("tail", "/var/log/notes/notes.log"): (0, log, ""),
    })
    assert OpenRC().process(runner, "notes") == ServiceProcess(4242, 777)
    with pytest.raises(NodeError) as failed:
        OpenRC().restart(runner, "notes")
    assert str(failed.value) == (
        "web1: rc-service notes restart failed (exit 1): notes: error: duplicate column name: "
        "extra2 | * notes migrate failed; the service was not started | * ERROR: notes failed "
        "to start; "
        "/var/log/notes/notes.log ends: serving | --- start | notes: cannot open "
        "/var/lib/notes/notes.db: permission denied")
    assert ["tail", "-n", "12", "--", "/var/log/notes/notes.log"] in runner.calls


def test_a_failed_start_quotes_the_apps_log(installed: Node):
    (installed.root / "var/lib/notes/notes.db").mkdir(parents=True)  # not a database file
    with pytest.raises(NodeError) as failed:
        OpenRC().restart(installed.runner, "notes", str(installed.root))
    message = str(failed.value)
    assert "migrate failed" in message and "/var/log/notes/notes.log ends: " in message
    tail = OpenRC().log_tail(installed.runner, "notes", str(installed.root))
    assert tail and message.endswith(" | ".join(tail)) and "\n" not in message


def _ids(pid: int, key: str) -> list[str]:
    line = next(l for l in Path(f"/proc/{pid}/status").read_text().splitlines()
                if l.startswith(f"{key}:"))
    return line.split()[1:]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can become the app's user")
def test_the_app_runs_as_the_nodes_own_user(installed: Node):
    """As the init script's command_user: the node's ``notes`` (its etc/passwd, as
    bootstrap makes it), and what the app writes is that user's."""
    uid = gid = 4242
    (installed.root / "etc").mkdir(exist_ok=True)
    (installed.root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        f"notes:x:{uid}:{gid}:notes service (releaser):/var/lib/notes:/sbin/nologin\n")
    OpenRC().start(installed.runner, "notes", str(installed.root))
    process = OpenRC().process(installed.runner, "notes", str(installed.root))
    assert _ids(process.pid, "Uid") == [str(uid)] * 4 and _ids(process.pid, "Gid") == [str(gid)] * 4
    assert _ids(process.pid, "Groups") == []
    assert check_health(installed.url, expect_version="1.2.3", timeout=15).ok
    for path, mode in (("var/lib/notes", 0o750), ("var/log/notes", 0o750),
                       ("var/lib/notes/notes.db", None), ("var/log/notes/notes.log", 0o640)):
        st = (installed.root / path).stat()
        assert (st.st_uid, st.st_gid) == (uid, gid), path
        assert mode is None or st.st_mode & 0o777 == mode, path
    from releaser.sandbox.rc import closed_folder

    log = (installed.root / "var/log/notes/notes.log").read_text()
    # pytest's base folder is 0700: the app may search it, and write no more than its user
    caps = " with CAP_DAC_READ_SEARCH" if closed_folder(installed.root, uid, gid) else ""
    assert f"migrate as notes (uid {uid}, gid {gid}){caps}" in log
    # no other capability: CAP_DAC_READ_SEARCH (bit 2) at most
    assert int(_ids(process.pid, "CapEff")[0], 16) == (1 << 2 if caps else 0)
    # the pidfile is the init system's, as start-stop-daemon writes it
    assert (installed.root / "run/notes.pid").stat().st_uid == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can become the app's user")
def test_without_the_user_the_app_runs_as_the_caller(installed: Node):
    OpenRC().start(installed.runner, "notes", str(installed.root))
    process = OpenRC().process(installed.runner, "notes", str(installed.root))
    assert _ids(process.pid, "Uid") == ["0"] * 4


def test_closed_folder_finds_where_the_user_cannot_search():
    """pytest's tmp_path lies under a 0700 folder: a folder of /tmp of our own instead."""
    import tempfile

    from releaser.sandbox.rc import closed_folder

    base = Path(tempfile.mkdtemp(prefix="releaser-rc-", dir="/tmp"))
    try:
        node = base / "node"
        node.mkdir()
        base.chmod(0o755)
        other = (os.geteuid() + 1000, os.getegid() + 1000)
        assert closed_folder(node, *other) is None
        base.chmod(0o750)
        assert closed_folder(node, *other) == base
        assert closed_folder(node, other[0], os.getegid()) is None  # its group may
        base.chmod(0o705)
        assert closed_folder(node, other[0], os.getegid()) == base  # group bits, not other's
    finally:
        shutil.rmtree(base)


def test_the_init_script_keeps_what_releaser_reads():
    """app/openrc/notes.initd, sourced as openrc-run sources it: its pidfile, output_log
    and command_user are the app contract's, which releaser reads on a host."""
    from releaser.appcontract import AppContract
    from releaser.hosts.host_probe import Account

    initd = Path(__file__).resolve().parent.parent / "app/openrc/notes.initd"
    shown = subprocess.run(
        ["sh", "-c", '. "$1" && printf "%s\\n" "$pidfile" "$output_log" "$error_log" '
                     '"$command_user" "$command"', "sh", str(initd)],
        env={"PATH": os.defpath}, capture_output=True, text=True, check=True)
    contract = AppContract("notes")
    account = Account.of(contract)
    assert shown.stdout.splitlines() == [contract.pidfile, contract.service_log,
                                         contract.service_log,
                                         f"{account.user}:{account.group}", "/usr/bin/notes"]


# The default runlevel through the stand-in (the real rc-update's answers: test_service_runlevel.py)

def test_the_stand_in_keeps_the_runlevel_where_openrc_reads_it(node: Node):
    link = node.root / "etc/runlevels/default/notes"
    assert OpenRC().enabled(node.runner, "notes") is False
    assert OpenRC().enable(node.runner, "notes") is True
    assert link.is_symlink() and os.readlink(link) == "/etc/init.d/notes"
    assert OpenRC().enable(node.runner, "notes") is False
    shown = node.runner.run(["rc-update", "show"], check=False)
    assert shown.ok and [line.split() for line in shown.stdout.splitlines()] == \
        [["notes", "|", "default"]]
    again = node.runner.run(["rc-update", "add", "notes", "default"], check=False)
    assert again.ok and "already installed in runlevel `default'; skipping" in again.stdout
    unknown = node.runner.run(["rc-update", "add", "nosuch"], check=False)
    assert unknown.returncode == 1 and "service `nosuch' does not exist" in unknown.stderr
    assert not (node.root / "etc/runlevels/default/nosuch").exists()
    assert node.runner.run(["rc-update", "del", "notes"], check=False).ok
    assert not link.is_symlink() and OpenRC().enabled(node.runner, "notes") is False
    assert node.runner.run(["rc-update", "del", "notes"], check=False).returncode == 1


def test_a_restart_given_the_process_read_before_asks_no_status_first(installed: Node):
    """The rollout read the process before its install: the restart spares that question,
    and still refuses a restart that left that very process serving."""
    manager = OpenRC()
    manager.start(installed.runner, "notes")
    old = manager.process(installed.runner, "notes", str(installed.root))
    asked = []
    original = installed.runner.run

    def run(argv, **kwargs):
        asked.append(list(argv))
        return original(argv, **kwargs)

    installed.runner.run = run
    new = manager.restart_process(installed.runner, "notes", str(installed.root), before=old)
    assert asked[0] == ["rc-service", "notes", "restart"]
    assert new != old and not pid_alive(old.pid)
    with pytest.raises(NodeError, match="the same process still runs .*was not restarted"):
        OpenRC(command=("true",)).restart_process(installed.runner, "notes",
                                                  str(installed.root), before=new)


def test_still_runs_is_one_read_of_the_process_and_knows_a_reused_pid(installed: Node):
    manager = OpenRC()
    manager.start(installed.runner, "notes")
    process = manager.process(installed.runner, "notes", str(installed.root))
    assert manager.still_runs(installed.runner, process)
    assert not manager.still_runs(installed.runner,
                                  ServiceProcess(process.pid, process.started + 1))
    manager.stop(installed.runner, "notes")
    assert not manager.still_runs(installed.runner, process)


def test_the_pidfile_and_its_process_are_one_command_and_a_bad_pidfile_is_said(
        installed: Node):
    manager = OpenRC()
    manager.start(installed.runner, "notes")
    running = manager.process(installed.runner, "notes", str(installed.root))
    pidfile = installed.root / "run/notes.pid"
    assert manager._pidfile_process(installed.runner, "notes", str(installed.root)) == running
    pidfile.write_text("*\n")  # no glob, no pid
    with pytest.raises(NodeError, match=r"pidfile .*notes\.pid holds no pid: \*"):
        manager._pidfile_process(installed.runner, "notes", str(installed.root))
    pidfile.write_text(f"{running.pid}\n")
