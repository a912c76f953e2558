"""Promote's binhost step (``[environments.NAME] install = "binary"``).

An environment that builds (no ``promote_from``) gets the release's gpkg built
once on the build side (``releaser.build.binpkg_build``) and published to its
binhost; an environment promoted from another gets the very package that one
ran, copied on the central host and checked by the SHA256 the source
environment's ledger recorded: never rebuilt.  Either way the ledger records
the package's SHA256 and MD5, and the rollout pins every node to that MD5.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from releaser.build.binpkg_build import build_binpkg
from releaser.build.release import Release
from releaser.central import binhost
from releaser.central.ledger import Ledger
from releaser.central.repository import CentralRepository
from releaser.config import Config, EnvironmentConfig
from releaser.errors import PublishError


@dataclass(frozen=True)
class BinhostPackage:
    """The package an environment's nodes install: its digests in the binhost."""

    sha256: str
    md5: str
    published: bool  # False: it was already in the binhost


def publish_binpkg(config: Config, central: CentralRepository, env: EnvironmentConfig,
                   release: Release, files_from, tarball: Path | None,
                   progress: Callable[[str], None]) -> BinhostPackage:
    """Put ``release``'s binary package in ``env``'s binhost; what the nodes must merge."""
    if env.promote_from:
        sha256 = _source_sha256(central, env.promote_from, release)
        published = binhost.copy_package(central, env.promote_from, env.name, release.cpv,
                                         sha256)
        progress(f"binhost: {release.cpv} from {env.promote_from}'s binhost, SHA256 "
                 f"{sha256[:16]}... ({'copied' if published else 'already there'})")
    else:
        if not isinstance(files_from, Path) or tarball is None:
            raise PublishError(f"{env.name} builds its releases: no build to package")
        package = build_binpkg(release, files_from, tarball, config.build_out)
        published = binhost.publish_package(central, env.name, package)
        sha256 = package.sha256
        progress(f"binhost: {release.cpv} built once, SHA256 {sha256[:16]}... "
                 f"({'published' if published else 'already there'})")
    entry = binhost.index_entry(central, env.name, release.cpv)
    if entry is None or not entry.get("MD5"):
        raise PublishError(f"the {env.name} binhost index has no MD5 for {release.cpv}")
    return BinhostPackage(sha256, entry["MD5"], published)


def _source_sha256(central: CentralRepository, source: str, release: Release) -> str:
    """The SHA256 of the package ``source`` ran, as its ledger recorded it."""
    entry = Ledger.load(central, source).release(release.version) or {}
    sha256 = entry.get("binpkg_sha256")
    if not sha256:
        raise PublishError(f"{release.cpv} was not installed from a binary package in {source} "
                           f"(its install mode was not \"binary\"): production takes only the "
                           f"package that was healthy there; promote a new release through "
                           f"{source} in binary mode")
    return sha256
