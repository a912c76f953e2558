"""Where the database is (SQLite, PostgreSQL or MariaDB), opening it, and probing it.

The configuration's ``database`` is either a file path (SQLite, the default)
or a URL: ``postgresql://USER@HOST:PORT/NAME`` or ``mariadb://USER@HOST:PORT/NAME``
(``mysql://`` is read as ``mariadb://``).  The URL never holds the password:
that comes from the environment (``NOTES_DATABASE_PASSWORD``), so a config
file or a process list never shows it.

Every connection is in autocommit mode (transactions are explicit) and goes
through ``Connection``: queries are written once with ``?`` placeholders and
the drivers' errors become one family (``DatabaseError``), so the rest of the
app does not care which backend it talks to.  The drivers (psycopg 3, PyMySQL)
are imported only when a server backend is used: a SQLite install needs
neither.

SQLite connections go through a ``file:`` URI so the open mode is explicit:
the web app and the health probe must never create an empty database file
where a real one is missing; only ``migrate`` creates.
"""

from __future__ import annotations

import os
import re
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .errors import DatabaseUnavailable, NotesError

#: Seconds to wait for a lock (SQLite) or a connection (servers) before giving up.
BUSY_TIMEOUT = 5.0
SQLITE, POSTGRESQL, MARIADB = "sqlite", "postgresql", "mariadb"
BACKENDS = (SQLITE, POSTGRESQL, MARIADB)
_SCHEMES = {"sqlite": SQLITE, "postgresql": POSTGRESQL, "postgres": POSTGRESQL,
            "mariadb": MARIADB, "mysql": MARIADB}
_DEFAULT_PORTS = {POSTGRESQL: 5432, MARIADB: 3306}
#: Database and user names the app accepts: they end up in commands and identifiers.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class DatabaseError(NotesError):
    """A query failed on the database (any backend); one line."""


@dataclass(frozen=True)
class Target:
    """One database: a SQLite file, or a database on a PostgreSQL or MariaDB server."""

    backend: str
    path: Path | None = None
    host: str = ""
    port: int = 0
    user: str = ""
    name: str = ""
    password: str | None = None

    def __str__(self) -> str:
        """How the database is named in messages: never with its password."""
        if self.backend == SQLITE:
            return str(self.path)
        return f"{self.backend}://{self.user}@{self.host}:{self.port}/{self.name}"

    @property
    def is_server(self) -> bool:
        return self.backend != SQLITE

    def named(self, name: str) -> "Target":
        """The same server, another database (a scratch one, a copy)."""
        return replace(self, name=check_name(name, "database name"))


def check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise DatabaseUnavailable(f"invalid {what} {value!r} (letters, digits and '_')")
    return value


def parse_database(value: str | os.PathLike[str], password: str | None = None) -> Target:
    """A Target from a config value: a path (SQLite) or a URL.  ValueError if malformed."""
    text = os.fspath(value)
    if "://" not in text:
        return Target(SQLITE, path=Path(text))
    parts = urlsplit(text)
    backend = _SCHEMES.get(parts.scheme)
    if backend is None:
        raise ValueError(f"unknown database scheme {parts.scheme!r} (sqlite, postgresql, mariadb)")
    if backend == SQLITE:
        return Target(SQLITE, path=Path(unquote(parts.path)))
    if parts.password is not None:
        raise ValueError("the database URL must not hold a password: set NOTES_DATABASE_PASSWORD")
    if parts.query or parts.fragment:
        raise ValueError("the database URL takes no query or fragment")
    name = parts.path.lstrip("/")
    try:
        port = parts.port or _DEFAULT_PORTS[backend]
    except ValueError:
        raise ValueError("the database URL has an invalid port") from None
    if not parts.hostname or not parts.username:
        raise ValueError(f"expected {backend}://USER@HOST[:PORT]/NAME")
    try:
        check_name(name, "database name")
        check_name(unquote(parts.username), "database user")
    except DatabaseUnavailable as exc:
        raise ValueError(str(exc)) from None
    return Target(backend, host=parts.hostname, port=port, user=unquote(parts.username),
                  name=name, password=password)


def as_target(database: "Target | str | os.PathLike[str]") -> Target:
    """A Target, from a Target or what the configuration holds."""
    if isinstance(database, Target):
        return database
    try:
        return parse_database(database)
    except ValueError as exc:
        raise DatabaseUnavailable(f"database {database}: {exc}") from None


def driver_errors(backend: str) -> tuple[type[BaseException], ...]:
    """The exceptions a backend's driver raises for a failed query or connection."""
    if backend == POSTGRESQL:
        import psycopg
        return (psycopg.Error,)
    if backend == MARIADB:
        import pymysql
        return (pymysql.Error,)
    return (sqlite3.Error,)


class Connection:
    """A DB-API connection of any backend: ``?`` placeholders, one error family."""

    def __init__(self, raw: Any, target: Target):
        self.raw = raw
        self.target = target
        self.backend = target.backend
        self._errors = driver_errors(target.backend)

    def execute(self, sql: str, params: tuple | list = ()) -> Any:
        """Run one statement; its cursor.  DatabaseError (one line) if it fails."""
        if self.backend != SQLITE and params:
            sql = sql.replace("%", "%%").replace("?", "%s")
        try:
            if self.backend == SQLITE:
                return self.raw.execute(sql, params)
            cursor = self.raw.cursor()
            cursor.execute(sql, params or None)
            return cursor
        except self._errors as exc:
            raise DatabaseError(f"database {self.target}: {_one_line(exc)}") from None

    def scalar(self, sql: str, params: tuple | list = ()) -> Any:
        row = self.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def tables(self) -> list[str]:
        """The database's tables (the app's and its bookkeeping), sorted."""
        if self.backend == SQLITE:
            sql = ("SELECT name FROM sqlite_master WHERE type = 'table' "
                   "AND name NOT LIKE 'sqlite_%'")
        elif self.backend == POSTGRESQL:
            sql = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        else:
            sql = ("SELECT table_name FROM information_schema.tables "
                   "WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE'")
        return sorted(str(row[0]) for row in self.execute(sql).fetchall())

    def quote(self, identifier: str) -> str:
        check_name(identifier, "identifier")
        return f"`{identifier}`" if self.backend == MARIADB else f'"{identifier}"'

    def close(self) -> None:
        try:
            self.raw.close()
        except self._errors:
            pass


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def database_uri(db_path: str | os.PathLike[str], mode: str, *, immutable: bool = False) -> str:
    """Return a SQLite ``file:`` URI for db_path; mode is "ro", "rw" or "rwc" (create)."""
    if mode not in ("ro", "rw", "rwc"):
        raise ValueError(f"unknown SQLite open mode {mode!r}")
    uri = f"{Path(os.path.abspath(db_path)).as_uri()}?mode={mode}"
    if immutable:
        uri += "&immutable=1"
    return uri


def connect(
    db_path: str | os.PathLike[str],
    mode: str = "rw",
    *,
    immutable: bool = False,
    timeout: float = BUSY_TIMEOUT,
) -> sqlite3.Connection:
    """Open a SQLite file in autocommit mode with Row rows (the dump code's raw access).

    Raises DatabaseUnavailable instead of sqlite3.Error so callers report one line.
    """
    try:
        conn = sqlite3.connect(
            database_uri(db_path, mode, immutable=immutable),
            uri=True,
            timeout=timeout,
            isolation_level=None,
            check_same_thread=True,
        )
    except sqlite3.Error as exc:
        raise DatabaseUnavailable(f"cannot open database {db_path}: {exc}") from None
    conn.row_factory = sqlite3.Row
    return conn


def open_database(database: "Target | str | os.PathLike[str]", mode: str = "rw") -> Connection:
    """Connect to any backend; ``mode`` ("ro", "rw", "rwc") matters to SQLite only.

    DatabaseUnavailable (one line) when the server cannot be reached, the
    login is refused, or the SQLite file is missing (modes "ro", "rw").
    """
    target = as_target(database)
    if target.backend == SQLITE:
        return Connection(connect(target.path, mode), target)
    try:
        if target.backend == POSTGRESQL:
            import psycopg
            raw = psycopg.connect(host=target.host, port=target.port, user=target.user,
                                  dbname=target.name, password=target.password or "",
                                  connect_timeout=int(BUSY_TIMEOUT), autocommit=True)
        else:
            import pymysql
            raw = pymysql.connect(host=target.host, port=target.port, user=target.user,
                                  password=target.password or "", database=target.name,
                                  connect_timeout=int(BUSY_TIMEOUT), autocommit=True,
                                  charset="utf8mb4")
    except driver_errors(target.backend) as exc:
        raise DatabaseUnavailable(f"cannot connect to database {target}: {_one_line(exc)}") from None
    return Connection(raw, target)


def user_version(conn: sqlite3.Connection) -> int:
    """The schema version stored in a SQLite database's header (PRAGMA user_version)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def read_schema_version(database: "Target | str | os.PathLike[str]") -> int:
    """The database's schema version, read without changing anything.

    Raises DatabaseUnavailable when the database is missing, unreachable or
    not usable (a SQLite file that is not a database).
    """
    from .schema import schema_version  # schema builds on this module

    target = as_target(database)
    if target.backend == SQLITE and not target.path.exists():
        raise DatabaseUnavailable(f"database {target} does not exist")
    conn = open_database(target, "ro")
    try:
        return schema_version(conn)
    except DatabaseError as exc:
        raise DatabaseUnavailable(f"database {target} is unusable: {exc}") from None
    finally:
        conn.close()


@dataclass(frozen=True)
class Probe:
    """What the health check learned about the database."""

    reachable: bool
    schema_version: int | None
    error: str | None = None


def probe(database: "Target | str | os.PathLike[str]") -> Probe:
    """Read-only reachability and schema check that never raises."""
    try:
        return Probe(reachable=True, schema_version=read_schema_version(database))
    except NotesError as exc:
        return Probe(reachable=False, schema_version=None, error=str(exc))
