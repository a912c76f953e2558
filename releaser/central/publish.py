"""Publishing a release to an environment's overlay, in an order that never
shows half a release.

1. Refuse early: a version already in the overlay or the distfile store with
   other bytes is never republished (the same bytes again is a no-op).
2. The distfile first: temporary name, fsync, digests checked where it
   landed, rename.  An overlay commit never points at a missing distfile.
3. Then one overlay commit holding the ebuild, metadata.xml, the Manifest
   (the build's DIST entry added by Portage's Manifest API) and
   metadata/timestamp.chk, pushed at once.
4. The release record is stored beside the distfiles for promote and rollback.

Production receives the ebuild and metadata.xml byte for byte, checked first
against the digests recorded in the release at build (the source overlay may
have been changed since), and its Manifest entry for the tarball must equal the
one the release was built with.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from portage.versions import ververify

from releaser.central import overlay
from releaser.central import overlay_git
from releaser.build import versions as versioning
from releaser.central.repository import CentralRepository
from releaser.errors import PublishError
from releaser.build.manifest import add_dist_line, dist_entries
from releaser.build.release import Release
from releaser.files import Digests, file_digest


@dataclass(frozen=True)
class PublishOutcome:
    env: str
    cpv: str
    published: bool  # False: it was already there, byte for byte
    commit: str | None
    distfile_uploaded: bool

    def describe(self) -> str:
        if not self.published:
            return f"{self.cpv} is already published to {self.env} with the same bytes: nothing to do"
        return f"published {self.cpv} to {self.env} (overlay commit {self.commit[:12]})"


@dataclass(frozen=True)
class ReleaseFiles:
    """The built package files of one release (OUT/releases/PN-PV)."""

    release: Release
    directory: Path

    @property
    def ebuild(self) -> Path:
        return self.directory / self.release.ebuild["name"]

    @property
    def metadata(self) -> Path:
        return self.directory / "metadata.xml"

    @property
    def manifest(self) -> Path:
        return self.directory / "Manifest"

    def verify(self) -> None:
        """Refuse an ebuild or metadata.xml that is not byte for byte the one built.

        The ebuild runs as root in every phase on every node, and ``ebuild
        manifest`` sources it here while publishing.  Promote copies it from
        the source environment's overlay, which anyone with push access can
        change: its bytes are checked against the digests recorded in the
        release at build, before anything reads or publishes them.
        """
        release = self.release
        for path, recorded in ((self.ebuild, release.ebuild.get("sha512")),
                               (self.metadata, release.metadata.get("sha512"))):
            where = f"{release.cp}/{path.name}"
            if not recorded:
                raise PublishError(f"the release record of {release.pv} has no digest of "
                                   f"{path.name} (built by an older releaser): build it again")
            try:
                actual = file_digest(path, "sha512")
            except FileNotFoundError:
                raise PublishError(f"{where} of {release.pv} is missing") from None
            if actual != recorded:
                raise PublishError(f"{where} differs from the file {release.pv} was built with "
                                   f"(SHA512 {actual[:16]}..., recorded {recorded[:16]}...): "
                                   "not publishing it")

    def dist_line(self) -> str:
        """The tarball's DIST entry, which must state the size and digests the release
        recorded: it is published as it is, without hashing the tarball again."""
        tarball = self.release.tarball
        name = tarball["name"]
        try:
            line = dist_entries(self.manifest.read_text())[name]
        except (KeyError, FileNotFoundError):
            raise PublishError(f"{self.manifest}: no DIST entry for {name}") from None
        parts = line.split()
        stated = {"size": parts[2], **dict(zip(parts[3::2], parts[4::2]))}
        if (stated.get("size") != str(tarball["size"]) or stated.get("BLAKE2B") != tarball["blake2b"]
                or stated.get("SHA512") != tarball["sha512"]):
            raise PublishError(f"{self.manifest}: the DIST entry of {name} differs from the "
                               f"tarball {self.release.pv} was built with: not publishing it")
        return line


def release_record_path(central: CentralRepository, release: Release) -> str:
    return central.path("releases", f"{release.pv}.json")


def publish(central: CentralRepository, env: str, overlay_name: str, files: ReleaseFiles,
            tarball: Path | None, *, dry_run: bool = False) -> PublishOutcome:
    """Publish ``files`` to ``env``, whose overlay is repository ``overlay_name`` (the
    environment's ``overlay`` setting).  ``tarball`` None: it must already be on central."""
    release = files.release
    files.verify()
    digests = Digests(release.tarball["size"], release.tarball["blake2b"],
                      release.tarball["sha512"])
    expected_dist = files.dist_line()
    _check_record(central, release)
    remote = central.remote_digests(central.distfile(release.tarball["name"]))
    if remote is not None and remote != digests:
        raise PublishError(f"{release.tarball['name']} exists on the central repository with "
                           "other bytes; a version is never republished with other content")
    if tarball is None and remote is None:
        raise PublishError(f"{release.tarball['name']} is not on the central repository; "
                           "publish it to the first environment before promoting")
    if dry_run:
        return PublishOutcome(env, release.cpv, False, None, False)
    central.remove_stale_temporaries()

    overlay_git.ensure_overlay(central, env, overlay_name)
    with overlay_git.checkout(central, env) as repo:
        work = Path(repo.working_tree_dir)
        if overlay.repo_name(work) != overlay_name:
            raise PublishError(f"the {env} overlay on the central repository is the repository "
                               f"{overlay.repo_name(work)}, not {overlay_name} as the "
                               f"configuration's overlay says; its nodes sync it by that name")
        pkg = work / release.category / release.name
        target = pkg / files.ebuild.name
        spelled = [v for v in _versions_in(_names(pkg), release.name, ".ebuild")
                   if v != release.version and versioning.same(v, release.version)]
        if spelled:
            raise PublishError(f"{env} already offers {release.name}-{spelled[0]}, the same "
                               f"version to Portage as {release.pv}; a version is never "
                               "republished (tag a new version)")
        if target.exists():
            same = (target.read_bytes() == files.ebuild.read_bytes() and
                    dist_entries(_read(pkg / "Manifest")).get(release.tarball["name"])
                    == expected_dist)
            if not same:
                raise PublishError(f"{release.cpv} is already published to {env} with other "
                                   "bytes; a version is never republished (tag a new version)")
            uploaded = tarball is not None and central.upload_distfile(tarball, digests)
            _store_record(central, release)
            return PublishOutcome(env, release.cpv, False, None, uploaded)

        uploaded = central.upload_distfile(tarball, digests) if tarball is not None else False
        overlay.add_category(work, release.category)
        pkg.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(files.ebuild, target)
        shutil.copyfile(files.metadata, pkg / "metadata.xml")
        # The build's DIST entry, whose tarball is the one on central (digests checked
        # above): no download of it and no second hashing, the Manifest API adds it.
        add_dist_line(pkg, expected_dist)
        got = dist_entries(_read(pkg / "Manifest")).get(release.tarball["name"])
        if got != expected_dist:
            raise PublishError(f"Portage wrote a different Manifest entry for "
                               f"{release.tarball['name']} than the build did; not publishing")
        overlay.write_timestamp(work, datetime.now(timezone.utc))
        commit = overlay_git.commit_and_push(repo, _message(release, env))
    _store_record(central, release)
    return PublishOutcome(env, release.cpv, True, commit, uploaded)


def _message(release: Release, env: str) -> str:
    lines = [f"{release.cpv}: publish to {env}", "",
             f"Commit: {release.commit}",
             f"Branch: {release.branch or '-'}",
             f"Build: {release.build_number if release.build_number is not None else '-'}",
             f"Tarball: {release.tarball['name']} BLAKE2B {release.tarball['blake2b'][:32]}..."]
    return "\n".join(lines) + "\n"


def _names(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir()] if directory.is_dir() else []


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _check_record(central: CentralRepository, release: Release) -> None:
    """Refuse a version already published with other bytes, in any spelling.

    Portage takes ``1.0.50`` and ``1.00.50`` for one version: a node could
    not tell them apart, and a mask of one masks the other.
    """
    for version in published_versions(central, release.name):
        if not versioning.same(version, release.version):
            continue
        stored = load_published(central, f"{release.name}-{version}")
        if stored is None:
            continue
        if version != release.version:
            raise PublishError(f"{release.pv} is the same version to Portage as {stored.pv}, "
                               f"already published from commit {stored.commit[:12]}; a version "
                               "is never republished (tag a new version)")
        if not stored.same_artifacts(release):
            raise PublishError(f"{release.pv} was already published from commit "
                               f"{stored.commit[:12]} with other bytes; a version is never "
                               "republished (tag a new version)")


def published_versions(central: CentralRepository, name: str) -> list[str]:
    """Versions of package ``name`` with a release record on the central repository."""
    return _versions_in(central.listdir(central.path("releases")), name, ".json")


def _versions_in(file_names, name: str, suffix: str) -> list[str]:
    """The versions V of the ``name-V<suffix>`` among ``file_names``."""
    prefix = f"{name}-"
    found = (f[len(prefix):-len(suffix)] for f in file_names
             if f.startswith(prefix) and f.endswith(suffix))
    return [v for v in found if ververify(v)]


def _store_record(central: CentralRepository, release: Release) -> None:
    path = release_record_path(central, release)
    if not central.exists(path):
        central.write_json(path, release.to_dict())


def load_published(central: CentralRepository, pv: str) -> Release | None:
    data = central.read_json(central.path("releases", f"{pv}.json"))
    return Release.from_dict(data) if data else None
