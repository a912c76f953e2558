"""Binary packages of the running version, kept on the central host for rollback.

Before a node is upgraded, ``backup_package`` packs what it runs with
``quickpkg --include-config=y`` (the real ``/etc`` files, not the empty
placeholders plain quickpkg stores) and stores a copy on the central host,
because a node that is later rebuilt has lost its own PKGDIR.
``ensure_binpkg_on_node`` is the way back: it puts the package into the
node's PKGDIR (if missing) so ``emerge --usepkgonly`` can reinstall it.

Where a package lives on a node is Portage's business, asked every time
(``bintree.binpkg_paths``): ``PKGDIR/CAT/PF.gpkg.tar`` with
``FEATURES=-binpkg-multi-instance`` (the sandbox), any number of
``PKGDIR/CAT/PN/PF-N.gpkg.tar`` on a stock Gentoo host, where every quickpkg
adds one and emerge picks the newest by build time.  So that emerge can only
pick a package this index vouches for, a rollback sets every other package
of the version aside (renamed to ``NAME.releaser-unverified-XXXXXXXX``, which
Portage ignores; nothing is deleted) and refreshes the PKGDIR index.

Central layout and index (``binpkgs/ENV/index.json``)::

    binpkgs/ENV/CATEGORY/PF.gpkg.tar          (one file per version, whatever the nodes use)
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
import uuid
from pathlib import PurePosixPath

from portage.versions import catsplit, cpv_getkey, cpv_getversion

from releaser.hosts import bintree
from releaser.hosts import portage_commands as portage_tools
from releaser.backup.common import (COPY_FAILURES, INDEX_FORMAT, BinpkgBackup, check_component,
                                    host_digest, iso, local_scratch, pull, push, read_index,
                                    reason, update_index, utc_now)
from releaser.central.repository import CentralRepository
from releaser.errors import BackupError, NodeError
from releaser.hosts.node import Node
from releaser.hosts.transfer import host_size
from releaser.trust import packages

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


def node_binpkg_paths(node: Node, cpv: str) -> list[str]:
    """Every package of ``cpv`` the node's PKGDIR index lists, as Portage names them."""
    try:
        return [str(p) for p in bintree.binpkg_paths(node.runner, cpv)]
    except NodeError as exc:
        raise BackupError(f"{node.name}: cannot ask Portage for the binary packages of "
                          f"{cpv}: {exc}") from exc


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
    uploaded = not _central_copy_verifies(central, entry, env)
    if uploaded:
        target = central_path(central, env, cpv)
        _upload(node, central, env, mine["node_path"], target, mine["sha512"])
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

    On return every package of ``cpv`` the node's Portage lists is one this
    index vouches for (a valid gpkg with a recorded digest), so
    ``emerge --usepkgonly =CPV`` installs a verified package whichever it
    picks; the others are set aside.  Without one on the node (a rebuilt
    node), the central copy is fetched, checked against its sha512, placed
    where Portage allocates a new package of ``cpv`` (a free build id on a
    multi-instance host), and Portage's PKGDIR index is refreshed: the index
    is trusted (FEATURES=pkgdir-index-trusted), so a package it does not
    list is invisible to emerge.
    """
    cpv = portage_tools.validate_cpv(cpv)
    entry = _packages(central, env).get(cpv)
    if entry is None:
        raise BackupError(f"no binary package of {cpv} is kept for {env}: "
                          f"{node.name} cannot be rolled back to it from a package")
    known = _known_digests(entry, node.name)
    kept = _keep_only_vouched(node, cpv, known)
    if kept:
        return kept[0]
    node_path = _place_from_central(node, central, env, cpv, entry)
    if node_path not in _keep_only_vouched(node, cpv, known):
        raise BackupError(f"{node.name}: Portage does not list {node_path} as a package of "
                          f"{cpv} after emaint binhost --fix")
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
    known = _known_digests(entry, node.name)
    listed = node_binpkg_paths(node, cpv)
    node_path = next((p for p in listed if _node_copy_verifies(node, p, cpv, known)), None)
    made = node_path is None
    if made:
        node_path = _quickpkg(node, cpv, listed)
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


def _quickpkg(node: Node, cpv: str, listed: list[str]) -> str:
    """quickpkg ``cpv``; ``listed``: the node's packages of it just read (what is new
    after quickpkg is its package)."""
    try:
        path = str(portage_tools.quickpkg(node.runner, cpv, include_config=True,
                                          before=[PurePosixPath(p) for p in listed]))
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


def _central_copy_verifies(central: CentralRepository, entry: dict | None, env: str) -> bool:
    if entry is None:
        return False
    return (host_digest(central.runner, entry["central_path"], "sha512") == entry["sha512"]
            and packages.is_signed(central, env, entry["central_path"]))


def _upload(node: Node, central: CentralRepository, env: str, node_path: str, target: str,
            sha512: str) -> None:
    """Node -> local temporary file -> central, the digest checked at both hops; with
    ``[trust]`` the local bytes are signed here, on the operator's side
    (``releaser.trust.packages``)."""
    with local_scratch() as tmp:
        local = tmp / posixpath.basename(node_path)
        pull(node.runner, node_path, local, "sha512", sha512)
        push(central.runner, local, target, "sha512", sha512)
        packages.sign_package(central, env, local, target)


def _keep_only_vouched(node: Node, cpv: str, known: set[str]) -> list[str]:
    """The node's packages of ``cpv`` this index vouches for; the others are set aside.

    Setting aside renames (``NAME.releaser-unverified-XXXXXXXX``: not a
    package name, so Portage ignores it) and refreshes the PKGDIR index, so
    emerge can no longer pick a package nobody verified.  Nothing is deleted.
    """
    good, others = [], []
    for path in node_binpkg_paths(node, cpv):
        (good if _node_copy_verifies(node, path, cpv, known) else others).append(path)
    for path in others:
        _set_aside(node, path)
    if others:
        _refresh_pkgdir_index(node)
    return good


def _set_aside(node: Node, path: str) -> None:
    """Rename a package file Portage must not use; absent already is fine."""
    if not node.runner.run(["test", "-e", path], check=False).ok:
        return
    aside = f"{path}.releaser-unverified-{uuid.uuid4().hex[:8]}"
    try:
        node.runner.run(["mv", "--", path, aside])
    except COPY_FAILURES as exc:
        raise BackupError(f"{node.name}: cannot set aside the unverified package {path}: "
                          f"{reason(exc)}") from exc


def _place_from_central(node: Node, central: CentralRepository, env: str, cpv: str,
                        entry: dict) -> str:
    """Copy the central package of ``cpv`` to where Portage allocates a new one; refresh the
    index.  With ``[trust]`` only a package signed by the environment's release key."""
    try:
        node_path = str(bintree.allocate_binpkg_path(node.runner, cpv))
    except NodeError as exc:
        raise BackupError(f"{node.name}: cannot ask Portage where a package of {cpv} goes: "
                          f"{exc}") from exc
    # A file Portage does not list may sit at that name (one file per version):
    # it is not what the index vouches for, but it is not ours to delete.
    if node.runner.run(["test", "-s", node_path], check=False).ok:
        _set_aside(node, node_path)
    try:
        with local_scratch() as tmp:
            local = tmp / posixpath.basename(node_path)
            pull(central.runner, entry["central_path"], local, "sha512", entry["sha512"])
            packages.verify_package(central, env, local, entry["central_path"])
            push(node.runner, local, node_path, "sha512", entry["sha512"], mode="0640")
    except BaseException:
        # Portage reserves a new build id with an empty file: give it back.
        node.runner.run(["find", node_path, "-maxdepth", "0", "-type", "f", "-empty",
                         "-delete"], check=False)
        raise
    _refresh_pkgdir_index(node)
    return node_path


def _refresh_pkgdir_index(node: Node) -> None:
    """Make Portage's PKGDIR ``Packages`` index describe the files really there."""
    try:
        bintree.fix_binpkg_index(node.runner)
    except (NodeError, *COPY_FAILURES) as exc:
        raise BackupError(f"{node.name}: emaint binhost --fix failed: {reason(exc)}") from exc


__all__ = ["INDEX_FORMAT", "backup_package", "central_path", "ensure_binpkg_on_node",
           "find_binpkg", "index_path", "node_binpkg_paths"]
