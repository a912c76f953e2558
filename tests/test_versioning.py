"""Version mapping from git tags, checked against Portage's own ordering."""

import pytest

from releaser.build import versions as versioning
from releaser.build.versions import resolve_version
from releaser.errors import VersionError
from releaser.build.git_source import open_repo

from .conftest import commit_all, git


@pytest.mark.parametrize("tag,expected", [
    ("v1.2.3", "1.2.3"),
    ("v2.0.0-rc1", "2.0.0_rc1"),
    ("v2.0.0-rc.2", "2.0.0_rc2"),
    ("v1.0-beta3", "1.0_beta3"),
    ("v1.0.0-alpha", "1.0.0_alpha"),
    ("v3.1.4_p2", "3.1.4_p2"),
])
def test_tag_to_version(tag, expected):
    assert versioning.tag_to_version(tag) == expected


@pytest.mark.parametrize("tag", ["v1.x", "v1.0.0-foo", "v1.0.0-rc1-hotfix", "v", "1.0.0"])
def test_tag_without_gentoo_version_is_refused(tag):
    with pytest.raises(VersionError):
        versioning.tag_to_version(tag)


def test_commits_after_tag_sort_between_releases():
    after = versioning.version_after("1.2.3", 4)
    assert after == "1.2.3_p4"
    assert versioning.compare(after, "1.2.3") > 0
    assert versioning.compare(after, "1.2.4_rc1") < 0
    assert versioning.compare(after, "1.2.4") < 0
    rc_after = versioning.version_after("2.0.0_rc1", 3)
    assert versioning.compare("2.0.0_rc1", rc_after) < 0 < versioning.compare("2.0.0", rc_after)


def test_versions_from_a_real_repository(app_repo):
    repo = open_repo(app_repo)
    assert resolve_version(repo, repo.head.commit, "v").version == "1.0.0"
    (app_repo / "app" / "extra.txt").write_text("x\n")
    commit_all(app_repo, "second")
    (app_repo / "app" / "extra.txt").write_text("y\n")
    commit_all(app_repo, "third")
    got = resolve_version(repo, repo.head.commit, "v")
    assert (got.version, got.tag, got.distance) == ("1.0.0_p2", "v1.0.0", 2)
    git(app_repo, "tag", "v2.0.0-rc1")
    assert resolve_version(repo, repo.head.commit, "v").version == "2.0.0_rc1"


def test_untagged_history_gets_documented_default(tmp_path):
    from .conftest import git as g
    repo_dir = tmp_path / "r"
    repo_dir.mkdir()
    g(repo_dir, "init", "-q")
    (repo_dir / "a").write_text("a")
    commit_all(repo_dir, "one")
    (repo_dir / "a").write_text("b")
    commit_all(repo_dir, "two")
    repo = open_repo(repo_dir)
    got = resolve_version(repo, repo.head.commit, "v")
    assert got.version == "0_p2" and got.tag is None
    assert versioning.compare(got.version, "0.0.1") < 0


def test_dirty_version_sorts_between_its_commit_and_the_next_and_no_commit_takes_it():
    from releaser.build.versions import ResolvedVersion, dirty_version

    stamp = 1773585000  # 2026-03-15T14:30:00Z
    on_tag = dirty_version(ResolvedVersion("1.0.0", "v1.0.0", 0), stamp)
    after = dirty_version(ResolvedVersion("1.0.0_p1", "v1.0.0", 1), stamp)
    assert (on_tag, after) == ("1.0.0_p0_p20260315143000", "1.0.0_p1_p20260315143000")
    assert versioning.compare("1.0.0", on_tag) < 0 < versioning.compare("1.0.0_p1", on_tag)
    assert versioning.compare("1.0.0_p1", after) < 0 < versioning.compare("1.0.0_p2", after)
    # a later snapshot of the same commit is newer
    assert versioning.compare(dirty_version(ResolvedVersion("1.0.0_p1", "v1.0.0", 1),
                                            stamp + 1), after) > 0
