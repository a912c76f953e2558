"""Binary packages of the running version, kept on the central host for rollback.

Before a node is upgraded, ``backup_package`` packs what it runs with
``quickpkg --include-config=y`` (the real ``/etc`` files, not the empty
placeholders plain quickpkg stores) and stores a copy on the central host,
because a node that is later rebuilt has lost its own PKGDIR.
``ensure_binpkg_on_node`` is the way back: it puts the package into the
node's PKGDIR (if missing) so ``emerge --usepkgonly`` can reinstall it.

Central layout and index (``binpkgs/ENV/index.json``)::

    binpkgs/ENV/CATEGORY/PF.gpkg.tar
    {"format": 1, "packages": {"CAT/PF": {
        "cpv", "node", "node_path", "central_path", "size", "sha512", "created",
        "nodes": {"NODE": {"node_path", "size", "sha512", "created"}}}}}

The top-level fields describe the central copy and where it was made.
``nodes`` remembers each node's own package of that version: quickpkg stamps
every run with new times, so two nodes (or two runs) never make the same
bytes, and the per-node digest is what lets a second backup of an unchanged
node skip quickpkg.  The central copy of a version is never replaced while it
verifies: any verified package of the version serves a rollback, and a stored
rollback artifact that changes under the same name is one nobody can trust.
"""

from __future__ import annotations

import posixpath
import threading

from portage.versions import catsplit, cpv_getkey, cpv_getversion

from . import portage_tools
from .backup_common import (COPY_FAILURES, INDEX_FORMAT, BackupError, BinpkgBackup,
                            check_component, host_digest, host_size, iso, local_scratch,
                            pull, push, read_index, reason, update_index, utc_now)
from .central import CentralRepository
from .errors import NodeError
from .node import Node

#: Nodes backed up in parallel threads often run the same version: one of
#: them stores the central copy, the others find it there and only add their
#: own digest to the index.
_CENTRAL_LOCK = threading.Lock()

GPKG_SUFFIX = ".gpkg.tar"
#: Members every gpkg holds besides its optional signatures (GLEP 78).
_GPKG_MEMBERS = ("gpkg-1", "metadata.tar", "image.tar")


def index_path(central: CentralRepository, env: str) -> str:
    return central.path("binpkgs", check_component(env, "environment"), "index.json")


def central_path(central: CentralRepository, env: str, cpv: str) -> str:
    """``binpkgs/ENV/CATEGORY/PF.gpkg.tar``: the node's PKGDIR layout, per environment."""
    category, pf = catsplit(cpv)
    return central.path("binpkgs", check_component(env, "environment"), category,
                        pf + GPKG_SUFFIX)


def node_binpkg_path(node: Node, cpv: str) -> str:
    """Where the node's Portage keeps ``cpv``'s package (``-binpkg-multi-instance``)."""
    category, pf = catsplit(cpv)
    try:
        pkgdir = portage_tools.pkgdir(node.runner)
    except NodeError as exc:
        raise BackupError(f"{node.name}: cannot ask Portage for PKGDIR: {exc}") from exc
    return posixpath.join(pkgdir, category, pf + GPKG_SUFFIX)


def find_binpkg(central: CentralRepository, env: str, cpv: str) -> BinpkgBackup | None:
    """The rollback package of ``cpv`` recorded for ``env``, or None."""
    cpv = portage_tools.validate_cpv(cpv)
    entry = _packages(central, env).get(cpv)
    return BinpkgBackup.from_index(entry) if entry else None


def backup_package(node: Node, central: CentralRepository, env: str, cpv: str) -> BinpkgBackup:
    """Make sure a verified binary package of the running ``cpv`` exists on the node and centrally.

    Idempotent: quickpkg runs only when the node has no package of ``cpv``
    that is a valid gpkg with a digest this index recorded; the central copy
    is uploaded only when the central host has no verified one.  Raises
    BackupError when ``cpv`` is not what the node runs, quickpkg fails, or a
    copy does not verify.
    """
    cpv = portage_tools.validate_cpv(cpv)
    _check_running(node, cpv)
    entry = _packages(central, env).get(cpv)
    mine, made = _node_package(node, cpv, entry)
    with _CENTRAL_LOCK:
        return _store_centrally(node, central, env, cpv, mine, made)


def _store_centrally(node: Node, central: CentralRepository, env: str, cpv: str, mine: dict,
                     made: bool) -> BinpkgBackup:
    entry = _packages(central, env).get(cpv)
    uploaded = not _central_copy_verifies(central, entry)
    if uploaded:
        target = central_path(central, env, cpv)
        _upload(node, central, mine["node_path"], target, mine["sha512"])
        entry = {"cpv": cpv, "node": node.name, "central_path": target, **mine,
                 "nodes": (entry or {}).get("nodes", {})}
    elif not made and _node_record(entry, node.name) == mine:
        return BinpkgBackup.from_index(entry)  # nothing changed: the index stays as it is

    def record(data: dict) -> dict:
        stored = entry if uploaded else data["packages"].get(cpv, entry)
        stored.setdefault("nodes", {})[node.name] = mine
        data["packages"][cpv] = stored
        return stored

    stored = update_index(central, index_path(central, env), "packages", {}, record)
    return BinpkgBackup.from_index(stored, made=made, uploaded=uploaded)


def ensure_binpkg_on_node(node: Node, central: CentralRepository, env: str, cpv: str) -> str:
    """The node's PKGDIR path of ``cpv``'s package, copied there from central if needed.

    The rollback path of a rebuilt node.  A package already on the node is
    kept when it is a valid gpkg with a recorded digest; otherwise the
    central copy is fetched, checked against its sha512, placed, and
    Portage's PKGDIR index is refreshed (``emaint binhost --fix``): the index
    is trusted (FEATURES=pkgdir-index-trusted), and a package it does not
    describe fails emerge's MD5 check and is renamed aside.
    """
    cpv = portage_tools.validate_cpv(cpv)
    entry = _packages(central, env).get(cpv)
    if entry is None:
        raise BackupError(f"no binary package of {cpv} is kept for {env}: "
                          f"{node.name} cannot be rolled back to it from a package")
    node_path = node_binpkg_path(node, cpv)
    if _node_copy_verifies(node, node_path, cpv, _known_digests(entry, node.name)):
        return node_path
    with local_scratch() as tmp:
        local = tmp / posixpath.basename(node_path)
        pull(central.runner, entry["central_path"], local, "sha512", entry["sha512"])
        push(node.runner, local, node_path, "sha512", entry["sha512"], mode="0640")
    _refresh_pkgdir_index(node)
    return node_path


# ------------------------------------------------------------------------- internals


def _packages(central: CentralRepository, env: str) -> dict:
    return read_index(central, index_path(central, env), "packages", {})["packages"]


def _node_record(entry: dict | None, node_name: str) -> dict | None:
    return (entry or {}).get("nodes", {}).get(node_name)


def _known_digests(entry: dict | None, node_name: str) -> set[str]:
    """Digests of packages of this version that this index vouches for on ``node_name``."""
    if entry is None:
        return set()
    known = {entry["sha512"]}
    mine = _node_record(entry, node_name)
    if mine:
        known.add(mine["sha512"])
    return known


def _node_package(node: Node, cpv: str, entry: dict | None) -> tuple[dict, bool]:
    """The node's package of ``cpv`` as a ``nodes`` record, and whether quickpkg made it now."""
    node_path = node_binpkg_path(node, cpv)
    made = not _node_copy_verifies(node, node_path, cpv, _known_digests(entry, node.name))
    if made:
        node_path = _quickpkg(node, cpv)
    sha512 = host_digest(node.runner, node_path, "sha512")
    if sha512 is None:
        raise BackupError(f"{node.name}: quickpkg reported {node_path}, which does not exist")
    previous = _node_record(entry, node.name)
    unchanged = previous is not None and not made and previous["sha512"] == sha512
    return {"node_path": node_path, "size": host_size(node.runner, node_path), "sha512": sha512,
            "created": previous["created"] if unchanged else iso(utc_now())}, made


def _check_running(node: Node, cpv: str) -> None:
    try:
        running = node.installed_version(cpv_getkey(cpv))
    except NodeError as exc:
        raise BackupError(f"{node.name}: cannot read the installed version: {exc}") from exc
    if running != cpv_getversion(cpv):
        raise BackupError(f"{node.name}: cannot back up {cpv}: the node runs "
                          f"{running or 'no version'} of {cpv_getkey(cpv)}")


def _quickpkg(node: Node, cpv: str) -> str:
    try:
        path = str(portage_tools.quickpkg(node.runner, cpv, include_config=True))
    except (NodeError, *COPY_FAILURES) as exc:
        raise BackupError(f"{node.name}: quickpkg of {cpv} failed: {exc}") from exc
    if not _is_valid_gpkg(node, path, cpv):
        raise BackupError(f"{node.name}: quickpkg of {cpv} did not leave a valid gpkg at {path}")
    return path


def _node_copy_verifies(node: Node, path: str, cpv: str, known: set[str]) -> bool:
    """True when ``path`` holds a package this index vouches for, and it is a valid gpkg."""
    if not known:
        return False
    return host_digest(node.runner, path, "sha512") in known and _is_valid_gpkg(node, path, cpv)


def _is_valid_gpkg(node: Node, path: str, cpv: str) -> bool:
    """``tar -tf`` reads the whole archive and it holds the gpkg members of ``cpv``."""
    result = node.runner.run(["tar", "-tf", path], check=False)
    if not result.ok:
        return False
    names = set(result.stdout.split())
    pf = catsplit(cpv)[1]
    return all(any(n == f"{pf}/{m}" or n.startswith(f"{pf}/{m}.") for n in names)
               for m in _GPKG_MEMBERS)


def _central_copy_verifies(central: CentralRepository, entry: dict | None) -> bool:
    if entry is None:
        return False
    return host_digest(central.runner, entry["central_path"], "sha512") == entry["sha512"]


def _upload(node: Node, central: CentralRepository, node_path: str, target: str,
            sha512: str) -> None:
    """Node -> local temporary file -> central, the digest checked at both hops."""
    with local_scratch() as tmp:
        local = tmp / posixpath.basename(node_path)
        pull(node.runner, node_path, local, "sha512", sha512)
        push(central.runner, local, target, "sha512", sha512)


def _refresh_pkgdir_index(node: Node) -> None:
    """Make Portage's PKGDIR ``Packages`` index describe the files really there."""
    try:
        node.runner.run(["emaint", "binhost", "--fix"])
    except COPY_FAILURES as exc:
        raise BackupError(f"{node.name}: emaint binhost --fix failed: {reason(exc)}") from exc


__all__ = ["INDEX_FORMAT", "backup_package", "central_path", "ensure_binpkg_on_node",
           "find_binpkg", "index_path", "node_binpkg_path"]
