"""``releaser build``: a git ref becomes a tarball, an ebuild, a Manifest and a record.

Output layout under OUT (default ``[build] out``)::

    OUT/distfiles/PN-PV.tar.gz                 the reproducible source tarball
    OUT/releases/PN-PV/PN-PV.ebuild            rendered from ebuild_templates/
    OUT/releases/PN-PV/metadata.xml
    OUT/releases/PN-PV/Manifest                Portage's Manifest API (the tarball's DIST entry)
    OUT/releases/PN-PV/release.json            the release record

Nothing is written when the input is bad: the ref, the app directory, the
version and the rendered ebuild are all checked before the first file is made,
and the release folder appears by rename only once complete.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from releaser.build import git_source as gitsource
from releaser.config import validate
from releaser.build import versions as versioning
from releaser.config import Config, DatabaseConfig
from releaser.build.ebuild import render_ebuild, render_metadata, template_variables
from releaser.errors import UsageError
from releaser.files import file_digest, file_digests, text_digest, write_atomic
from releaser.build.manifest import add_dist
from releaser.build.release import Release
from releaser.build.tarball import write_tarball


@dataclass(frozen=True)
class BuildResult:
    release: Release
    release_dir: Path
    tarball: Path
    seconds: float
    reused: bool = False


def build_release(config: Config, *, ref: str = "HEAD", out: Path | None = None,
                  build_number: int | None = None, allow_dirty: bool = False,
                  distfiles_url: str | None = None, reuse: bool = False) -> BuildResult:
    """Build ``ref`` of the configured app into ``out``.

    ``reuse``: when ``out`` already holds the release of this very commit and
    tree, rendered to the very same ebuild and metadata.xml (same
    configuration, same templates), and its files still have the digests its
    record names, return it instead of building again (build once, promote
    the same artifact).
    """
    started = time.monotonic()
    app = config.app
    out = Path(out or config.build_out).resolve()
    repo = gitsource.open_repo(app.source)
    source = gitsource.resolve(repo, ref, app.subdir, allow_dirty=allow_dirty)
    resolved = versioning.resolve_source_version(repo, source, app.tag_prefix)
    version = resolved.version
    pv = f"{app.name}-{version}"
    mtime = source.commit.committed_date
    year = datetime.fromtimestamp(mtime, timezone.utc).year
    variables = template_variables(app, _distfiles_url(config, distfiles_url),
                                   _database_for(config), year)
    ebuild_text, metadata_text = render_ebuild(variables), render_metadata(variables)
    if reuse and not source.dirty:
        existing = _reusable(out, pv, source, ebuild_text, metadata_text)
        if existing is not None:
            return BuildResult(existing, out / "releases" / pv,
                               out / "distfiles" / existing.tarball["name"],
                               time.monotonic() - started, reused=True)

    tarball = out / "distfiles" / f"{pv}.tar.gz"
    digests = write_tarball(source.tree, pv, mtime, tarball)
    release_dir = out / "releases" / pv
    with tempfile.TemporaryDirectory(prefix=".build-", dir=out) as scratch:
        staged = Path(scratch) / "release"
        _package_files(staged, app.name, version, ebuild_text, metadata_text, tarball)
        release = Release(
            name=app.name,
            category=app.category,
            version=version,
            commit=source.hexsha,
            branch=source.branch,
            moving_name=f"{app.name}:{source.branch}" if source.branch else None,
            tag=resolved.tag,
            distance=resolved.distance,
            dirty=source.dirty,
            build_number=build_number,
            built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            source_tree=source.tree.hexsha,
            tarball={"name": tarball.name, **digests.as_dict()},
            ebuild={"name": f"{pv}.ebuild", "sha512": _sha512(staged / f"{pv}.ebuild")},
            manifest={"sha512": _sha512(staged / "Manifest")},
            metadata={"sha512": _sha512(staged / "metadata.xml")},
        )
        write_atomic(staged / "release.json", release.to_json())
        if release_dir.exists():
            shutil.rmtree(release_dir)
        release_dir.parent.mkdir(parents=True, exist_ok=True)
        staged.rename(release_dir)
    return BuildResult(release, release_dir, tarball, time.monotonic() - started)


def _distfiles_url(config: Config, override: str | None) -> str:
    """The SRC_URI base: the override checked as the configured one was at load."""
    if override is None:
        return config.central.distfiles_url if config.central else "http://localhost/distfiles"
    try:
        return validate.url(override, base=True).rstrip("/")
    except validate.Invalid as exc:
        raise UsageError(f"distfiles URL: {exc}") from None


def _reusable(out: Path, pv: str, source: gitsource.SourceCommit, ebuild_text: str,
              metadata_text: str) -> Release | None:
    """The release already built in ``out`` from ``source``, if it is what a build would give.

    Commit and tree fix the tarball; the freshly rendered ebuild and
    metadata.xml fix the rest, so a changed configuration value or template
    builds again instead of reusing a stale ebuild.  Every file must still
    have the digest its record names (or, for metadata.xml, the rendered bytes).
    """
    from releaser.errors import ReleaseNotFound
    from releaser.build.release import load_release

    release_dir = out / "releases" / pv
    try:
        release = load_release(release_dir / "release.json")
    except ReleaseNotFound:
        return None
    if (release.commit != source.hexsha or release.source_tree != source.tree.hexsha
            or release.dirty or release.ebuild["sha512"] != text_digest(ebuild_text)
            or release.metadata.get("sha512") != text_digest(metadata_text)):
        return None
    tarball = out / "distfiles" / release.tarball["name"]
    try:
        intact = (file_digests(tarball).as_dict() == {k: release.tarball[k] for k in
                                                      ("size", "blake2b", "sha512")}
                  and _sha512(release_dir / release.ebuild["name"]) == release.ebuild["sha512"]
                  and _sha512(release_dir / "Manifest") == release.manifest["sha512"]
                  and (release_dir / "metadata.xml").read_bytes()
                  == metadata_text.encode("utf-8"))
    except OSError:
        return None
    return release if intact else None


def _database_for(config: Config) -> DatabaseConfig:
    """The database settings baked into the ebuild: the same in every environment.

    Only a SQLite file is baked in (pkg_preinst dumps it); a server database
    is each environment's own URL, given to the app at run time.
    """
    files = [env.database for env in config.environments.values() if not env.database.is_server]
    paths = {db.path for db in files}
    if len(paths) > 1:
        from releaser.errors import ConfigError

        raise ConfigError(f"{config.path}: environments use different database paths "
                          f"{sorted(paths)}; one ebuild serves them all")
    return files[0] if files else DatabaseConfig(path=config.app.contract.default_database_path)


def _package_files(staged: Path, name: str, version: str, ebuild_text: str,
                   metadata_text: str, tarball: Path) -> None:
    """Write the package's ebuild, metadata.xml and Manifest into ``staged``.

    The Manifest is the tarball's DIST entry, hashed in-process by Portage's
    Manifest API (``add_dist``): no scratch overlay, no ``ebuild`` process.
    """
    staged.mkdir()
    (staged / f"{name}-{version}.ebuild").write_text(ebuild_text, encoding="utf-8")
    (staged / "metadata.xml").write_text(metadata_text, encoding="utf-8")
    add_dist(staged, tarball)


def _sha512(path: Path) -> str:
    return file_digest(path, "sha512")
