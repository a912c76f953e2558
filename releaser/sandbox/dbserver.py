"""Database servers of their own for the sandbox and the tests: PostgreSQL and MariaDB.

Each server is a cluster in a folder of its own, listening on a free
loopback port and a socket in that folder, started from Debian's packages
(``/usr/lib/postgresql/VERSION/bin``, ``mariadbd``) and stopped by the pid it
recorded: the machine's own clusters and services are never touched.

PostgreSQL refuses to run as root and mariadbd wants a ``--user``: run as
root, the server runs as the package's system user (``postgres``,
``mysql``), which owns the cluster folder; run as anyone else, as that user.

Each server has one database for the app, owned by an app user with a
password (the app reads it from its environment), who may also create and
drop databases named ``NAME_*`` (the scratch databases a dump is verified in,
and a refreshed copy's).  ``url`` is the DSN the app is configured with; it
never holds the password.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from releaser.errors import SandboxError
from releaser.processes import pid_alive

BACKENDS = ("sqlite", "postgresql", "mariadb")
SERVER_BACKENDS = ("postgresql", "mariadb")
#: Where Debian installs PostgreSQL's server programs (the newest version is used).
PG_ROOT = Path("/usr/lib/postgresql")
#: The record of a started server inside its folder (``from_folder`` reads it).
STATE = "server.json"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


@dataclass(frozen=True)
class DatabaseServer:
    """A running server: what the app needs (``url``, ``password``) and how to stop it."""

    backend: str
    folder: str
    port: int
    pid: int
    database: str
    user: str
    password: str
    socket: str

    @property
    def url(self) -> str:
        """The app's DSN (no password: that comes from the environment)."""
        scheme = "postgresql" if self.backend == "postgresql" else "mariadb"
        return f"{scheme}://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def admin_argv(self, sql: str, database: str | None = None) -> list[str]:
        """A client command running ``sql`` as the server's superuser over its socket."""
        if self.backend == "postgresql":
            return _as_owner("postgresql", [str(pg_bindir() / "psql"), "-X", "-q", "-v",
                                            "ON_ERROR_STOP=1", "-h", self.socket, "-p",
                                            str(self.port), "-U", "postgres", "-d",
                                            database or "postgres", "-c", sql])
        return ["mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot",
                *([database] if database else []), "-e", sql]

    def admin(self, sql: str, database: str | None = None) -> str:
        """Run ``sql`` as superuser; its output.  SandboxError with the client's words."""
        result = subprocess.run(self.admin_argv(sql, database), capture_output=True, text=True,
                                timeout=60)
        if result.returncode:
            raise SandboxError(f"{self.backend} server {self.folder}: {sql[:60]!r} failed: "
                               f"{result.stderr.strip()[-300:]}")
        return result.stdout

    def stop(self) -> None:
        """Stop the server by its pid (a fast shutdown), waiting until it is gone."""
        stop_pid(self.pid, signal.SIGINT if self.backend == "postgresql" else signal.SIGTERM)

    def to_dict(self) -> dict:
        return asdict(self)


def pg_bindir() -> Path:
    """The newest PostgreSQL server's programs on this machine."""
    versions = sorted((p for p in PG_ROOT.glob("*/bin/postgres")),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                      else 0)
    if not versions:
        raise SandboxError(f"no PostgreSQL server under {PG_ROOT} (scripts/bootstrap installs "
                           "postgresql)")
    return versions[-1].parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(backend: str, folder: Path, *, database: str = "notes",
                 user: str = "notes") -> DatabaseServer:
    """Create a cluster in ``folder`` (new or empty) and start it; the running server.

    On failure whatever was started is stopped and SandboxError says why.
    """
    if backend not in SERVER_BACKENDS:
        raise SandboxError(f"no server for backend {backend!r} (servers: "
                           f"{', '.join(SERVER_BACKENDS)})")
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise SandboxError(f"{folder} is not empty: a server needs a folder of its own")
    _open_path_to(folder)
    _chown_to_owner(backend, folder)
    password = secrets.token_hex(12)
    start = _start_postgresql if backend == "postgresql" else _start_mariadb
    server = start(folder, free_port(), database, user, password)
    try:
        _create_app_user(server)
    except BaseException:
        server.stop()
        raise
    (folder / STATE).write_text(json.dumps(server.to_dict()))
    return server


def from_folder(folder: Path) -> DatabaseServer | None:
    """The server recorded in ``folder``, or None when none was started there."""
    try:
        return DatabaseServer(**json.loads((Path(folder) / STATE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def stop_pid(pid: int, how: signal.Signals) -> None:
    """``how`` (the server's fast shutdown: SIGINT for PostgreSQL, SIGTERM for mariadbd),
    then SIGKILL if it outlives STOP_TIMEOUT."""
    if not pid_alive(pid):
        return
    os.kill(pid, how)
    deadline = time.monotonic() + STOP_TIMEOUT
    while pid_alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + STOP_TIMEOUT
        _reap(pid)
        time.sleep(0.05)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# ------------------------------------------------------------------------ internals


def _owner(backend: str) -> str | None:
    """The system user the server runs as when we are root, else None (ourselves)."""
    if os.geteuid() != 0:
        return None
    return "postgres" if backend == "postgresql" else "mysql"


def _as_owner(backend: str, argv: list[str]) -> list[str]:
    owner = _owner(backend)
    if owner is None:
        return argv
    return ["setpriv", f"--reuid={owner}", f"--regid={owner}", "--init-groups",
            "--inh-caps=-all", *argv]


def _chown_to_owner(backend: str, folder: Path) -> None:
    owner = _owner(backend)
    if owner is not None:
        entry = pwd.getpwnam(owner)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    folder.chmod(0o700)


def _open_path_to(folder: Path) -> None:
    """Let the server's user reach ``folder``: its parents get o+x (search, not read)."""
    if os.geteuid() != 0:
        return
    for parent in folder.parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


def _run(backend: str, argv: list[str], what: str) -> None:
    result = subprocess.run(_as_owner(backend, argv), capture_output=True, text=True,
                            timeout=300)
    if result.returncode:
        raise SandboxError(f"{what} failed: {(result.stderr or result.stdout).strip()[-400:]}")


def _spawn(backend: str, argv: list[str], log: Path) -> int:
    """Start the server detached from us (a session of its own); its pid."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(_as_owner(backend, argv), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return proc.pid


def _wait_ready(server: DatabaseServer, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not pid_alive(server.pid):
            _reap(server.pid)
            raise SandboxError(f"{server.backend} server in {server.folder} exited at start: "
                               f"{_tail(log)}")
        probe = subprocess.run(server.admin_argv("SELECT 1"), capture_output=True, timeout=30)
        if probe.returncode == 0:
            return
        time.sleep(0.2)
    server.stop()
    raise SandboxError(f"{server.backend} server in {server.folder} did not answer within "
                       f"{START_TIMEOUT:g}s: {_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
    except OSError:
        return "no log"


def _start_postgresql(folder: Path, port: int, database: str, user: str,
                      password: str) -> DatabaseServer:
    bindir = pg_bindir()
    data = folder / "data"
    _run("postgresql", [str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                        "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                        "--locale=C.UTF-8", "--no-sync"], "initdb")
    argv = [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(folder),
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off",
            "-c", "synchronous_commit=off"]
    log = folder / "server.log"
    pid = _spawn("postgresql", argv, log)
    server = DatabaseServer("postgresql", str(folder), port, pid, database, user, password,
                            str(folder))
    _wait_ready(server, log)
    return server


def _start_mariadb(folder: Path, port: int, database: str, user: str,
                   password: str) -> DatabaseServer:
    data = folder / "data"
    owner = _owner("mariadb") or pwd.getpwuid(os.geteuid()).pw_name
    _run("mariadb", ["mariadb-install-db", "--no-defaults", f"--datadir={data}",
                     f"--user={owner}", "--auth-root-authentication-method=normal",
                     "--skip-test-db"], "mariadb-install-db")
    sock = folder / "mysqld.sock"
    mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
    argv = [mariadbd, "--no-defaults", f"--datadir={data}", f"--socket={sock}",
            f"--port={port}", "--bind-address=127.0.0.1", f"--user={owner}",
            f"--pid-file={folder / 'mariadbd.pid'}", "--skip-name-resolve",
            "--innodb-flush-log-at-trx-commit=0", "--innodb-buffer-pool-size=64M",
            "--skip-log-bin"]
    log = folder / "server.log"
    # mariadbd drops to --user itself; started as root it must start as root.
    with open(log, "ab") as out:
        pid = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                               stderr=subprocess.STDOUT, start_new_session=True).pid
    server = DatabaseServer("mariadb", str(folder), port, pid, database, user, password,
                            str(sock))
    _wait_ready(server, log)
    return server


def _create_app_user(server: DatabaseServer) -> None:
    """The app's user and database; it may create and drop databases NAME_* too."""
    db, user, pw = server.database, server.user, server.password
    if server.backend == "postgresql":
        server.admin(f"CREATE ROLE {user} LOGIN CREATEDB PASSWORD '{pw}'")
        server.admin(f"CREATE DATABASE {db} OWNER {user}")
        return
    server.admin(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{pw}'; "
                 f"CREATE DATABASE `{db}`; "
                 f"GRANT ALL PRIVILEGES ON `{db}`.* TO '{user}'@'127.0.0.1'; "
                 f"GRANT ALL PRIVILEGES ON `{db}\\_%`.* TO '{user}'@'127.0.0.1'; "
                 f"GRANT PROCESS ON *.* TO '{user}'@'127.0.0.1'")


# --------------------------------------------------- a sandbox's server (sandbox init --db)

#: The app's driver of each server backend: (Python distribution, Gentoo package).
DRIVERS = {"postgresql": ("psycopg", "dev-python/psycopg"),
           "mariadb": ("PyMySQL", "dev-python/pymysql")}
#: In a sandbox folder: the server's cluster, and the app user's password (0600).
SANDBOX_FOLDER, PASSWORD_FILE = "db", "db.password"


def check_backend(backend: str) -> str:
    """``backend`` if ``sandbox init --db`` takes it, else UsageError (before anything is made)."""
    from releaser.errors import UsageError

    if backend not in BACKENDS:
        raise UsageError(f"--db: {backend!r} is not one of {', '.join(BACKENDS)}")
    return backend


def driver_atoms(backend: str) -> tuple[str, ...]:
    """The RDEPEND atom the app needs for ``backend`` (none for SQLite: the standard library)."""
    return (DRIVERS[backend][1],) if backend in DRIVERS else ()


def driver_provided(backend: str) -> list[str]:
    """package.provided entries for the driver, from this Python (the sandbox runs the app
    with it); SandboxError when the ``sandbox`` extra is not installed."""
    import importlib.metadata

    if backend not in DRIVERS:
        return []
    dist, package = DRIVERS[backend]
    try:
        return [f"{package}-{importlib.metadata.version(dist)}"]
    except importlib.metadata.PackageNotFoundError:
        raise SandboxError(f"--db {backend}: the app's driver {dist} is not installed: pip "
                           "install 'releaser[sandbox]' (scripts/bootstrap does)") from None


@dataclass(frozen=True)
class SandboxDatabases:
    """A sandbox's server with one database per environment (``NAME_ENV``), the app user's
    password in ``password_file``."""

    server: DatabaseServer
    urls: dict
    password_file: str

    def to_state(self) -> dict:
        return {"backend": self.server.backend, "folder": self.server.folder,
                "pid": self.server.pid, "urls": self.urls, "password_file": self.password_file}


def start_sandbox_databases(directory: Path, backend: str, envs: list[str]) -> SandboxDatabases:
    """Start the sandbox's server and make each environment's database.

    The cluster lives in a folder of its own under the system's temporary
    folder, not in ``directory``: the server runs as its own user, who must
    reach it, and a sandbox's folders (a home, pytest's) may be closed to
    others or closed again while the server runs.  ``down`` removes it.
    """
    server = start_server(backend, Path(tempfile.mkdtemp(prefix="releaser-sandbox-db-"))
                          / SANDBOX_FOLDER)
    try:
        password_file = Path(directory) / PASSWORD_FILE
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(server.password + "\n")
        urls = {}
        for env in envs:
            name = f"{server.database}_{env.replace('-', '_')}"
            server.admin(f"CREATE DATABASE {name} OWNER {server.user}"
                         if backend == "postgresql" else f"CREATE DATABASE `{name}`")
            urls[env] = server.url.rsplit("/", 1)[0] + "/" + name
    except BaseException:
        server.stop()
        raise
    return SandboxDatabases(server, urls, str(password_file))


def stop_sandbox_databases(state: dict | None, progress=lambda _m: None) -> None:
    """Stop the server a sandbox state records (by its pid); nothing if none."""
    if not state:
        return
    folder = Path(state["folder"])
    server = from_folder(folder)
    if server is not None and pid_alive(server.pid):
        server.stop()
        progress(f"{server.backend} server stopped")
    if folder.name == SANDBOX_FOLDER and folder.parent.name.startswith("releaser-sandbox-db-"):
        shutil.rmtree(folder.parent, ignore_errors=True)
