"""The release built once into a gpkg binary package, on the build side (binhost mode).

An environment with ``install = "binary"`` has its nodes install the package
built here instead of building the ebuild each: one ``ebuild ... package`` in a
scratch Portage root (the same kind of throw-away root ``write_manifest`` uses),
with the release's own ebuild, metadata.xml, Manifest and tarball.  Portage
packs the image and writes its ``Packages`` index entry; both are kept:

    OUT/binpkgs/PN-PV.gpkg.tar         the binary package
    OUT/binpkgs/PN-PV.gpkg.json        Portage's index header and entry for it (CPV, SIZE, MD5...)

``releaser.central.binhost`` publishes them to the environment's binhost.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from portage.getbinpkg import PackageIndex

from releaser.build.release import Release
from releaser.central import overlay
from releaser.errors import PublishError
from releaser.files import file_digest, write_atomic
from releaser.hosts import portage_commands, portage_config
from releaser.hosts.local_root import portage_env, prepare_local_root
from releaser.hosts.runner import LocalRunner

BUILD_OVERLAY = "releaser-binpkg"  # any name: the package does not record it


@dataclass(frozen=True)
class BuiltPackage:
    """A release's gpkg and Portage's index entry describing it."""

    path: Path
    entry: dict  # Portage's Packages entry: CPV, SIZE, MD5, SHA1, BUILD_TIME, ...
    header: dict  # the index header Portage wrote with it (ARCH, ACCEPT_KEYWORDS...)
    sha256: str


def package_paths(out: Path, release: Release) -> tuple[Path, Path]:
    """Where the build keeps ``release``'s gpkg and its index entry under ``out``."""
    folder = Path(out) / "binpkgs"
    return folder / f"{release.pv}.gpkg.tar", folder / f"{release.pv}.gpkg.json"


def build_binpkg(release: Release, release_dir: Path, tarball: Path, out: Path) -> BuiltPackage:
    """The gpkg of ``release``: the one already built under ``out``, or built now.

    Built once: a second call (another promote of the same release) returns
    the package already there, never a rebuild with other bytes.
    """
    gpkg, entry_file = package_paths(out, release)
    if gpkg.exists() and entry_file.exists():
        return _load(gpkg, entry_file)
    with tempfile.TemporaryDirectory(prefix="releaser-binpkg-") as tmp:
        built, record = _package_in_scratch_root(Path(tmp), release, Path(release_dir),
                                                 Path(tarball))
        gpkg.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built, gpkg.with_suffix(".partial"))
        gpkg.with_suffix(".partial").rename(gpkg)
        write_atomic(entry_file, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return _load(gpkg, entry_file)


def _load(gpkg: Path, entry_file: Path) -> BuiltPackage:
    record = json.loads(entry_file.read_text())
    entry, sha256 = record["entry"], file_digest(gpkg, "sha256")
    if str(gpkg.stat().st_size) != str(entry.get("SIZE")):
        raise PublishError(f"{gpkg}: {gpkg.stat().st_size} bytes, its index entry says "
                           f"{entry.get('SIZE')}: remove both and build again")
    return BuiltPackage(gpkg, entry, record["header"], sha256)


def _package_in_scratch_root(scratch: Path, release: Release, release_dir: Path,
                             tarball: Path) -> tuple[Path, dict]:
    """Run ``ebuild ... package`` in a throw-away root; the gpkg and its index record."""
    tree = scratch / "overlay"
    pkg = overlay.one_release_overlay(tree, BUILD_OVERLAY, release, release_dir)
    spec = portage_config.NodeRootSpec(
        root=scratch / "root",
        repos=[portage_config.RepoSpec(name=BUILD_OVERLAY, location=tree)],
        profile=portage_config.ProfileSpec(repo=BUILD_OVERLAY))
    prepare_local_root(spec)
    spec.distdir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tarball, spec.distdir / tarball.name)
    runner = LocalRunner(env=portage_env(spec.root))
    portage_commands.package(runner, pkg / release.ebuild["name"])
    return _built(spec.pkgdir, release.cpv)


def _built(pkgdir: Path, cpv: str) -> tuple[Path, dict]:
    """The package file, and index header and entry, Portage recorded for ``cpv``."""
    index = PackageIndex()
    with open(pkgdir / "Packages", encoding="utf-8") as handle:
        index.read(handle)
    for entry in index.packages:
        if entry.get("CPV") == cpv:
            path = pkgdir / (entry.get("PATH") or f"{cpv}.gpkg.tar")
            entry = dict(entry)
            entry["PATH"] = f"{cpv}.gpkg.tar"  # where the binhost serves it
            return path, {"header": dict(index.header), "entry": entry}
    raise PublishError(f"ebuild package recorded no binary package of {cpv} in {pkgdir}")
