"""Consistent dumps of the live database, their verification, and restore, on every backend.

A release pipeline dumps before migrating and restores on a failed upgrade,
so a dump is only worth something once it is proven restorable.  Each
backend dumps with its own consistent tool and is verified the same way:
restored into a scratch database, then read back (schema version, rows per
table, write marks):

* SQLite: the online backup API (``notes.backup_sqlite``), verified in a
  scratch file with ``PRAGMA integrity_check``;
* PostgreSQL: ``pg_dump`` custom format, verified by ``pg_restore
  --single-transaction --exit-on-error`` into a scratch database on the same
  server (``notes.backup_server``);
* MariaDB: ``mariadb-dump --single-transaction``, verified by its completion
  line and a load into a scratch database on the same server.

A dump file says which backend made it (its first bytes), so ``verify-dump``
and ``restore`` need no flag; a server dump needs a server of its kind (the
configured database's) to be restored on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import backup_server, backup_sqlite
from .db import MARIADB, POSTGRESQL, SQLITE, Target, as_target
from .errors import DumpError

#: The first bytes of a dump, by backend (MariaDB: either header of mariadb-dump).
_SIGNATURES = ((backup_sqlite.SQLITE_MAGIC, SQLITE), (b"PGDMP", POSTGRESQL),
               (b"-- MariaDB dump", MARIADB), (b"/*M!999999", MARIADB),
               (b"-- MySQL dump", MARIADB))


def dump_backend(dump_path: str | os.PathLike[str]) -> str:
    """The backend a dump file comes from, by its first bytes; DumpError if none."""
    path = Path(dump_path)
    try:
        with path.open("rb") as fh:
            head = fh.read(32)
    except FileNotFoundError:
        raise DumpError(f"dump {path}: not found") from None
    except IsADirectoryError:
        raise DumpError(f"dump {path}: not a regular file") from None
    except OSError as exc:
        raise DumpError(f"dump {path}: cannot read: {exc.strerror or exc}") from None
    for signature, backend in _SIGNATURES:
        if head.startswith(signature) or (head and signature.startswith(head)
                                          and backend == SQLITE):
            return backend
    if not head:
        raise DumpError(f"dump {path}: empty file, not a dump")
    raise DumpError(f"dump {path}: not an SQLite database, PostgreSQL custom-format or "
                    "MariaDB dump")


def dump(database: "Target | str | os.PathLike[str]",
         out_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Write a consistent dump of the database to out_path (atomically) and verify it.

    Returns the verification report (``verify_dump``).
    """
    target = as_target(database)
    if target.backend == SQLITE:
        backup_sqlite.dump(target.path, out_path)
        return backup_sqlite.verify_dump(out_path)
    return backup_server.dump(target, Path(out_path))


def verify_dump(dump_path: str | os.PathLike[str],
                database: "Target | str | os.PathLike[str] | None" = None) -> dict[str, Any]:
    """Prove a dump restorable; its report (path, size, sha256, backend, schema_version,
    notes, tables, writes, migrations, integrity).

    A SQLite dump needs nothing else; a server dump is restored into a scratch
    database on ``database``'s server, which must be of the dump's kind.
    """
    backend = dump_backend(dump_path)
    if backend == SQLITE:
        return backup_sqlite.verify_dump(dump_path)
    return backup_server.verify_dump(Path(dump_path), _server_for(backend, database, dump_path))


def restore(dump_path: str | os.PathLike[str],
            database: "Target | str | os.PathLike[str]") -> dict[str, Any]:
    """Verify the dump, then replace the database's content with it; the report plus
    ``database``.  Stop the service first."""
    backend = dump_backend(dump_path)
    if backend == SQLITE:
        target = as_target(database)
        if target.backend != SQLITE:
            raise DumpError(f"dump {dump_path} is a SQLite dump; the database {target} is "
                            f"{target.backend}")
        return backup_sqlite.restore(dump_path, target.path)
    return backup_server.restore(Path(dump_path), _server_for(backend, database, dump_path))


def _server_for(backend: str, database: "Target | str | os.PathLike[str] | None",
                dump_path: str | os.PathLike[str]) -> Target:
    if database is None:
        raise DumpError(f"dump {dump_path} is a {backend} dump: it is verified on a {backend} "
                        "server, and no database is configured")
    target = as_target(database)
    if target.backend != backend:
        raise DumpError(f"dump {dump_path} is a {backend} dump, but the configured database "
                        f"{target} is {target.backend}")
    return target
