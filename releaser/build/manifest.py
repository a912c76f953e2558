"""Manifests written by Portage itself, in any overlay directory.

``add_dist`` and ``add_dist_line`` use Portage's Manifest API in-process: a
release's Manifest is its one DIST entry (thin Manifests), so hashing the
tarball (or copying the entry the build recorded, at publish) is all there is
to it, without a Portage configuration root or an ``ebuild`` process.
``write_manifest`` (``ebuild FILE manifest``) stays for a package whose
distfiles only its ebuild names.

Portage needs a configuration root naming the overlay; ``write_manifest``
makes a throw-away one (``local_root.prepare_local_root``) so that
``ebuild FILE manifest`` can run on a build folder or on a fresh clone of an
environment's overlay.
With Portage's default ``assume-digests`` feature, the DIST entries of other
versions already in the Manifest are kept without their distfiles, so only the
new version's tarball has to be in ``distdir``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from portage.manifest import Manifest

from releaser.files import write_atomic

from releaser.central import overlay
from releaser.hosts import portage_config
from releaser.hosts.local_root import portage_env, prepare_local_root
from releaser.hosts import portage_commands as portage_tools
from releaser.hosts.runner import LocalRunner


def write_manifest(overlay_dir: Path, ebuild: Path, distdir: Path) -> Path:
    """Run ``ebuild EBUILD manifest`` with DISTDIR=distdir; returns the Manifest path."""
    name = overlay.repo_name(overlay_dir)
    with tempfile.TemporaryDirectory(prefix="releaser-portage-") as tmp:
        root = Path(tmp) / "root"
        prepare_local_root(portage_config.NodeRootSpec(
            root=root,
            repos=[portage_config.RepoSpec(name=name, location=Path(overlay_dir).absolute())],
            profile=portage_config.ProfileSpec(repo=name),
        ))
        runner = LocalRunner(env=portage_env(root))
        portage_tools.manifest(runner, ebuild, distdir=distdir)
    return ebuild.parent / "Manifest"


#: The overlays' ``manifest-hashes`` and ``manifest-required-hashes`` (metadata/layout.conf).
MANIFEST_HASHES = frozenset({"BLAKE2B", "SHA512"})
REQUIRED_HASHES = frozenset({"BLAKE2B"})


def _manifest(pkg_dir: Path, distdir: Path | None = None) -> Manifest:
    """The package folder's Manifest as Portage parses it (empty when there is none)."""
    return Manifest(str(pkg_dir), str(distdir) if distdir else None, thin=True,
                    allow_missing=True, hashes=MANIFEST_HASHES, required_hashes=REQUIRED_HASHES)


def add_dist(pkg_dir: Path, distfile: Path) -> Path:
    """Add ``distfile``'s DIST entry (size and hashes, computed here) to ``pkg_dir/Manifest``;
    the entries of other versions are kept.  Returns the Manifest path."""
    manifest = _manifest(pkg_dir, distfile.parent)
    manifest.addFile("DIST", distfile.name, ignoreMissing=True)
    return _write(manifest, pkg_dir)


def add_dist_line(pkg_dir: Path, line: str) -> Path:
    """Add a DIST entry recorded elsewhere (the build's Manifest) to ``pkg_dir/Manifest``,
    as it is: publishing needs neither the distfile nor a second hashing of it."""
    parts = line.split()
    if len(parts) < 5 or parts[0] != "DIST" or len(parts) % 2 != 1 or not parts[2].isdigit():
        raise ValueError(f"not a Manifest DIST line: {line!r}")
    hashes = {"size": int(parts[2]), **dict(zip(parts[3::2], parts[4::2]))}
    manifest = _manifest(pkg_dir)
    manifest.addFile("DIST", parts[1], hashdict=hashes, ignoreMissing=True)
    return _write(manifest, pkg_dir)


def _write(manifest: Manifest, pkg_dir: Path) -> Path:
    """Write the Manifest's entries, formatted and ordered by Portage (``Manifest2Entry``).

    Not ``Manifest.write``: its permission step reads Portage's global
    configuration, which in the operator's process is no node's and not wanted.
    """
    manifest.checkIntegrity()
    lines = [f"{entry}\n" for entry in manifest._createManifestEntries()]
    path = Path(pkg_dir) / "Manifest"
    write_atomic(path, "".join(lines))
    return path


def dist_entries(manifest_text: str) -> dict[str, str]:
    """The DIST lines of a Manifest, by distfile name."""
    entries = {}
    for line in manifest_text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "DIST":
            entries[parts[1]] = line
    return entries
