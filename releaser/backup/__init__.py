"""The backups taken before every install on a node, and the way back from them.

A rollback is only as real as its backups, so before a node is upgraded
releaser makes two, and proves both:

* a **binary package of the running version** (``quickpkg --include-config=y``,
  gpkg), kept on the node's PKGDIR *and* on the central host
  (``binpkgs/ENV/CATEGORY/PF.gpkg.tar``; on the node wherever its Portage
  puts it), so even a rebuilt node can
  reinstall the old version with ``emerge --usepkgonly``
  (``releaser.backup.binpkg``);
* a **verified dump of the database**, written on the node by the app's own
  ``dump`` command (SQLite online backup API), proven restorable by its
  ``verify-dump``, and copied to ``dumps/ENV/NODE/`` with its sha256 checked
  at every hop (``releaser.backup.dump``).

Any failure raises ``BackupError``: the caller must then leave the node on
its current version.  Retention and listing live in ``releaser.backup.retention``;
shared records, digests and verified copies in ``releaser.backup.common``.
Nothing here prints: results are returned, failures raised.

Index files on the central host are rewritten read-modify-write; callers
hold the environment's lock (``releaser.central.lock``) so runs never interleave, and
one in-process lock covers nodes handled in parallel threads.

Import everything from this module::

    from releaser.backup import BackupError, backup_package, dump_database, ...
"""

from __future__ import annotations

from releaser.backup.binpkg import backup_package, central_path, ensure_binpkg_on_node, find_binpkg
from releaser.backup.binpkg import index_path as binpkg_index_path
from releaser.backup.binpkg import node_binpkg_paths
from releaser.backup.common import BinpkgBackup, DumpBackup
from releaser.errors import BackupError
from releaser.backup.dump import (app_command, database_stats, database_writes, dump_database,
                                  dump_dir, latest_dump, list_dumps, restore_database,
                                  verify_dump_on_node)
from releaser.backup.dump import index_path as dump_index_path
from releaser.backup.retention import apply_retention, format_backups, list_backups

__all__ = [
    "BackupError",
    "BinpkgBackup",
    "DumpBackup",
    "app_command",
    "apply_retention",
    "backup_package",
    "binpkg_index_path",
    "central_path",
    "database_stats",
    "database_writes",
    "dump_database",
    "dump_dir",
    "dump_index_path",
    "ensure_binpkg_on_node",
    "find_binpkg",
    "format_backups",
    "latest_dump",
    "list_backups",
    "list_dumps",
    "node_binpkg_paths",
    "restore_database",
    "verify_dump_on_node",
]
