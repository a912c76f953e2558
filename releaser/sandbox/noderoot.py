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

``create_node_root`` is idempotent: it rewrites the configuration it owns and
creates what is missing, and never deletes or empties state (the vdb, binary
packages, distfiles, overlay clones).
"""

from __future__ import annotations

from pathlib import Path

from releaser.errors import SandboxError
from releaser.hosts.portage_config import (DEFAULT_FEATURES, FETCHCOMMAND, HELPER_BIN,
                                           PORTAGE_PREFIX, RESUMECOMMAND, BinhostSpec,
                                           NodeRootSpec, ProfileSpec, RepoSpec, RootLayout,
                                           portage_env)


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

    ``global_config``: see ``portage_config.prepare_local_root``.  Safe to run
    again on an existing node: configuration is rewritten, state (vdb,
    packages, distfiles, overlay clones) is left alone.

    Everything that can be refused is checked first (Portage's files, tar,
    every rendered file, no file where a link goes), so a ``UsageError``
    means nothing was touched.  A failure while laying out is a
    ``SandboxError``: what was made stays, and running it again completes it.
    """
    layout = RootLayout.check(spec, global_config)
    layout.dirs[:0] = state_dirs(spec)
    try:
        layout.apply()
    except OSError as exc:
        raise SandboxError(f"{spec.root}: laying out the node root stopped part way: "
                           f"{exc.filename or ''}: {exc.strerror or exc}; what was made is "
                           f"left there, and running the setup again completes it") from exc


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
    "create_node_root",
    "portage_env",
    "state_dirs",
]
