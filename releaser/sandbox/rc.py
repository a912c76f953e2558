"""The sandbox's stand-in for OpenRC's ``rc-service``.

A sandbox node is a directory, not a Gentoo host: it has no OpenRC to run
``/etc/init.d/notes``.  The rollout must still restart the app exactly as on a
real host, through ``releaser.hosts.services.OpenRC`` running ``rc-service notes
restart``.  So every sandbox node gets an executable ``rc-service`` in
``NODE/.releaser/bin`` (first on PATH through ``noderoot.portage_env``) that
does what the init script does, rooted in NODE:

* ``start``: refuse if the app is not installed; run the ``start_pre``
  migration (``python -m notes migrate``) and fail if it fails; start
  ``python -m notes serve`` detached (own session, output appended to the
  service log, pid in ``NODE/run/NAME.pid``); wait until it accepts
  connections, or report the log's last line if it died.
* ``stop``: SIGTERM, wait, SIGKILL, by pidfile, and only a pid that is
  provably this node's service (see ``_is_ours``).
* ``restart``: stop, then start.  ``status``: exit 0 started, 3 stopped,
  32 crashed (pidfile left behind by a dead process), as OpenRC.

These are the facts the rollout asks a real host's OpenRC for, and they must
be the same here: ``rc-service NAME status`` and the pidfile the init script
names (``/run/NAME.pid``; ``NODE/run/NAME.pid`` here) holding the pid of the
process that serves, whose start time ``/proc`` gives.  The rollout counts a
restart only when that (pid, start time) changed (``OpenRC.restart_process``),
and a health answer only while it still runs.

The app runs as its own user, as the init script's ``command_user`` runs it,
when the node has that user (``releaser host bootstrap`` creates it in
NODE/etc/passwd) and the stand-in runs as root: ``migrate`` and ``serve`` run
under ``setpriv`` with that uid and gid and no other group, and, as the init
script's ``checkpath`` does, the database and log folders are made the user's
(mode 0750), and so is the log.  The node's uid is a number the kernel of
this machine enforces like any other: the app can write only what that uid
may.  A node directory is reached through folders of this machine (pytest's
``/tmp/pytest-of-root`` is 0700) that a host's own user would never have to
cross: only when one of them is closed to the uid does the app keep
``CAP_DAC_READ_SEARCH`` (read and search anywhere, write nothing more),
and the log says so.  Without the user, or when not root, the app runs as the
caller.

The installed app runs from NODE/usr/lib/notes with a clean environment, like
a service started by OpenRC: ``PYTHONPATH``, ``NOTES_CONFIG`` (if the file
exists), ``NOTES_DATABASE``, ``NOTES_HOST``, ``NOTES_PORT`` and little else.
``NOTES_VERSION`` in particular is never passed: the app must report the
version the ebuild wrote to NODE/usr/lib/notes/VERSION, which is what the
health gate checks.  The variable prefix is the module name in upper case.

``NODE/.releaser/services.json`` (written by ``install_rc_service``) maps a
service name to its settings; paths are relative to NODE::

    {
      "notes": {
        "module": "notes",
        "app_dir": "usr/lib/notes",
        "config": "etc/notes/notes.toml",
        "database": "var/lib/notes/notes.db",
        "host": "127.0.0.1",
        "port": 9101,
        "log": "var/log/notes/notes.log"
      }
    }
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Mapping, Sequence

from releaser.sandbox import rc_update
from releaser.sandbox.distserver import pid_alive, process_cmdline, terminate_pid
from releaser.errors import UsageError, last_line
from releaser.files import write_atomic
from releaser.hosts.local_root import HELPER_BIN
from releaser.hosts.services import check_service_name

#: Inside a node root: the services the stand-in knows.
SERVICES_FILE = Path(".releaser/services.json")
#: Inside a node root: the stand-in itself, and its ``rc-update``.
RC_SERVICE = HELPER_BIN / "rc-service"
RC_UPDATE = HELPER_BIN / "rc-update"
#: Inside a node root: where pidfiles go (``run/NAME.pid``), as /run on a host.
RUN_DIR = Path("run")
#: Set in every service process's environment as ``<node root>:<service>``;
#: ``stop`` requires it (read from /proc/PID/environ) before signalling a pid,
#: so another node's notes, or an unrelated process that reused the pid, is
#: never killed.
MARKER = "RELEASER_SANDBOX_SERVICE"
#: Variables a service inherits from the caller; everything else is dropped,
#: as OpenRC starts services with a clean environment.
INHERITED = ("PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR")
#: The mode the init script's ``checkpath`` gives the app's data and log folders.
APP_DIR_MODE = 0o750
#: The log's mode when the stand-in creates it.
LOG_MODE = 0o640
#: How long ``start`` waits for the port, and ``stop`` for SIGTERM to work
#: (the init script's retry="TERM/30/KILL/5").
START_TIMEOUT = 15.0
STOP_TIMEOUT = 30.0
KILL_TIMEOUT = 5.0
MIGRATE_TIMEOUT = 300.0


@dataclass(frozen=True)
class ServiceSpec:
    """One service of a sandbox node (one ``services.json`` entry); paths relative to the root."""

    module: str
    app_dir: str
    config: str
    database: str
    host: str
    port: int
    log: str
    #: A server database (``sandbox init --db``): its URL replaces ``database`` in the
    #: app's environment, its password is read from ``password_file`` (absolute, 0600)
    #: at each start, never written into services.json.
    database_url: str = ""
    password_file: str = ""

    def __post_init__(self) -> None:
        if not self.module or not all(p.isidentifier() for p in self.module.split(".")):
            raise UsageError(f"invalid Python module name {self.module!r}")
        for name in ("app_dir", "config", "database", "log"):
            value = getattr(self, name)
            path = Path(value)
            if not value or path.is_absolute() or ".." in path.parts:
                raise UsageError(f"{name} must be a path relative to the node root, got {value!r}")
        if not isinstance(self.port, int) or isinstance(self.port, bool) or not 0 < self.port < 65536:
            raise UsageError(f"invalid port {self.port!r}")
        if not self.host or any(c.isspace() for c in self.host):
            raise UsageError(f"invalid host {self.host!r}")

    @classmethod
    def for_app(cls, name: str, port: int, host: str = "127.0.0.1") -> "ServiceSpec":
        """The layout the ebuild installs for app ``name`` (module ``name``), as on a host."""
        return cls(module=name, app_dir=f"usr/lib/{name}", config=f"etc/{name}/{name}.toml",
                   database=f"var/lib/{name}/{name}.db", host=host, port=port,
                   log=f"var/log/{name}/{name}.log")

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> "ServiceSpec":
        known = {f.name for f in fields(cls)}
        missing = {f.name for f in fields(cls) if f.default is MISSING} - set(data)
        if missing:
            raise UsageError(f"service settings lack {sorted(missing)}")
        return cls(**{k: data[k] for k in known if k in data})


# --------------------------------------------------------------------------
# Installing the stand-in into a node root
# --------------------------------------------------------------------------

_SCRIPT = """#!{python}
# rc-service stand-in of a releaser sandbox node (releaser.sandbox.rc); do not edit.
# Services: {services_file}
import sys

from releaser.sandbox.rc import main

sys.exit(main(script=__file__))
"""


def install_rc_service(node_root: Path, services: Mapping[str, ServiceSpec | Mapping[str, object]]) -> Path:
    """Write NODE/.releaser/services.json and the executable NODE/.releaser/bin/rc-service,
    with its ``rc-update`` beside it (``releaser.sandbox.rc_update``).

    ``services`` maps service names to ``ServiceSpec`` (or its dict form).
    Both files are replaced atomically and wholesale, so running this again
    with the same input changes nothing.  Returns the script's path.
    """
    root = Path(node_root).absolute()
    python = sys.executable
    if not python or any(c.isspace() for c in python):
        raise UsageError(f"cannot use {python!r} in a #! line (empty or contains whitespace)")
    specs = {check_service_name(name): spec if isinstance(spec, ServiceSpec) else ServiceSpec.from_dict(spec)
             for name, spec in services.items()}
    data = {name: asdict(spec) for name, spec in sorted(specs.items())}
    _write_atomic(root / SERVICES_FILE, json.dumps(data, indent=2) + "\n", 0o644)
    script = root / RC_SERVICE
    _write_atomic(script, _SCRIPT.format(python=python, services_file=root / SERVICES_FILE), 0o755)
    _write_atomic(root / RC_UPDATE, rc_update.SCRIPT.format(python=python), 0o755)
    return script


def load_services(node_root: Path) -> dict[str, ServiceSpec]:
    """The services of a node root, from its services.json."""
    path = Path(node_root) / SERVICES_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a JSON object of services")
    return {check_service_name(name): ServiceSpec.from_dict(spec) for name, spec in data.items()}


def find_node_root(environ: Mapping[str, str] | None = None, script: str | None = None) -> Path:
    """The node root: ``$ROOT`` if it holds a services.json, else the script's own node."""
    environ = os.environ if environ is None else environ
    root = environ.get("ROOT", "")
    if root and (Path(root) / SERVICES_FILE).is_file():
        return Path(root).absolute()
    if script:
        # NODE/.releaser/bin/rc-service -> NODE
        here = Path(os.path.abspath(script)).parent.parent.parent
        if (here / SERVICES_FILE).is_file():
            return here
    raise UsageError(f"no {SERVICES_FILE} found (ROOT={root or 'unset'}): not a sandbox node")


def _write_atomic(path: Path, text: str, mode: int) -> None:
    write_atomic(path, text, perm=mode)


# --------------------------------------------------------------------------
# The service operations (rooted in a node)
# --------------------------------------------------------------------------

Emit = Callable[[str, bool], None]
"""How operations report: ``emit(line, is_error)``; main prints, tests may collect."""


@dataclass(frozen=True)
class RunAs:
    """The app's user on the node, as the init script's ``command_user`` names it
    (``NAME:NAME``), with its numbers from the node's own passwd."""

    user: str
    uid: int
    gid: int
    #: The node root lies behind a folder closed to ``uid`` (see the module docstring).
    read_search: bool = False

    def argv(self, command: Sequence[str]) -> list[str]:
        """``command`` under ``setpriv``: the user's uid and gid, no other group."""
        caps = (["--inh-caps", "+dac_read_search", "--ambient-caps", "+dac_read_search"]
                if self.read_search else [])
        return ["setpriv", "--reuid", str(self.uid), "--regid", str(self.gid),
                "--clear-groups", *caps, "--", *command]

    def own(self, path: Path, mode: int) -> None:
        """Make ``path`` the user's, with ``mode`` (``checkpath --owner --mode``)."""
        os.chown(path, self.uid, self.gid)
        os.chmod(path, mode)


def passwd_entry(root: Path, user: str) -> tuple[int, int] | None:
    """``(uid, gid)`` of ``user`` in the node's ``etc/passwd``, or None."""
    try:
        lines = (root / "etc/passwd").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in lines:
        fields_ = line.split(":")
        if len(fields_) >= 4 and fields_[0] == user and fields_[2].isdigit() \
                and fields_[3].isdigit():
            return int(fields_[2]), int(fields_[3])
    return None


def closed_folder(path: Path, uid: int, gid: int) -> Path | None:
    """The first folder from / down to ``path`` that ``uid``:``gid`` may not search, or None."""
    for folder in [*reversed(path.parents), path]:
        st = folder.stat()
        bit = (0o100 if st.st_uid == uid else 0o010 if st.st_gid == gid else 0o001)
        if not st.st_mode & bit:
            return folder
    return None


@dataclass(frozen=True)
class Service:
    """One named service of one node root, with the paths it uses."""

    root: Path
    name: str
    spec: ServiceSpec

    def path(self, relative: str | Path) -> Path:
        return self.root / relative

    @property
    def pidfile(self) -> Path:
        return self.root / RUN_DIR / f"{self.name}.pid"

    @property
    def log(self) -> Path:
        return self.path(self.spec.log)

    @property
    def marker(self) -> str:
        return f"{self.root}:{self.name}"

    def environment(self) -> dict[str, str]:
        """The clean environment the app runs with (see the module docstring)."""
        env = {k: v for k, v in os.environ.items() if k in INHERITED or k.startswith("LC_")}
        env.setdefault("PATH", os.defpath)
        prefix = self.spec.module.split(".")[0].upper()
        env["PYTHONPATH"] = str(self.path(self.spec.app_dir))
        config = self.path(self.spec.config)
        if config.is_file():
            env[f"{prefix}_CONFIG"] = str(config)
        env[f"{prefix}_DATABASE"] = self.spec.database_url or str(self.path(self.spec.database))
        if self.spec.password_file:
            env[f"{prefix}_DATABASE_PASSWORD"] = Path(self.spec.password_file).read_text().strip()
        env[f"{prefix}_HOST"] = self.spec.host
        env[f"{prefix}_PORT"] = str(self.spec.port)
        env[MARKER] = self.marker
        return env

    def argv(self, command: str, run_as: "RunAs | None" = None) -> list[str]:
        # -P: the working directory never shadows the installed package (as /usr/bin/notes).
        argv = [sys.executable, "-P", "-m", self.spec.module, command]
        return run_as.argv(argv) if run_as is not None else argv

    def run_as(self) -> RunAs | None:
        """The app's user (named as the service, the init script's default), if the node
        has it and the stand-in can become it (is root); None: run as the caller."""
        ids = passwd_entry(self.root, self.name) if os.geteuid() == 0 else None
        if ids is None:
            return None
        return RunAs(self.name, *ids, read_search=closed_folder(self.root, *ids) is not None)

    def prepare(self, run_as: RunAs | None) -> None:
        """The folders (and log) the app writes, as the init script's ``start_pre`` makes
        them: created if missing, and the app user's, mode 0750, when it has one."""
        for folder in (self.path(self.spec.database).parent, self.log.parent):
            folder.mkdir(parents=True, exist_ok=True)
            if run_as is not None:
                run_as.own(folder, APP_DIR_MODE)
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, LOG_MODE)
        try:
            if run_as is not None:
                os.fchown(fd, run_as.uid, run_as.gid)
        finally:
            os.close(fd)

    # -- state -------------------------------------------------------------

    def recorded_pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def is_ours(self, pid: int) -> bool:
        """True if ``pid`` runs ``python -m MODULE serve`` with this node's marker."""
        argv = process_cmdline(pid)
        try:
            i = argv.index("-m")
        except ValueError:
            return False
        if argv[i + 1:i + 3] != [self.spec.module, "serve"]:
            return False
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False
        return f"{MARKER}={self.marker}".encode() in environ

    def running_pid(self) -> int | None:
        pid = self.recorded_pid()
        return pid if pid is not None and pid_alive(pid) and self.is_ours(pid) else None

    def installed(self) -> bool:
        return (self.path(self.spec.app_dir) / self.spec.module.split(".")[0]).is_dir()

    def port_answers(self) -> bool:
        try:
            with socket.create_connection((self.spec.host, self.spec.port), timeout=0.2):
                return True
        except OSError:
            return False

    def log_tail(self) -> str:
        try:
            return last_line(self.log.read_text(errors="replace"),
                             default="no output in the log")
        except OSError:
            return "no log"


def start(svc: Service, emit: Emit) -> int:
    """``rc-service NAME start``; returns the exit status."""
    name = svc.name
    if svc.running_pid() is not None:
        emit(f" * WARNING: {name} has already been started", True)
        return 0
    svc.pidfile.unlink(missing_ok=True)
    if not svc.installed():
        emit(f" * ERROR: {name} is not installed "
             f"({svc.path(svc.spec.app_dir) / svc.spec.module.split('.')[0]} is missing)", True)
        return 1
    if svc.port_answers():
        emit(f" * ERROR: {name} cannot start: {svc.spec.host}:{svc.spec.port} is already "
             f"in use by another program", True)
        return 1
    run_as = svc.run_as()
    svc.prepare(run_as)
    env = svc.environment()

    emit(f" * Migrating the {name} database ...", False)
    try:
        migrate = subprocess.run(svc.argv("migrate", run_as), env=env, cwd=svc.root, stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True, timeout=MIGRATE_TIMEOUT)
        code, out, err = migrate.returncode, migrate.stdout, migrate.stderr
    except subprocess.TimeoutExpired:
        code, out, err = -1, "", f"did not finish within {MIGRATE_TIMEOUT:g} s"
    with open(svc.log, "a", encoding="utf-8") as log:
        log.write(f"--- rc-service {name} start: {time.strftime('%Y-%m-%dT%H:%M:%S%z')} migrate"
                  f"{_as_whom(run_as)}\n")
        log.write(out + err)
    if code != 0:
        reason = last_line(err, out, default=f"exit {code}")
        emit(f" * ERROR: {name} migrate failed; the service was not started: {reason}", True)
        return 1

    emit(f" * Starting {name} ...", False)
    with open(svc.log, "ab") as log:
        proc = subprocess.Popen(svc.argv("serve", run_as), env=env, cwd=svc.root, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, start_new_session=True, close_fds=True)
    _write_atomic(svc.pidfile, f"{proc.pid}\n", 0o644)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            svc.pidfile.unlink(missing_ok=True)
            emit(f" * ERROR: {name} failed to start (exit {proc.returncode}): {svc.log_tail()}", True)
            return 1
        if svc.port_answers():
            if proc.poll() is None:
                return 0
            continue
        if time.monotonic() >= deadline:
            terminate_pid(proc.pid, svc.is_ours, timeout=KILL_TIMEOUT)
            proc.poll()
            svc.pidfile.unlink(missing_ok=True)
            emit(f" * ERROR: {name} did not listen on {svc.spec.host}:{svc.spec.port} within "
                 f"{START_TIMEOUT:g} s: {svc.log_tail()}", True)
            return 1
        time.sleep(0.1)


def _as_whom(run_as: RunAs | None) -> str:
    """How the log's start line names the user the app runs as."""
    if run_as is None:
        return f" as the caller (uid {os.geteuid()})"
    extra = (" with CAP_DAC_READ_SEARCH (a folder above the node is closed to it)"
             if run_as.read_search else "")
    return f" as {run_as.user} (uid {run_as.uid}, gid {run_as.gid}){extra}"


def stop(svc: Service, emit: Emit) -> int:
    """``rc-service NAME stop``; idempotent; returns the exit status."""
    pid = svc.running_pid()
    if pid is None:
        svc.pidfile.unlink(missing_ok=True)
        emit(f" * WARNING: {svc.name} is already stopped", True)
        return 0
    emit(f" * Stopping {svc.name} ...", False)
    if not terminate_pid(pid, svc.is_ours, timeout=STOP_TIMEOUT, kill_timeout=KILL_TIMEOUT):
        emit(f" * ERROR: {svc.name} (pid {pid}) did not stop, even after SIGKILL", True)
        return 1
    svc.pidfile.unlink(missing_ok=True)
    return 0


def status(svc: Service, emit: Emit) -> int:
    """``rc-service NAME status``: 0 started, 3 stopped, 32 crashed (OpenRC's statuses)."""
    if svc.running_pid() is not None:
        emit(" * status: started", False)
        return 0
    if svc.recorded_pid() is not None:
        emit(" * status: crashed", False)
        return 32
    emit(" * status: stopped", False)
    return 3


def restart(svc: Service, emit: Emit) -> int:
    """``rc-service NAME restart``: stop (if running), then start."""
    code = stop(svc, emit) if svc.running_pid() is not None else 0
    return code if code != 0 else start(svc, emit)


ACTIONS: dict[str, Callable[[Service, Emit], int]] = {
    "start": start, "stop": stop, "restart": restart, "status": status,
}


def _print(line: str, is_error: bool) -> None:
    print(line, file=sys.stderr if is_error else sys.stdout, flush=True)


def main(argv: Sequence[str] | None = None, *, script: str | None = None) -> int:
    """The ``rc-service`` command: ``rc-service NAME start|stop|restart|status``, ``rc-service -l``."""
    parser = argparse.ArgumentParser(prog="rc-service",
                                     description="releaser sandbox stand-in for OpenRC's rc-service")
    parser.add_argument("-l", "--list", action="store_true", help="list the services")
    parser.add_argument("service", nargs="?")
    parser.add_argument("action", nargs="?", choices=sorted(ACTIONS))
    args = parser.parse_args(argv)
    try:
        root = find_node_root(script=script)
        services = load_services(root)
    except UsageError as exc:
        _print(f" * rc-service: {exc}", True)
        return 1
    if args.list:
        for name in sorted(services):
            print(name)
        return 0
    if not args.service or not args.action:
        parser.print_usage(sys.stderr)
        return 1
    if args.service not in services:
        _print(f" * rc-service: service `{args.service}' does not exist", True)
        return 1
    svc = Service(root, args.service, services[args.service])
    # One operation per service at a time, as OpenRC serialises a service's
    # state changes: two overlapping restarts would race on the pidfile.
    svc.pidfile.parent.mkdir(parents=True, exist_ok=True)
    with open(svc.pidfile.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return ACTIONS[args.action](svc, _print)


__all__ = [
    "ACTIONS",
    "MARKER",
    "RC_SERVICE",
    "RC_UPDATE",
    "RunAs",
    "SERVICES_FILE",
    "Service",
    "ServiceSpec",
    "find_node_root",
    "install_rc_service",
    "load_services",
    "main",
    "passwd_entry",
    "restart",
    "start",
    "status",
    "stop",
]

if __name__ == "__main__":
    sys.exit(main())
