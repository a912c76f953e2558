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
import posixpath

from releaser.appcontract import (DUMP, REPORT_FIELDS, RESTORE, STATS, VERIFY_DUMP,
                                  AppContract, write_marks)
from releaser.build import versions as versioning
from releaser.backup.common import (COPY_FAILURES, DumpBackup, check_component,
                            iso, local_scratch, on_node, pull, push, read_index,
                            reason, update_index, utc_now)
from releaser.central.repository import CentralRepository
from releaser.errors import BackupError, last_line
from releaser.hosts.node import Node

#: A database dump of a large database can take a while; a hung one must not
#: hold a night-time rollout forever.
APP_TIMEOUT = 3600.0


def index_path(central: CentralRepository, env: str) -> str:
    return central.path("dumps", check_component(env, "environment"), "index.json")


def dump_database(node: Node, central: CentralRepository, env: str, app: AppContract,
                  db_path: str, version: str) -> DumpBackup:
    """Dump, verify and store the database of the node, which runs ``version``.

    ``version`` is the app version running now (the one a restore of this
    dump goes with).  Raises BackupError naming the node and the reason when
    there is no database at ``db_path`` (the app has run there, so the path
    is wrong), or the dump fails, does not verify, or changes on its way to
    the central host.  A node that runs nothing yet is not backed up at all.
    """
    versioning.validate(version)
    check_component(node.name, "node")
    database = on_node(node.root, db_path)
    if not node.runner.run(["test", "-f", database], check=False).ok:
        raise BackupError(f"{node.name}: {app.name} {version} runs here, but its database "
                          f"{db_path} (database.path) does not exist: its data cannot be "
                          f"backed up; correct database.path")
    out = _fresh_name(node, app.dump_dir(db_path), version)
    dumped = _app(node, app, db_path, DUMP, out, what="database dump")
    checked = _app(node, app, None, VERIFY_DUMP, out, what="dump verification")
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
                      writes=write_marks(checked))
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
                        app: AppContract | None = None) -> dict:
    """Prove ``dump`` restorable on the node, fetching it from ``central`` if the node lacks it.

    Returns the app's ``verify-dump`` report.  A dump that is truncated,
    corrupted, not a database of the app, or not the recorded bytes is a
    BackupError: a restore must never start from it.  Without ``central``, a
    dump missing from the node (a rebuilt node) is a BackupError too.
    ``app`` defaults to the contract of the app recorded with the dump
    (verifying needs only its code, not its database variable).
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
    return _verify(node, app, dump)


def restore_database(node: Node, app: AppContract, db_path: str, dump: DumpBackup) -> dict:
    """Replace the node's database with ``dump`` (service stopped by the caller).

    The dump must already be on the node (``verify_dump_on_node`` puts it
    there); it is verified again here against its recorded sha256 and schema,
    and the app's ``restore`` reports the sha256 it restored, checked too.
    Returns the app's report (``database`` is the restored path).
    """
    if not node.runner.run(["test", "-f", dump.node_path], check=False).ok:
        raise BackupError(f"{node.name}: dump {dump.node_path} is not on the node; "
                          "verify it on the node first (that copies it from central)")
    _verify(node, app, dump)
    restored = _app(node, app, db_path, RESTORE, dump.node_path, what="restore")
    if restored.get("sha256") != dump.sha256:
        raise BackupError(f"{node.name}: restore of {dump.name} reported sha256 "
                          f"{str(restored.get('sha256'))[:16]}..., not the recorded one")
    return restored


# ------------------------------------------------------------------------- internals


def database_writes(node: Node, app: AppContract, db_path: str) -> dict[str, int] | None:
    """The write high-water marks of the node's live database (the app's ``stats``).

    None when the installed app cannot tell (an app without ``stats`` or
    ``writes``, no database, a command that fails): a plan then says less,
    it is never stopped by it.
    """
    argv, env = app_command(node.root, app, db_path, STATS)
    try:
        result = node.runner.run(argv, check=False, env=env, timeout=APP_TIMEOUT)
        report = json.loads(result.stdout) if result.ok else None
    except (*COPY_FAILURES, ValueError):
        return None
    return write_marks(report if isinstance(report, dict) else None)


def app_command(root: str, app: AppContract, db_path: str | None, action: str,
                argument: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The app's maintenance command (argv, environment) with its code and database under ``root``.

    The variables are for the runner's ``env``: out of the argv, so neither
    ``ps`` on the host nor an error message shows them.
    """
    database = None if db_path is None else on_node(root, db_path)
    return (app.command(action, argument),
            app.environment(on_node(root, app.install_dir), database))


def _app(node: Node, app: AppContract, db_path: str | None, action: str, argument: str, *,
         what: str) -> dict:
    """Run an app command that prints a JSON report; BackupError with its own words if not."""
    argv, env = app_command(node.root, app, db_path, action, argument)
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


def _verify(node: Node, app: AppContract, dump: DumpBackup) -> dict:
    report = _app(node, app, None, VERIFY_DUMP, dump.node_path, what="dump verification")
    if report["sha256"] != dump.sha256:
        raise BackupError(f"{node.name}: {dump.node_path} is not the recorded dump "
                          f"(sha256 {report['sha256'][:16]}... instead of {dump.sha256[:16]}...)")
    if int(report["schema_version"]) != dump.schema_version:
        raise BackupError(f"{node.name}: {dump.node_path} has schema {report['schema_version']}, "
                          f"recorded {dump.schema_version}")
    return report


def _same_dump(node: Node, out: str, dumped: dict, checked: dict) -> None:
    """The verified file is the one the dump wrote (the copy to central re-checks the bytes)."""
    if checked["sha256"] != dumped["sha256"] or checked["size"] != dumped["size"]:
        raise BackupError(f"{node.name}: {out} changed between dump and verification "
                          f"(sha256 {dumped['sha256'][:16]}... then {checked['sha256'][:16]}...)")


def _fresh_name(node: Node, dump_dir: str, version: str) -> str:
    """``releaser-VERSION-STAMP.db`` in the node's dump directory, never an existing file."""
    directory = on_node(node.root, dump_dir)
    stamp = utc_now().strftime("%Y%m%dT%H%M%SZ")
    for n in range(1, 100):
        suffix = "" if n == 1 else f"-{n}"
        path = posixpath.join(directory, f"releaser-{version}-{stamp}{suffix}.db")
        if not node.runner.run(["test", "-e", path], check=False).ok:
            return path
    raise BackupError(f"{node.name}: no free dump name in {directory} for {stamp}")


__all__ = ["APP_TIMEOUT", "app_command", "database_writes", "dump_database", "index_path",
           "latest_dump", "list_dumps", "restore_database", "verify_dump_on_node"]
