"""Reproducible source tarballs from a git tree.

Two builds of the same tree give byte-identical files: entries are sorted,
owners are root with no names, every mtime is the commit's time, and the gzip
header carries no name and mtime 0.  The file is written under a temporary
name, fsynced and renamed (``releaser.files.atomic_file``), so a half-written
tarball never has the real name.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import git

from releaser.errors import BuildError
from releaser.files import Digests, atomic_file, file_digests

_FILE_MODES = {0o100644: 0o644, 0o100755: 0o755}
_LINK_MODE = 0o120000
_SUBMODULE_MODE = 0o160000


def write_tarball(tree: git.Tree, top: str, mtime: int, dest: Path) -> Digests:
    """Write ``tree`` as ``dest`` (a .tar.gz) with everything under ``top/``."""
    with atomic_file(dest) as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
                _add_tree(tar, tree, top, mtime)
    return file_digests(dest)


def _add_tree(tar: tarfile.TarFile, tree: git.Tree, top: str, mtime: int) -> None:
    entries = [(top, None)]
    for item in tree.traverse():
        entries.append((f"{top}/{item.path[len(tree.path):].lstrip('/')}" if tree.path
                        else f"{top}/{item.path}", item))
    for name, item in sorted(entries, key=lambda e: e[0]):
        info = tarfile.TarInfo(name)
        info.mtime = mtime
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        data = None
        if item is None or item.type == "tree":
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
        elif item.mode == _SUBMODULE_MODE:
            raise BuildError(f"{item.path}: git submodules are not supported in the app tree")
        elif item.mode == _LINK_MODE:
            info.type = tarfile.SYMTYPE
            info.linkname = item.data_stream.read().decode()
            info.mode = 0o777
        else:
            data = item.data_stream.read()
            info.size = len(data)
            info.mode = _FILE_MODES.get(item.mode, 0o644)
        tar.addfile(info, io.BytesIO(data) if data is not None else None)
