"""The release record: what was built, from what, with which digests.

A release is immutable once built.  Its record travels with the artifacts
(``release.json`` beside the ebuild) and into the central repository's ledger,
so that promote, status and rollback all speak of the same thing.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from releaser.errors import ReleaseNotFound

#: What a release was built from (``Release.kind``): exactly a release tag
#: (``v1.2.3``), exactly a pre-release tag (``v2.0.0-rc1``: alpha, beta, pre, rc), or
#: anything else (commits after a tag, no tag, uncommitted changes).
RELEASE, RC, SNAPSHOT = "release", "rc", "snapshot"
_PRE_RELEASE = re.compile(r"_(alpha|beta|pre|rc)\d*")


@dataclass(frozen=True)
class Release:
    name: str
    category: str
    version: str
    commit: str
    branch: str | None
    tag: str | None
    distance: int
    dirty: bool
    build_number: int | None
    built_at: str
    source_tree: str  # git tree id of the app subdirectory: same tree, same tarball
    tarball: dict  # name, size, blake2b, sha512
    ebuild: dict  # name, sha512
    manifest: dict  # sha512
    schema_version: int | None = None
    extra: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)  # sha512 of metadata.xml
    #: The name that moves with the branch (``notes:main``), like a container
    #: image's branch tag next to its digest: the newest build of that branch.
    #: None when built from a tag or a detached commit no branch points at.
    moving_name: str | None = None

    @property
    def cp(self) -> str:
        return f"{self.category}/{self.name}"

    @property
    def cpv(self) -> str:
        return f"{self.category}/{self.name}-{self.version}"

    @property
    def pv(self) -> str:
        return f"{self.name}-{self.version}"

    @property
    def kind(self) -> str:
        """RELEASE, RC or SNAPSHOT: what an environment's ``allow`` policy judges."""
        if self.dirty or not self.tag or self.distance:
            return SNAPSHOT
        return RC if _PRE_RELEASE.search(self.version) else RELEASE

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> "Release":
        return cls(**data)

    def same_artifacts(self, other: "Release") -> bool:
        """True when both records describe byte-identical tarball, ebuild, metadata.xml
        and Manifest."""
        return (self.tarball == other.tarball and self.ebuild == other.ebuild
                and self.metadata == other.metadata and self.manifest == other.manifest)


def load_release(path: Path) -> Release:
    try:
        return Release.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ReleaseNotFound(f"{path}: no such release record") from None
    except (ValueError, TypeError) as exc:
        raise ReleaseNotFound(f"{path}: not a valid release record ({exc})") from None
