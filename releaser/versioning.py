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
====================================  =========================

Git commit and branch cannot be carried by a Gentoo version; they go into the
release record instead.
"""

from __future__ import annotations

import re

from dataclasses import dataclass

from portage.versions import vercmp, ververify

from . import gitsource
from .errors import VersionError

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


def newest(versions) -> str | None:
    from functools import cmp_to_key

    ordered = sorted(versions, key=cmp_to_key(compare))
    return ordered[-1] if ordered else None


@dataclass(frozen=True)
class ResolvedVersion:
    version: str
    tag: str | None
    distance: int


def resolve_version(repo, commit, tag_prefix: str) -> ResolvedVersion:
    """Version of ``commit`` from the nearest release tag (see releaser.versioning)."""
    found = gitsource.describe(repo, commit, tag_prefix)
    if found is None:
        count = gitsource.commit_count(repo, commit)
        return ResolvedVersion(version_after(NO_TAG_BASE, count), None, count)
    tag, distance = found
    base = tag_to_version(tag, tag_prefix)
    return ResolvedVersion(version_after(base, distance), tag, distance)
