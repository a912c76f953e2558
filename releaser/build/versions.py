"""Gentoo versions (PV) from git tags, validated and compared by Portage itself.

Mapping (``v`` is the configurable tag prefix):

====================================  =========================
commit                                version
====================================  =========================
tagged ``v1.2.3``                     ``1.2.3``
tagged ``v2.0.0-rc1`` / ``-rc.1``     ``2.0.0_rc1`` (alpha, beta, pre, rc, p)
N commits after ``v1.2.3``            ``1.2.3_pN``  (> 1.2.3, < 1.2.4 and < 1.2.4_rc1)
N commits after ``v2.0.0-rc1``        ``2.0.0_rc1_pN``
no release tag reachable              ``0_pN``, N = commits in history (sorts before any release)
uncommitted changes on a commit V     ``V_pSTAMP`` (``T_p0_pSTAMP`` on the tag T itself),
(``--allow-dirty``)                   STAMP = UTC time of the snapshot, ``YYYYMMDDHHMMSS``
====================================  =========================

A dirty build must never take a version a real commit can take: the next
commit's ``1.0.0_p2`` would otherwise be published with the dirty bytes and the
real commit refused for good (a published version never changes).  Its version
keeps the position of the commit it was made on and adds the time: it sorts
after that commit and before the next one (``1.0.0_p1 < 1.0.0_p1_p20260315143000
< 1.0.0_p2``), and no commit can reach it, since a commit adds at most one
``_pN`` whose N counts commits, never a 14-digit time.

Git commit and branch cannot be carried by a Gentoo version; they go into the
release record instead.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from functools import cmp_to_key

from portage.versions import vercmp, ververify

from releaser.build import git_source as gitsource
from releaser.errors import VersionError

NO_TAG_BASE = "0"

# Pre/post-release words Gentoo knows, as people write them in tags: "-rc1", "-rc.1", "_rc1".
_SUFFIX = re.compile(r"[-_.]?(alpha|beta|pre|rc|p)\.?(\d*)")


def tag_to_version(tag: str, prefix: str = "v") -> str:
    """Map a release tag to a Gentoo version, or raise VersionError."""
    if not tag.startswith(prefix):
        raise VersionError(f"tag {tag!r} does not start with {prefix!r}")
    body = tag[len(prefix):]
    head = re.match(r"[0-9][0-9.]*[a-z]?", body)
    if head:
        body = head.group(0) + _SUFFIX.sub(r"_\1\2", body[head.end():])
    if not ververify(body):
        raise VersionError(f"tag {tag!r} maps to no valid Gentoo version ({body!r})")
    return body


def version_after(base: str, distance: int) -> str:
    """The version of a commit ``distance`` commits after ``base``."""
    version = base if distance == 0 else f"{base}_p{distance}"
    if not ververify(version):
        raise VersionError(f"{version!r} is not a valid Gentoo version")
    return version


def validate(version: str) -> str:
    """Return ``version`` when Portage accepts it as a PV, else raise VersionError."""
    if not isinstance(version, str) or not ververify(version):
        raise VersionError(f"{version!r} is not a valid Gentoo version")
    return version


def compare(a: str, b: str) -> int:
    """Portage's ordering of two versions: negative, zero or positive."""
    return vercmp(validate(a), validate(b))


def same(a: str | None, b: str | None) -> bool:
    """Whether Portage takes ``a`` and ``b`` for one version (``1.0.50`` and ``1.00.50``).

    Versions are matched this way, never as strings: two spellings of one
    version would otherwise both publish, and masking one would mask the other.
    None (nothing installed) is the same only as None.
    """
    if a is None or b is None:
        return a is b
    return compare(a, b) == 0


def find(version: str, versions) -> str | None:
    """The member of ``versions`` that is the same version as ``version``, or None."""
    return next((v for v in versions if same(v, version)), None)


def sort_key(version: str):
    """The key that sorts versions in Portage's order: ``sorted(versions, key=sort_key)``."""
    return _COMPARED(version)


_COMPARED = cmp_to_key(compare)


def newest(versions) -> str | None:
    """The highest of ``versions`` by Portage's order (the last given of equals), or None."""
    ordered = sorted(versions, key=sort_key)
    return ordered[-1] if ordered else None


@dataclass(frozen=True)
class ResolvedVersion:
    version: str
    tag: str | None
    distance: int


def dirty_version(head: ResolvedVersion, snapshot_time: int) -> str:
    """The version of uncommitted changes on top of the commit whose version is ``head``."""
    position = head.version if head.distance else f"{head.version}_p0"
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(snapshot_time))
    return validate(f"{position}_p{stamp}")


def resolve_source_version(repo, source: gitsource.SourceCommit,
                           tag_prefix: str) -> ResolvedVersion:
    """The version of a build of ``source``: its commit's, or a dirty build's own.

    A dirty source is a ``git stash create`` snapshot whose first parent is
    HEAD; its tag and distance are HEAD's.
    """
    if not source.dirty:
        return resolve_version(repo, source.commit, tag_prefix)
    head = resolve_version(repo, source.commit.parents[0], tag_prefix)
    return ResolvedVersion(dirty_version(head, source.commit.committed_date), head.tag,
                           head.distance)


def resolve_version(repo, commit, tag_prefix: str) -> ResolvedVersion:
    """Version of ``commit`` from the nearest release tag (see releaser.build.versions)."""
    found = gitsource.describe(repo, commit, tag_prefix)
    if found is None:
        count = gitsource.commit_count(repo, commit)
        return ResolvedVersion(version_after(NO_TAG_BASE, count), None, count)
    tag, distance = found
    base = tag_to_version(tag, tag_prefix)
    return ResolvedVersion(version_after(base, distance), tag, distance)
