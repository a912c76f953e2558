"""This machine's Portage pointed at a local root: its prefix, its layout, its environment.

It exists apart from the rendering of a host's configuration
(``releaser.hosts.portage_config``) because it is a fact of releaser's own
machine, not of any host: the Portage pip-installed in releaser's virtualenv
runs on any machine (Debian included) once a directory holds that
configuration and Portage's own prefix.  ``prepare_local_root(spec)`` lays out
both; ``portage_env(root)`` gives the environment that points every Portage
command at the root.  The build uses a throw-away one to let ``ebuild FILE
manifest`` run (releaser.build.manifest); a node configured with a local
``root`` is one (``LocalRunner(env=portage_env(root))`` runs exactly the argv a
real host runs over SSH, where none of these variables is needed).

Inside such a root, besides its configuration::

    ROOT/.releaser/bin/gtar                 -> tar (Portage 3.0.83 calls ``gtar``)
    ROOT/.releaser/eprefix/                    Portage's own prefix (PORTAGE_OVERRIDE_EPREFIX):
        share/portage/config/make.globals   -> the venv's
        share/portage/config/sets/portage.conf -> the venv's
        etc/portage                         -> ../../../etc/portage
        var/log                             -> ../../../var/log

Why Portage's prefix is ROOT/.releaser/eprefix and not ROOT itself
------------------------------------------------------------------
portage-sandbox.md sets ``PORTAGE_OVERRIDE_EPREFIX=ROOT`` next to
``ROOT=ROOT``.  Measured with Portage 3.0.83, that silently turns the root into
a *Prefix* install: Portage builds one config for the target root
(ROOT=ROOT, EPREFIX="", EROOT=ROOT/) and one for the running root (ROOT=/,
EPREFIX=ROOT, EROOT=ROOT/); both EROOTs are the same string, the second
overwrites the first in ``portage.db``, and every command runs with
``EPREFIX=ROOT ROOT=/``.  Files still land in ROOT/usr, but the vdb records
``ROOT/usr/...`` paths (``CONTENTS``, ``EPREFIX``) and ``quickpkg`` images
hold ``image/ROOT/usr/...``: nothing like a production host.  With the
prefix anywhere else the target config wins: ``EPREFIX=""``, ``ROOT=ROOT/``,
the vdb records ``/usr/...`` as on a real host, and binary packages carry
``image/usr/...`` (with a harmless ``image//usr`` double slash, a Portage
quirk of ROOT != "/").  The running root (where build-time dependencies
would go) shares the root's etc/portage through a symlink.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from releaser.errors import UsageError
from releaser.files import write_atomic
from releaser.hosts.portage_config import ETC_PORTAGE, NodeRootSpec, config_files

#: releaser's helper bin directory inside a local root, on the PATH of its
#: Portage commands (``gtar``; the sandbox adds its ``rc-service`` stand-in).
HELPER_BIN = Path(".releaser/bin")
#: Portage's own prefix inside a local root (PORTAGE_OVERRIDE_EPREFIX); see the
#: module docstring for why it must not be the root itself.
PORTAGE_PREFIX = Path(".releaser/eprefix")
#: Portage's global config inside its prefix (portage.const.GLOBAL_CONFIG_PATH).
GLOBAL_CONFIG = Path("share/portage/config")
#: The only files of the venv's global config a local root links: linking the
#: whole folder drags in a ``[gentoo]`` repos.conf section pointing nowhere.
GLOBAL_CONFIG_FILES = (Path("make.globals"), Path("sets/portage.conf"))


def profile_link(spec: NodeRootSpec) -> Path:
    """Where ``etc/portage/make.profile`` points: relative when the overlay is inside the
    root, like a real host's ``../../var/db/repos/gentoo/profiles/...``."""
    target = spec.repo(spec.profile.repo).location_in(spec.root) / "profiles" / spec.profile.path
    if target.is_relative_to(spec.root):
        target = Path(os.path.relpath(target, spec.root / ETC_PORTAGE))
    return target


@dataclass
class RootLayout:
    """What laying out a local root writes, worked out and checked before anything is.

    ``check`` refuses (UsageError) before anything is touched; ``apply`` makes
    the directories, files and links, and may stop part way on an OSError
    (what was made stays; applying again completes it).  Callers add their
    own ``dirs`` in between (the sandbox adds a node's state directories).
    """

    root: Path
    dirs: list[Path]
    files: dict[Path, str | None]  # None: remove
    links: list[tuple[Path, Path]]  # (target, link)

    @classmethod
    def check(cls, spec: NodeRootSpec, global_config: Path | None = None, *,
              files: dict[Path, str | None] | None = None) -> "RootLayout":
        """``files``: the configuration to write, relative to the root (default
        ``config_files(spec)``; a bare root passes ``host_config_files(spec)``)."""
        root, prefix = spec.root, spec.root / PORTAGE_PREFIX
        source = Path(global_config) if global_config else Path(sys.prefix) / GLOBAL_CONFIG
        links = []
        for rel in GLOBAL_CONFIG_FILES:
            if not (source / rel).is_file():
                raise UsageError(f"Portage's {rel} not found in {source}: is portage installed?")
            links.append((source / rel, prefix / GLOBAL_CONFIG / rel))
        # Portage's running root reads the root's configuration and logs to its var/log.
        links += [(Path("../../../etc/portage"), prefix / "etc/portage"),
                  (Path("../../../var/log"), prefix / "var/log")]
        tar = shutil.which("tar")
        if tar is None:
            raise UsageError("tar is not installed: Portage needs it (as gtar)")
        links.append((Path(tar), root / HELPER_BIN / "gtar"))
        links.append((profile_link(spec), root / ETC_PORTAGE / "make.profile"))
        for _target, link in links:
            if link.exists() and not link.is_symlink():
                raise UsageError(f"{link} exists and is not a symlink; refusing to replace it")
        files = {root / rel: text
                 for rel, text in (config_files(spec) if files is None else files).items()}
        dirs = [root / "var/log", root / ETC_PORTAGE / "repos.conf",
                root / ETC_PORTAGE / "profile", root / HELPER_BIN,
                prefix / GLOBAL_CONFIG / "sets", prefix / "etc", prefix / "var"]
        return cls(root, dirs, files, links)

    def apply(self) -> None:
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)
        for path, text in self.files.items():
            if text is None:
                path.unlink(missing_ok=True)
            else:
                _write(path, text)
        for target, link in self.links:
            _symlink(target, link)


def prepare_local_root(spec: NodeRootSpec, *, global_config: Path | None = None) -> None:
    """Make ``spec.root`` a configuration root for this machine's Portage.

    ``global_config`` is the folder holding Portage's make.globals; by default
    the one of the Python environment running releaser (``sys.prefix``).
    Idempotent: configuration is rewritten, nothing else in the root touched.
    A UsageError means nothing was written; an OSError may leave part of it.
    """
    RootLayout.check(spec, global_config).apply()


def portage_env(root: Path) -> dict[str, str]:
    """The environment variables that point Portage commands at local root ``root``.

    Exactly these, laid over the caller's environment (``LocalRunner(env=...)``):

    - ``PORTAGE_OVERRIDE_EPREFIX=root/.releaser/eprefix``: where Portage finds
      make.globals and keeps its metadata cache; without it a pip-installed
      Portage uses (and writes into) the venv.  Not ``root`` itself (see the
      module docstring).
    - ``PORTAGE_CONFIGROOT=root``: read ``root/etc/portage``.
    - ``ROOT=root``: merge into, and read the vdb of, ``root``.
    - ``EPREFIX=""``: must be set and empty, or paths get the prefix twice.
    - ``PATH``: the venv's bin (Portage's commands) and ``root/.releaser/bin``
      (``gtar``) before the current PATH.
    """
    root = Path(root).absolute()
    venv_bin = os.path.dirname(sys.executable)
    path = os.pathsep.join([venv_bin, str(root / HELPER_BIN), os.environ.get("PATH", os.defpath)])
    return {
        "PORTAGE_OVERRIDE_EPREFIX": str(root / PORTAGE_PREFIX),
        "PORTAGE_CONFIGROOT": str(root),
        "ROOT": str(root),
        "EPREFIX": "",
        "PATH": path,
    }


def _write(path: Path, text: str) -> None:
    """Replace ``path`` atomically if its content differs."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    write_atomic(path, text)


def _symlink(target: Path, link: Path) -> None:
    """Make ``link`` a symlink to ``target``, replacing another link (never a file).

    A file found there now (``RootLayout.check`` saw none) fails like any
    other change that cannot be made: FileExistsError.
    """
    if link.is_symlink():
        if os.readlink(link) == str(target):
            return
        link.unlink()
    link.symlink_to(target)


__all__ = [
    "GLOBAL_CONFIG",
    "GLOBAL_CONFIG_FILES",
    "HELPER_BIN",
    "PORTAGE_PREFIX",
    "RootLayout",
    "portage_env",
    "prepare_local_root",
    "profile_link",
]
