"""How many backups an environment keeps, and what it holds (``releaser backups list ENV``).

Retention works on the central host, the store a rollback relies on; nodes
keep whatever their disks hold.  Per environment it keeps the newest ``keep``
binary packages (by version, Portage's order: the likely rollback targets)
and, per node, the newest ``keep`` dumps (by time taken), and never deletes
anything whose version is protected (the running version, the rollback
target), however old.  An index entry is removed before its file, so a
failure in between leaves an orphan file, never an entry pointing at nothing.
"""

from __future__ import annotations

from releaser.backup.binpkg import index_path as binpkg_index
from releaser.backup.common import (COPY_FAILURES, BinpkgBackup, DumpBackup, read_index,
                            reason, update_index)
from releaser.backup.dump import index_path as dump_index
from releaser.backup.dump import list_dumps
from releaser.build import versions as versioning
from releaser.central.repository import CentralRepository
from releaser.errors import BackupError, UsageError

BINPKG, DUMP = "binpkg", "dump"
COLUMNS = ("kind", "node", "version", "size", "created", "path", "detail")


def list_backups(central: CentralRepository, env: str) -> list[dict]:
    """Every backup kept for ``env``: packages (newest version first), then dumps (newest first).

    Rows: ``kind`` ("binpkg"/"dump"), ``node`` (where it was made), ``version``,
    ``size`` (bytes), ``created`` (ISO UTC), ``path`` (on the central host),
    ``detail`` (dumps: schema version and note count).
    """
    return _package_rows(central, env) + _dump_rows(central, env)


def apply_retention(central: CentralRepository, env: str, keep: int,
                    protect: set[str]) -> list[dict]:
    """Delete all but the newest ``keep`` backups of ``env``; return the removed rows.

    Packages are counted per environment, dumps per node.  Anything whose
    version is in ``protect`` is kept as well, wherever it falls.
    """
    if not isinstance(keep, int) or keep < 0:
        raise UsageError(f"backups to keep must be a whole number >= 0, not {keep!r}")
    removed = _prune_packages(central, env, keep, protect) + _prune_dumps(central, env, keep,
                                                                         protect)
    failed = []
    for row in removed:
        try:
            central.runner.run(["rm", "-f", "--", row["path"]])
        except COPY_FAILURES as exc:
            failed.append(f"{row['path']}: {reason(exc)}")
    if failed:
        raise BackupError(f"central repository: {len(failed)} backup file(s) dropped from the "
                          f"index could not be deleted (orphans): {failed[0]}")
    return removed


def format_backups(rows: list[dict]) -> str:
    """A plain-text table of ``list_backups`` rows (sizes human-readable)."""
    if not rows:
        return "no backups"
    cells = [[str(c).upper() for c in COLUMNS]]
    for row in rows:
        cells.append([_human_size(row["size"]) if c == "size" else str(row.get(c) or "-")
                      for c in COLUMNS])
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                     for line in cells)


# ------------------------------------------------------------------------- internals


def _package_rows(central: CentralRepository, env: str) -> list[dict]:
    data = read_index(central, binpkg_index(central, env), "packages", {})
    return [row for _, row in _keyed_package_rows(data)]


def _dump_rows(central: CentralRepository, env: str) -> list[dict]:
    return [row for _, row in _keyed_dump_rows(list_dumps(central, env))]


def _keyed_package_rows(data: dict) -> list[tuple[str, dict]]:
    """(cpv, row) per package, newest version first."""
    packages = sorted((BinpkgBackup.from_index(e) for e in data["packages"].values()),
                      key=lambda b: versioning.sort_key(b.version), reverse=True)
    return [(b.cpv, {"kind": BINPKG, "node": b.node, "version": b.version, "size": b.size,
                     "created": b.created, "path": b.central_path, "detail": b.cpv})
            for b in packages]


def _keyed_dump_rows(dumps: list[DumpBackup]) -> list[tuple[str, dict]]:
    """(central path, row) per dump, newest first."""
    return [(d.central_path, {"kind": DUMP, "node": d.node, "version": d.version,
                              "size": d.size, "created": d.created, "path": d.central_path,
                              "detail": f"schema {d.schema_version}, {d.notes} notes"})
            for d in sorted(dumps, key=lambda d: d.created, reverse=True)]


def _doomed(rows: list[tuple[str, dict]], keep: int, protect: set[str]) -> list[tuple[str, dict]]:
    """Rows (newest first) past the newest ``keep``, except protected versions."""
    return [(key, row) for key, row in rows[keep:] if row["version"] not in protect]


def _prune_packages(central: CentralRepository, env: str, keep: int,
                    protect: set[str]) -> list[dict]:
    def change(data: dict) -> list[dict]:
        doomed = _doomed(_keyed_package_rows(data), keep, protect)
        for cpv, _ in doomed:
            del data["packages"][cpv]
        return [row for _, row in doomed]

    return update_index(central, binpkg_index(central, env), "packages", {}, change)


def _prune_dumps(central: CentralRepository, env: str, keep: int,
                 protect: set[str]) -> list[dict]:
    def change(data: dict) -> list[dict]:
        rows = _keyed_dump_rows([DumpBackup.from_index(e) for e in data["dumps"]])
        doomed = []
        for node in sorted({row["node"] for _, row in rows}):
            doomed += _doomed([r for r in rows if r[1]["node"] == node], keep, protect)
        paths = {path for path, _ in doomed}
        data["dumps"] = [e for e in data["dumps"] if e["central_path"] not in paths]
        return [row for _, row in doomed]

    return update_index(central, dump_index(central, env), "dumps", [], change)


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{size}B"
