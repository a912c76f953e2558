"""Manifests written by Portage itself, in any overlay directory.

Portage needs a configuration root naming the overlay; ``write_manifest``
makes a throw-away one (``portage_config.prepare_local_root``) so that
``ebuild FILE manifest`` can run on a build folder or on a fresh clone of an
environment's overlay.
With Portage's default ``assume-digests`` feature, the DIST entries of other
versions already in the Manifest are kept without their distfiles, so only the
new version's tarball has to be in ``distdir``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from releaser.central import overlay
from releaser.hosts import portage_config
from releaser.hosts import portage_commands as portage_tools
from releaser.hosts.runner import LocalRunner


def write_manifest(overlay_dir: Path, ebuild: Path, distdir: Path) -> Path:
    """Run ``ebuild EBUILD manifest`` with DISTDIR=distdir; returns the Manifest path."""
    name = overlay.repo_name(overlay_dir)
    with tempfile.TemporaryDirectory(prefix="releaser-portage-") as tmp:
        root = Path(tmp) / "root"
        portage_config.prepare_local_root(portage_config.NodeRootSpec(
            root=root,
            repos=[portage_config.RepoSpec(name=name, location=Path(overlay_dir).absolute())],
            profile=portage_config.ProfileSpec(repo=name),
        ))
        runner = LocalRunner(env=portage_config.portage_env(root))
        portage_tools.manifest(runner, ebuild, distdir=distdir)
    return ebuild.parent / "Manifest"


def dist_entries(manifest_text: str) -> dict[str, str]:
    """The DIST lines of a Manifest, by distfile name."""
    entries = {}
    for line in manifest_text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "DIST":
            entries[parts[1]] = line
    return entries
