"""Portage's binary tree on a host: where its packages are, where a new one goes.

A host's binary packages (PKGDIR, its ``Packages`` index) are what rollback
installs from and what the roll-forward snapshot adds to.  Asking the host's
own Portage (``portage.db[EROOT]["bintree"]``) is the only way to learn its
PKGDIR and its naming (``binpkg-multi-instance``) as emerge and quickpkg
see them; that costs a Python start and ``import portage`` there, so it is
asked once per connection and the index is read by one ``cat`` after that,
parsed here with Portage's own ``PackageIndex``.
"""

from __future__ import annotations

import io
import json
import posixpath
import weakref
from dataclasses import dataclass
from pathlib import PurePosixPath

from portage.getbinpkg import PackageIndex

from releaser.errors import PortageError, last_line
from releaser.hosts.portage_commands import _run, validate_cpv
from releaser.hosts.runner import CommandResult, Runner


#: Asks Portage's binary tree (``portage.db[EROOT]["bintree"]``) of the host's
#: own configuration, the one emerge and quickpkg use there: its PKGDIR and
#: whether it keeps several packages per version, and about one package
#: version, ``list``: every package of it the PKGDIR index (``Packages``)
#: records, the ones emerge may choose from; ``allocate``: where Portage would
#: put a new package of it (``getname(allocate_new=True)``: on a
#: multi-instance host a fresh ``PF-N`` with a free build id, reserved by an
#: empty placeholder file).  Prints one JSON line, last.
_BINTREE_PROGRAM = """\
import json, os, sys
import portage
action, cpv = sys.argv[1:3]
settings = portage.settings
tree = portage.db[settings["EROOT"]]["bintree"]
answer = {"pkgdir": tree.pkgdir,
          "multi_instance": "binpkg-multi-instance" in settings.features}
if action == "list":
    try:
        with open(os.path.join(tree.pkgdir, "Packages"), encoding="utf-8",
                  errors="replace") as handle:
            answer["index"] = handle.read()
    except FileNotFoundError:
        answer["index"] = ""
else:
    answer["path"] = tree.getname(cpv, allocate_new=True, remote_binpkg_format="gpkg")
print(json.dumps(answer))
"""


@dataclass(frozen=True)
class Bintree:
    """What a host's Portage says of its binary tree that no package operation changes."""

    pkgdir: str
    multi_instance: bool


#: ``Bintree`` per runner (``id``), for the runner's life: one connection, one
#: node, one phase of a run.  Asking costs a Python start and ``import
#: portage`` on the host (~0.3 s); once PKGDIR is known, the index is one
#: ``cat``.  Entries go when their runner is collected (``weakref.finalize``).
_BINTREES: dict[int, Bintree] = {}


def known_bintree(runner: Runner) -> Bintree | None:
    """What the runner's host said of its binary tree, if it was asked yet."""
    return _BINTREES.get(id(runner))


def remember_bintree(runner: Runner, tree: Bintree) -> None:
    """Take ``tree`` as the answer of the runner's host: what another connection to the
    same host was told earlier in the same run (a rollback's plan, for its execution)."""
    key = id(runner)
    if key in _BINTREES:
        return
    try:
        weakref.finalize(runner, _BINTREES.pop, key, None)
    except TypeError:
        return  # not weak-referenceable: never cached, asked each time
    _BINTREES[key] = tree


def _ask_bintree(runner: Runner, action: str, cpv: str) -> dict:
    argv = ["python3", "-c", _BINTREE_PROGRAM, action, validate_cpv(cpv)]
    result = _run(runner, argv)
    lines = result.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1])
        remember_bintree(runner, Bintree(str(answer["pkgdir"]), bool(answer["multi_instance"])))
    except (IndexError, ValueError, KeyError, TypeError):
        raise PortageError(result, getattr(runner, "host", "?"),
                           "Portage's binary tree gave no answer (is portage importable by "
                           "the host's python3?)") from None
    return answer


def _read_index(runner: Runner, tree: Bintree) -> str:
    """The text of ``PKGDIR/Packages`` (empty when there is none yet), by one ``cat``."""
    path = posixpath.join(tree.pkgdir, "Packages")
    result = runner.run(["cat", "--", path], check=False)
    if result.returncode != 0:
        if "No such file" in result.stderr:
            return ""
        raise PortageError(result, getattr(runner, "host", "?"),
                           f"cannot read the binary package index {path}: "
                           f"{last_line(result.stderr)}")
    return result.stdout


def _index_paths(pkgdir: str, index_text: str, cpv: str) -> list[PurePosixPath]:
    """The packages of ``cpv`` a ``Packages`` index lists, read with Portage's own parser."""
    index = PackageIndex()
    index.read(io.StringIO(index_text))
    return [PurePosixPath(posixpath.join(pkgdir, entry["PATH"])) for entry in index.packages
            if entry.get("CPV") == cpv and entry.get("PATH")]


def binpkg_paths(runner: Runner, cpv: str) -> list[PurePosixPath]:
    """Every binary package of ``cpv`` that the host's PKGDIR index records.

    One at most with ``FEATURES=-binpkg-multi-instance``; any number on a
    stock host (``PKGDIR/CAT/PN/PF-N.gpkg.tar``), from which emerge takes
    the newest by build time.  A file copied into PKGDIR by hand is listed
    only after ``fix_binpkg_index``.  The first question on a runner starts
    Portage on the host (PKGDIR and the index in one answer); later ones read
    the index alone, which every quickpkg and ``emaint binhost`` rewrites.
    """
    cpv = validate_cpv(cpv)
    known = known_bintree(runner)
    if known is None:
        answer = _ask_bintree(runner, "list", cpv)
        return _index_paths(str(answer["pkgdir"]), str(answer.get("index", "")), cpv)
    return _index_paths(known.pkgdir, _read_index(runner, known), cpv)


def allocate_binpkg_path(runner: Runner, cpv: str) -> PurePosixPath:
    """Where a new gpkg of ``cpv`` goes on the host, as Portage names it.

    ``PKGDIR/CAT/PF.gpkg.tar`` with one file per version; on a stock host a
    new ``PKGDIR/CAT/PN/PF-N.gpkg.tar`` with a free build id, which Portage
    reserves with an empty file: the caller fills it (an atomic rename over
    it) or removes it, and then runs ``fix_binpkg_index``.
    """
    return PurePosixPath(_ask_bintree(runner, "allocate", cpv)["path"])


def fix_binpkg_index(runner: Runner) -> CommandResult:
    """Make the PKGDIR index describe the files really there (``emaint binhost --fix``).

    Needed after adding, renaming or removing a package file by hand: with
    ``FEATURES=pkgdir-index-trusted`` (Portage's default) emerge trusts the
    index, does not see a package it does not list, and fails on one whose
    digest differs from it.  (Portage 3.0.83's emaint fails with a KeyError
    when two index entries of one version that quickpkg made within the same
    second, same size, have both vanished: they share one instance key.)
    """
    return _run(runner, ["emaint", "binhost", "--fix"])


__all__ = ["Bintree", "allocate_binpkg_path", "binpkg_paths", "fix_binpkg_index",
           "known_bintree", "remember_bintree"]
