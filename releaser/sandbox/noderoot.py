"""A directory that plays a Gentoo node's ``/``, for real Portage on any machine.

The sandbox fleet and the integration tests run the real Portage commands
(``emerge``, ``ebuild``, ``quickpkg``, ``emaint``, ``portageq``) from the
pip-installed Portage in releaser's virtualenv.  Each node is one directory
NODE: a local root of releaser.hosts.portage_config (the node's Portage
configuration and Portage's own prefix, ``prepare_local_root``) plus the state
a host already has and a fake one must be given::

    NODE/var/db/pkg                            installed-package database (vdb)
    NODE/var/db/repos/<repo>                   overlays (git clones)
    NODE/var/cache/{distfiles,binpkgs}         DISTDIR, PKGDIR
    NODE/var/cache/binhost/<name>              binhost downloads
    NODE/var/cache/edb                         Portage's world file and caches
    NODE/var/tmp                               PORTAGE_TMPDIR
    NODE/var/log/emerge.log

``portage_env(NODE)`` (re-exported from portage_config) points every Portage
command at it, as the product does for any node with a local ``root``.

Two ways to lay one out:

* ``create_bare_root``: what a host has *before* releaser prepares it, and
  what the sandbox gives each node: Portage installed (its prefix, ``gtar``),
  the host's own Portage configuration (``portage_config.host_config_files``:
  make.conf, main repository, profile link, package.provided), the state
  folders and a minimal ``etc/passwd`` and ``etc/group`` (root only).  The
  sandbox then prepares it with ``releaser host bootstrap``
  (releaser.hosts.bootstrap), exactly as a real host.
* ``create_node_root``: a complete root with releaser's configuration too, for
  tests of Portage alone that never bootstrap.

Both are idempotent: configuration is rewritten, what is missing created,
state never deleted or emptied (the vdb, binary packages, distfiles, overlay
clones, the accounts the bootstrap added).
"""

from __future__ import annotations

from pathlib import Path

from releaser.errors import SandboxError
from releaser.files import write_atomic
from releaser.hosts.local_root import HELPER_BIN, PORTAGE_PREFIX, RootLayout, portage_env
from releaser.hosts.portage_config import (DEFAULT_FEATURES, FETCHCOMMAND, RESUMECOMMAND,
                                           BinhostSpec, NodeRootSpec, ProfileSpec, RepoSpec,
                                           host_config_files)

#: The accounts database of a bare root: root alone, as a fresh host has it (plus
#: what the host's packages add).  ``useradd --prefix ROOT`` adds the app's.
MINIMAL_ACCOUNTS = {"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
                    "etc/group": "root:x:0:\n"}


def state_dirs(spec: NodeRootSpec) -> list[Path]:
    """The directories of a node's state, which a real host has and a node root is given."""
    root = spec.root
    dirs = [spec.vdb, spec.distdir, spec.pkgdir, spec.tmpdir, root / "var/log",
            root / "var/cache/edb", root / "var/db/repos"]
    if spec.binhost is not None:
        dirs.append(spec.binhost.location_in(root))
    return dirs


def create_node_root(spec: NodeRootSpec, *, global_config: Path | None = None) -> None:
    """Lay out (or refresh) ``spec.root`` as a Gentoo node's ``/``.

    ``global_config``: see ``local_root.prepare_local_root``.  Safe to run
    again on an existing node: configuration is rewritten, state (vdb,
    packages, distfiles, overlay clones) is left alone.

    Everything that can be refused is checked first (Portage's files, tar,
    every rendered file, no file where a link goes), so a ``UsageError``
    means nothing was touched.  A failure while laying out is a
    ``SandboxError``: what was made stays, and running it again completes it.
    """
    _lay_out(RootLayout.check(spec, global_config), spec)


def create_bare_root(spec: NodeRootSpec, *, global_config: Path | None = None) -> None:
    """Lay out ``spec.root`` as a host *before* releaser prepares it (see the module docstring).

    ``spec.repos`` name the overlay only for the host's main repository and
    profile link: its repos.conf entry is the bootstrap's.  The accounts files
    are created when missing, never rewritten.  Refusals and failures as
    ``create_node_root``.
    """
    _lay_out(RootLayout.check(spec, global_config, files=host_config_files(spec)), spec)
    try:
        for rel, text in MINIMAL_ACCOUNTS.items():
            if not (spec.root / rel).exists():
                write_atomic(spec.root / rel, text)
    except OSError as exc:
        raise _stopped(spec, exc) from exc


def _lay_out(layout: RootLayout, spec: NodeRootSpec) -> None:
    layout.dirs[:0] = state_dirs(spec)
    try:
        layout.apply()
    except OSError as exc:
        raise _stopped(spec, exc) from exc


def _stopped(spec: NodeRootSpec, exc: OSError) -> SandboxError:
    return SandboxError(f"{spec.root}: laying out the node root stopped part way: "
                        f"{exc.filename or ''}: {exc.strerror or exc}; what was made is "
                        f"left there, and running the setup again completes it")


__all__ = [
    # The node is described with the product's configuration spec.
    "BinhostSpec",
    "DEFAULT_FEATURES",
    "FETCHCOMMAND",
    "HELPER_BIN",
    "NodeRootSpec",
    "PORTAGE_PREFIX",
    "ProfileSpec",
    "RESUMECOMMAND",
    "RepoSpec",
    "create_bare_root",
    "create_node_root",
    "portage_env",
    "state_dirs",
]
