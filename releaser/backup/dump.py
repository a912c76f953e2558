"""Verified database dumps, taken on the node by the app itself, kept on the central host.

releaser never copies a live database file: a copy taken while the service
writes can be torn.  It runs the installed app's own ``dump OUT`` on the node
(SQLite's online backup API), then proves the dump restorable with the app's
``verify-dump`` (restore into a scratch database, ``integrity_check``, schema
version), and checks the dump's sha256 at every hop (node, central).  The
commands, their variables and their reports are the app's contract
(``releaser.appcontract``).  The same command runs on a real host (ROOT ``/``)
and on a sandbox node::

    python3 -P -m APP dump OUT      with PYTHONPATH=ROOT/usr/lib/APP and the
                                    database variable (NOTES_DATABASE=ROOT/DB)

(the variables go through the runner's ``env``, never into the argv).

A server database (PostgreSQL, MariaDB) is named by its URL instead of a
path: it is given to the app as it is (no node root), its password in the
app's ``NAME_DATABASE_PASSWORD`` (from ``database.password_env`` of releaser's
own environment), and the app's ``dump`` is ``pg_dump --format=custom`` or
``mariadb-dump --single-transaction``, proven by a restore into a scratch
database on the same server.  The report's rows per table (``tables``) and
schema version are recorded, and every later verification must give them again.

A node that runs a version has a database: the app creates it when it first
starts.  None at ``database.path`` there means the path is wrong, and an
upgrade would go ahead with no backup of the data: ``dump_database`` refuses.

Central layout and index (``dumps/ENV/index.json``)::

    dumps/ENV/NODE/releaser-VERSION-YYYYMMDDTHHMMSSZ.db
    {"format": 1, "dumps": [{"node", "version", "node_path", "central_path", "size",
                             "sha256", "schema_version", "notes", "created"}, ...]}
"""

from __future__ import annotations

import json
import os
import posixpath

from releaser.appcontract import (DUMP, REPORT_FIELDS, RESTORE, STATS, VERIFY_DUMP,
                                  AppContract, write_marks)
from releaser.build import versions as versioning
from releaser.backup.common import (COPY_FAILURES, DumpBackup, check_component,
                            iso, is_url, local_scratch, on_node, pull, push, read_index,
                            reason, update_index, utc_now)
from releaser.central.repository import CentralRepository
from releaser.errors import BackupError, last_line
from releaser.hosts.node import Node

#: A database dump of a large database can take a while; a hung one must not
#: hold a night-time rollout forever.
APP_TIMEOUT = 3600.0
#: The dump file's extension by backend (a URL's scheme; a path is SQLite).
_EXTENSIONS = {"postgresql": ".pgdump", "postgres": ".pgdump", "mariadb": ".sql", "mysql": ".sql"}


def index_path(central: CentralRepository, env: str) -> str:
    return central.path("dumps", check_component(env, "environment"), "index.json")


def dump_database(node: Node, central: CentralRepository, env: str, app: AppContract,
                  db_path: str, version: str, *, password: str | None = None) -> DumpBackup:
    """Dump, verify and store the database of the node, which runs ``version``.

    ``version`` is the app version running now (the one a restore of this
    dump goes with).  Raises BackupError naming the node and the reason when
    there is no database at ``db_path`` (the app has run there, so the path
    is wrong), or the dump fails, does not verify, or changes on its way to
    the central host.  A node that runs nothing yet is not backed up at all.
    """
    versioning.validate(version)
    check_component(node.name, "node")
    if not is_url(db_path) and not node.runner.run(
            ["test", "-f", on_node(node.root, db_path)], check=False).ok:
        raise BackupError(f"{node.name}: {app.name} {version} runs here, but its database "
                          f"{db_path} (database.path) does not exist: its data cannot be "
                          f"backed up; correct database.path")
    out = _fresh_name(node, dump_dir(app, db_path), version, _extension(db_path))
    dumped = _app(node, app, db_path, DUMP, out, what="database dump", password=password)
    checked = _app(node, app, db_path if is_url(db_path) else None, VERIFY_DUMP, out,
                   what="dump verification", password=password)
    _same_dump(node, out, dumped, checked)

    name = posixpath.basename(out)
    target = central.path("dumps", check_component(env, "environment"), node.name, name)
    with local_scratch() as tmp:
        pull(node.runner, out, tmp / name, "sha256", dumped["sha256"])
        push(central.runner, tmp / name, target, "sha256", dumped["sha256"])

    dump = DumpBackup(node=node.name, version=version, node_path=out, central_path=target,
                      size=int(checked["size"]), sha256=checked["sha256"],
                      schema_version=int(checked["schema_version"]),
                      notes=int(checked["notes"]), created=iso(utc_now()), app=app.name,
                      writes=write_marks(checked), backend=str(checked.get("backend", "sqlite")),
                      tables=_tables(checked), database=db_path if is_url(db_path) else "")
    update_index(central, index_path(central, env), "dumps", [],
                 lambda data: data["dumps"].append(dump.to_index()))
    return dump


def list_dumps(central: CentralRepository, env: str) -> list[DumpBackup]:
    """Every dump recorded for ``env``, oldest first."""
    entries = read_index(central, index_path(central, env), "dumps", [])["dumps"]
    return sorted((DumpBackup.from_index(e) for e in entries), key=lambda d: d.created)


def latest_dump(central: CentralRepository, env: str, node_name: str, *,
                version: str | None = None) -> DumpBackup | None:
    """The newest dump of ``node_name``'s database (taken while ``version`` ran, if given)."""
    found = [d for d in list_dumps(central, env)
             if d.node == node_name and (version is None or d.version == version)]
    return found[-1] if found else None


def verify_dump_on_node(node: Node, dump: DumpBackup, central: CentralRepository | None = None,
                        app: AppContract | None = None, *, password: str | None = None) -> dict:
    """Prove ``dump`` restorable on the node, fetching it from ``central`` if the node lacks it.

    Returns the app's ``verify-dump`` report.  A dump that is truncated,
    corrupted, not a database of the app, or not the recorded bytes is a
    BackupError: a restore must never start from it.  Without ``central``, a
    dump missing from the node (a rebuilt node) is a BackupError too.
    ``app`` defaults to the contract of the app recorded with the dump
    (verifying a SQLite dump needs only its code, not its database variable; a
    server dump is restored on the server it was taken from, with ``password``).
    """
    app = app or AppContract(dump.app)
    if not node.runner.run(["test", "-f", dump.node_path], check=False).ok:
        if central is None:
            raise BackupError(f"{node.name}: dump {dump.name} is not on the node, and no "
                              "central repository was given to fetch it from")
        with local_scratch() as tmp:
            local = tmp / dump.name
            pull(central.runner, dump.central_path, local, "sha256", dump.sha256)
            push(node.runner, local, dump.node_path, "sha256", dump.sha256)
    return _verify(node, app, dump, password)


def restore_database(node: Node, app: AppContract, db_path: str, dump: DumpBackup, *,
                     password: str | None = None) -> dict:
    """Replace the node's database with ``dump`` (service stopped by the caller).

    The dump must already be on the node (``verify_dump_on_node`` puts it
    there); it is verified again here against its recorded sha256 and schema,
    and the app's ``restore`` reports the sha256 it restored, checked too.
    Returns the app's report (``database`` is the restored path).
    """
    if not node.runner.run(["test", "-f", dump.node_path], check=False).ok:
        raise BackupError(f"{node.name}: dump {dump.node_path} is not on the node; "
                          "verify it on the node first (that copies it from central)")
    _verify(node, app, dump, password)
    restored = _app(node, app, db_path, RESTORE, dump.node_path, what="restore",
                    password=password)
    if restored.get("sha256") != dump.sha256:
        raise BackupError(f"{node.name}: restore of {dump.name} reported sha256 "
                          f"{str(restored.get('sha256'))[:16]}..., not the recorded one")
    return restored


# ------------------------------------------------------------------------- internals


def database_writes(node: Node, app: AppContract, db_path: str, *,
                    password: str | None = None) -> dict[str, int] | None:
    """The write high-water marks of the node's live database (the app's ``stats``).

    None when the installed app cannot tell (an app without ``stats`` or
    ``writes``, no database, a command that fails): a plan then says less,
    it is never stopped by it.
    """
    report = database_stats(node, app, db_path, password=password)
    return write_marks(report)


def database_stats(node: Node, app: AppContract, db_path: str, *,
                   password: str | None = None) -> dict | None:
    """The app's ``stats`` of the node's live database (schema version, rows, write
    marks, migrations applied with their kinds), or None when it cannot tell."""
    argv, env = app_command(node.root, app, db_path, STATS, password=password)
    try:
        result = node.runner.run(argv, check=False, env=env, timeout=APP_TIMEOUT)
        report = json.loads(result.stdout) if result.ok else None
    except (*COPY_FAILURES, ValueError):
        return None
    return report if isinstance(report, dict) else None


def app_command(root: str, app: AppContract, db_path: str | None, action: str,
                argument: str | None = None, *,
                password: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The app's maintenance command (argv, environment) with its code and database under ``root``.

    The variables are for the runner's ``env``: out of the argv, so neither
    ``ps`` on the host nor an error message shows them.  A server database's
    URL is given as it is, with its password (``password``, else releaser's
    own ``NAME_DATABASE_PASSWORD``).
    """
    if db_path is None or not is_url(db_path):
        database = None if db_path is None else on_node(root, db_path)
        return (app.command(action, argument),
                app.environment(on_node(root, app.install_dir), database))
    env = app.environment(on_node(root, app.install_dir), db_path)
    password = password if password is not None else os.environ.get(app.password_env)
    if password:
        env[app.password_env] = password
    return app.command(action, argument), env


def dump_dir(app: AppContract, db_path: str) -> str:
    """Where a node keeps the dumps of ``db_path``: beside a SQLite file, else in the
    app's data folder (``/var/lib/NAME/backups``)."""
    return app.dump_dir(app.default_database_path if is_url(db_path) else db_path)


def _extension(db_path: str) -> str:
    return _EXTENSIONS.get(db_path.split("://", 1)[0], ".pgdump") if is_url(db_path) else ".db"


def _tables(report: dict) -> dict[str, int] | None:
    tables = report.get("tables")
    if not isinstance(tables, dict) or not all(
            isinstance(k, str) and isinstance(v, int) for k, v in tables.items()):
        return None
    return dict(tables)


def _app(node: Node, app: AppContract, db_path: str | None, action: str, argument: str, *,
         what: str, password: str | None = None) -> dict:
    """Run an app command that prints a JSON report; BackupError with its own words if not."""
    argv, env = app_command(node.root, app, db_path, action, argument, password=password)
    try:
        result = node.runner.run(argv, check=False, env=env, timeout=APP_TIMEOUT)
    except COPY_FAILURES as exc:
        raise BackupError(f"{node.name}: {what} failed: {reason(exc)}") from exc
    if not result.ok:
        why = last_line(result.stderr, result.stdout, default=f"exit status {result.returncode}")
        raise BackupError(f"{node.name}: {what} failed: {why}")
    try:
        report = json.loads(result.stdout)
    except ValueError:
        report = None
    if not isinstance(report, dict) or not report.get("sha256") \
            or not set(REPORT_FIELDS) <= set(report):
        raise BackupError(f"{node.name}: {what} printed no report: {result.stdout.strip()[:200]!r}")
    if report.get("integrity") != "ok":
        raise BackupError(f"{node.name}: {what}: integrity {report.get('integrity')!r}")
    return report


def _verify(node: Node, app: AppContract, dump: DumpBackup, password: str | None) -> dict:
    report = _app(node, app, dump.database or None, VERIFY_DUMP, dump.node_path,
                  what="dump verification", password=password)
    if report["sha256"] != dump.sha256:
        raise BackupError(f"{node.name}: {dump.node_path} is not the recorded dump "
                          f"(sha256 {report['sha256'][:16]}... instead of {dump.sha256[:16]}...)")
    if int(report["schema_version"]) != dump.schema_version:
        raise BackupError(f"{node.name}: {dump.node_path} has schema {report['schema_version']}, "
                          f"recorded {dump.schema_version}")
    if dump.tables is not None and _tables(report) != dump.tables:
        raise BackupError(f"{node.name}: {dump.node_path} restores to rows {_tables(report)}, "
                          f"recorded {dump.tables}")
    return report


def _same_dump(node: Node, out: str, dumped: dict, checked: dict) -> None:
    """The verified file is the one the dump wrote (the copy to central re-checks the bytes)."""
    if checked["sha256"] != dumped["sha256"] or checked["size"] != dumped["size"]:
        raise BackupError(f"{node.name}: {out} changed between dump and verification "
                          f"(sha256 {dumped['sha256'][:16]}... then {checked['sha256'][:16]}...)")
    if (checked["schema_version"], _tables(checked)) != (dumped["schema_version"], _tables(dumped)):
        raise BackupError(f"{node.name}: {out} restores to rows {_tables(checked)} at schema "
                          f"{checked['schema_version']}, the dump reported {_tables(dumped)} at "
                          f"schema {dumped['schema_version']}")


def _fresh_name(node: Node, directory: str, version: str, extension: str = ".db") -> str:
    """``releaser-VERSION-STAMP.EXT`` in the node's dump directory, never an existing file."""
    directory = on_node(node.root, directory)
    stamp = utc_now().strftime("%Y%m%dT%H%M%SZ")
    for n in range(1, 100):
        suffix = "" if n == 1 else f"-{n}"
        path = posixpath.join(directory, f"releaser-{version}-{stamp}{suffix}{extension}")
        if not node.runner.run(["test", "-e", path], check=False).ok:
            return path
    raise BackupError(f"{node.name}: no free dump name in {directory} for {stamp}")


__all__ = ["APP_TIMEOUT", "app_command", "database_stats", "database_writes", "dump_database",
           "dump_dir", "index_path",
           "latest_dump", "list_dumps", "restore_database", "verify_dump_on_node"]
