"""What an environment may take: ``[environments.NAME] allow``.

``"release"``: only a release built exactly from a release tag (``v1.2.3``);
``"rc"``: also exactly from a release-candidate tag (``v2.0.0-rc1``); ``"any"``:
any build, including commits after a tag and untagged branches.  Production
defaults to ``"release"``, every other environment to ``"any"``
(``releaser.config.validate.default_allow``).

Judged from the release record (``Release.kind``: its tag, its distance from
it, dirty or not), so a release promoted from staging to production is judged
by how it was built, never by where it has been.
"""

from __future__ import annotations

from releaser.build.release import RC, RELEASE, Release
from releaser.config import EnvironmentConfig
from releaser.errors import PolicyRefused

#: The kinds of release each policy accepts.
ACCEPTS = {"release": {RELEASE}, "rc": {RELEASE, RC}, "any": {RELEASE, RC, "snapshot"}}

_WANTS = {"release": "releases built from a release tag (vX.Y.Z)",
          "rc": "releases built from a release or release-candidate tag (vX.Y.Z, vX.Y.Z-rcN)"}


def built_from(release: Release) -> str:
    """How ``release`` was built, in words."""
    if release.dirty:
        return "uncommitted changes"
    if not release.tag:
        return f"commit {release.commit[:12]}, which no release tag precedes"
    if release.distance:
        return (f"commit {release.commit[:12]}, {release.distance} commit(s) after tag "
                f"{release.tag}")
    return f"tag {release.tag}"


def check_policy(env: EnvironmentConfig, release: Release) -> None:
    """Refuse (PolicyRefused, exit 2, nothing changed) a release ``env`` does not take."""
    if release.kind in ACCEPTS[env.allow]:
        return
    raise PolicyRefused(
        f"{env.name} takes only {_WANTS[env.allow]} (allow = \"{env.allow}\"); "
        f"{release.cpv} was built from {built_from(release)}: tag a commit and build it, "
        f"or set [environments.{env.name}] allow")
