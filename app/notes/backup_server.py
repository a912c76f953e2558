"""PostgreSQL and MariaDB dumps: made by the servers' own tools, proven by a scratch restore.

* PostgreSQL: ``pg_dump --format=custom`` inside a transaction whose snapshot
  the app shares (``pg_export_snapshot``), so the rows counted at dump time
  are exactly the rows dumped; the scratch restore must give the same counts.
* MariaDB: ``mariadb-dump --single-transaction`` (one consistent InnoDB
  snapshot, no lock held on the tables); a complete dump ends with its
  ``-- Dump completed`` line, so a truncated one is refused before any load.

Verification restores into a scratch database ``NAME_verify_XXXXXXXX`` on
the same server (the app's user may create and drop ``NAME_*``), reads the
schema version, rows per table and write marks there, and always drops it.
A restore replaces the live database's tables with the dump's (service
stopped), after a verification, and checks the result against it.

The password goes to the tools through their environment (``PGPASSWORD``)
or a private option file (MariaDB), never through their argv.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .db import MARIADB, POSTGRESQL, Connection, Target, open_database
from .errors import DumpError, NotesError
from .files import sha256, write_atomically
from .store import snapshot

#: A dump or a restore of a large database can take long; a hung one must not hang forever.
TOOL_TIMEOUT = 3600.0
#: The last line mariadb-dump writes (with a date): its absence means a truncated dump.
MARIADB_COMPLETED = b"-- Dump completed"


def dump(target: Target, out: Path) -> dict[str, Any]:
    """Dump ``target`` to ``out`` (written under a temporary name, fsynced, renamed), then
    verify it in a scratch database; the verification report."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DumpError(f"cannot create directory {out.parent}: {exc.strerror or exc}") from None
    source = write_atomically(out, lambda tmp: _dump_postgresql(target, tmp)
                              if target.backend == POSTGRESQL else _dump_mariadb(target, tmp))
    report = verify_dump(out, target)
    if source is not None and (source["tables"], source["schema_version"]) != \
            (report["tables"], report["schema_version"]):
        raise DumpError(f"dump {out}: restores to {report['tables']} at schema "
                        f"{report['schema_version']}, but the database held {source['tables']} "
                        f"at schema {source['schema_version']} when it was dumped")
    return report


def verify_dump(path: Path, server: Target) -> dict[str, Any]:
    """Restore ``path`` into a scratch database on ``server``'s server and read it back."""
    size = _check_file(path, server.backend)
    digest = sha256(path)
    with scratch_database(server, "verify") as scratch:
        _load(path, scratch)
        facts = _read(scratch, path)
    if facts["schema_version"] < 1:
        raise DumpError(f"dump {path}: not a notes database (schema version 0)")
    return {"path": str(path.resolve()), "size": size, "sha256": digest,
            "backend": server.backend, **facts, "integrity": "ok"}


def restore(path: Path, target: Target) -> dict[str, Any]:
    """Verify ``path``, then replace ``target``'s tables with the dump's; the report plus
    ``database``.  The result is read back: anything but the dump's counts is an error."""
    report = verify_dump(path, target)
    _drop_tables(target)
    _load(path, target)
    facts = _read(target, path)
    if (facts["tables"], facts["schema_version"]) != (report["tables"], report["schema_version"]):
        raise DumpError(f"restore of {path} into {target} gave {facts['tables']} at schema "
                        f"{facts['schema_version']}, not the dump's {report['tables']}")
    return {**report, "database": str(target)}


@contextmanager
def scratch_database(server: Target, purpose: str) -> Iterator[Target]:
    """A new empty database ``NAME_PURPOSE_XXXXXXXX`` on ``server``'s server, dropped after
    (even when the body fails).  DumpError when it cannot be created or dropped."""
    scratch = server.named(f"{server.name}_{purpose}_{secrets.token_hex(4)}")
    admin = _admin(server)
    try:
        _ddl(admin, f"CREATE DATABASE {admin.quote(scratch.name)}")
        try:
            yield scratch
        finally:
            force = " WITH (FORCE)" if server.backend == POSTGRESQL else ""
            _ddl(admin, f"DROP DATABASE IF EXISTS {admin.quote(scratch.name)}{force}")
    finally:
        admin.close()


def _ddl(admin: Connection, sql: str) -> None:
    try:
        admin.execute(sql)
    except NotesError as exc:
        raise DumpError(f"scratch database on {admin.target}: {exc}") from None


# ------------------------------------------------------------------------ internals


def _admin(server: Target) -> Connection:
    """A connection to create and drop databases from: the app's own database (in
    autocommit, as CREATE DATABASE must run outside a transaction)."""
    try:
        return open_database(server)
    except NotesError as exc:
        raise DumpError(f"scratch database on {server}: {exc}") from None


def _check_file(path: Path, backend: str) -> int:
    """The dump's size; DumpError for a file too short, or a MariaDB dump without its end."""
    size = path.stat().st_size
    if backend == MARIADB:
        with path.open("rb") as fh:
            fh.seek(max(size - 4096, 0))
            tail = fh.read()
        last = [line for line in tail.splitlines() if line.strip()][-1:]
        if not last or not last[0].startswith(MARIADB_COMPLETED):
            raise DumpError(f"dump {path}: truncated (no '-- Dump completed' line at its end)")
    elif size < 64:
        raise DumpError(f"dump {path}: truncated ({size} bytes)")
    return size


def _read(target: Target, path: Path) -> dict[str, Any]:
    conn = open_database(target)
    try:
        return snapshot(conn)
    except NotesError as exc:
        raise DumpError(f"dump {path}: not a notes database ({exc})") from None
    finally:
        conn.close()


def _drop_tables(target: Target) -> None:
    """Empty the live database of tables (the dump brings its own), one transaction on
    PostgreSQL; MariaDB has no transactional DDL, the dump was verified just before."""
    conn = open_database(target)
    try:
        tables = conn.tables()
        if not tables:
            return
        names = ", ".join(conn.quote(t) for t in tables)
        if target.backend == POSTGRESQL:
            conn.execute(f"DROP TABLE {names} CASCADE")
        else:
            conn.execute("SET FOREIGN_KEY_CHECKS = 0")
            conn.execute(f"DROP TABLE {names}")
    finally:
        conn.close()


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise DumpError(f"{name} not found in PATH (install the database's client tools)")
    return found


def _run(argv: list[str], what: str, *, env: dict[str, str] | None = None,
         stdin: Path | None = None, stdout: Path | None = None) -> None:
    """Run a client tool; DumpError with its last words if it fails."""
    try:
        with _opened(stdin, "rb") as fin, _opened(stdout, "wb") as fout:
            result = subprocess.run(argv, stdin=fin if fin else subprocess.DEVNULL,
                                    stdout=fout if fout else subprocess.PIPE,
                                    stderr=subprocess.PIPE, env={**os.environ, **(env or {})},
                                    timeout=TOOL_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise DumpError(f"{what}: timed out after {TOOL_TIMEOUT:g}s") from None
    except OSError as exc:
        raise DumpError(f"{what}: {exc.strerror or exc}") from None
    if result.returncode:
        words = " ".join(result.stderr.decode(errors="replace").split())[-300:]
        raise DumpError(f"{what} failed: {words or f'exit status {result.returncode}'}")


@contextmanager
def _opened(path: Path | None, mode: str):
    if path is None:
        yield None
    else:
        with path.open(mode) as fh:
            yield fh


def _pg_args(target: Target) -> tuple[list[str], dict[str, str]]:
    return (["--host", target.host, "--port", str(target.port), "--username", target.user,
             "--no-password"], {"PGPASSWORD": target.password or "", "PGCONNECT_TIMEOUT": "10"})


@contextmanager
def _my_options(target: Target) -> Iterator[list[str]]:
    """MariaDB client options, the password in a private option file (first, as required)."""
    with tempfile.TemporaryDirectory(prefix="notes-my-") as tmp:
        cnf = Path(tmp) / "client.cnf"
        fd = os.open(cnf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"[client]\npassword=\"{_escape(target.password or '')}\"\n")
        yield [f"--defaults-extra-file={cnf}", f"--host={target.host}", f"--port={target.port}",
               f"--user={target.user}", "--protocol=TCP"]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _dump_postgresql(target: Target, tmp: Path) -> dict[str, Any]:
    """pg_dump in the snapshot the counts were read in; those counts."""
    args, env = _pg_args(target)
    conn = open_database(target)
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snap = conn.scalar("SELECT pg_export_snapshot()")
        source = snapshot(conn)
        _run([_tool("pg_dump"), *args, "--format=custom", f"--snapshot={snap}",
              "--no-owner", "--no-privileges", f"--file={tmp}", target.name],
             f"pg_dump of {target}", env=env)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return source


def _dump_mariadb(target: Target, tmp: Path) -> None:
    """mariadb-dump --single-transaction; no shared snapshot, so no source counts."""
    with _my_options(target) as opts:
        _run([_tool("mariadb-dump"), *opts, "--single-transaction", "--skip-lock-tables",
              "--routines", "--triggers", "--hex-blob", "--default-character-set=utf8mb4",
              target.name], f"mariadb-dump of {target}", stdout=tmp)
    return None


def _load(path: Path, target: Target) -> None:
    """Load a dump into ``target`` (an empty database): all or nothing on PostgreSQL."""
    if target.backend == POSTGRESQL:
        args, env = _pg_args(target)
        _run([_tool("pg_restore"), *args, "--exit-on-error", "--single-transaction",
              "--no-owner", "--no-privileges", f"--dbname={target.name}", str(path)],
             f"dump {path}: pg_restore", env=env)
        return
    with _my_options(target) as opts:
        _run([_tool("mariadb"), *opts, "--batch", "--binary-mode", target.name],
             f"dump {path}: load", stdin=path)
