"""What an environment takes (``[environments.NAME] allow``), judged from how a release
was built; the release record's branch and moving name.

Releases are built for real from a git repository (tags, commits after them,
uncommitted changes); the refusal is shown end to end on a sandbox whose
production refuses what staging took.
"""

from __future__ import annotations

import dataclasses

import pytest

from releaser.build.builder import build_release
from releaser.build.release import RC, RELEASE, SNAPSHOT
from releaser.cli import main
from releaser.config import load_config
from releaser.deploy.policy import check_policy
from releaser.errors import ConfigError, PolicyRefused

from .conftest import commit_all, git, write_config
from .sandboxes import Sandbox
from .test_promote import installed


def environments(allow_staging: str | None = None, keep: str = "") -> str:
    staging = f'allow = "{allow_staging}"\n' if allow_staging else ""
    return (f"[environments.staging]\n{staging}{keep}\n[environments.production]\n"
            'promote_from = "staging"\n[environments.development]\n')


@pytest.fixture
def config(tmp_path, app_repo):
    return load_config(write_config(tmp_path / "releaser.toml", app_repo,
                                    extra=environments()))


def build(config, repo, **kwargs):
    return build_release(config, out=repo.parent / "out", **kwargs).release


def test_kinds_of_release_and_the_policy_of_each_environment(config, app_repo):
    env = config.environments
    assert (env["production"].allow, env["staging"].allow, env["development"].allow) == (
        "release", "any", "any")
    rc_env = dataclasses.replace(env["staging"], allow="rc")

    tagged = build(config, app_repo)
    assert (tagged.kind, tagged.tag, tagged.branch, tagged.moving_name) == (
        RELEASE, "v1.0.0", "main", "notes:main")
    for e in (env["production"], rc_env, env["development"]):
        check_policy(e, tagged)

    (app_repo / "app" / "CHANGES").write_text("rc\n")
    commit_all(app_repo, "rc", when="2026-02-01T00:00:00+00:00")
    git(app_repo, "tag", "v1.1.0-rc1")
    rc = build(config, app_repo)
    assert (rc.kind, rc.version) == (RC, "1.1.0_rc1")
    check_policy(rc_env, rc)
    with pytest.raises(PolicyRefused, match=r"production takes only releases built from a "
                       r"release tag \(vX.Y.Z\) \(allow = \"release\"\); www-apps/notes-1.1.0_rc1 "
                       r"was built from tag v1.1.0-rc1"):
        check_policy(env["production"], rc)

    (app_repo / "app" / "CHANGES").write_text("after\n")
    commit_all(app_repo, "after the rc", when="2026-02-02T00:00:00+00:00")
    snapshot = build(config, app_repo)
    assert (snapshot.kind, snapshot.version, snapshot.distance) == (SNAPSHOT, "1.1.0_rc1_p1", 1)
    check_policy(env["development"], snapshot)
    for e in (rc_env, env["production"]):
        with pytest.raises(PolicyRefused, match="1 commit\\(s\\) after tag v1.1.0-rc1"):
            check_policy(e, snapshot)

    (app_repo / "app" / "CHANGES").write_text("dirty\n")
    dirty = build(config, app_repo, allow_dirty=True)
    assert dirty.kind == SNAPSHOT and dirty.dirty
    with pytest.raises(PolicyRefused, match="built from uncommitted changes"):
        check_policy(rc_env, dirty)

    # a CI checkout: detached HEAD on the branch's head still names the branch
    git(app_repo, "checkout", "-q", "--", "app/CHANGES")
    git(app_repo, "checkout", "-q", "--detach", "HEAD")
    detached = build(config, app_repo)
    assert (detached.branch, detached.moving_name) == ("main", "notes:main")
    # a ref that is a tag names no branch and no moving name
    assert build(config, app_repo, ref="v1.0.0").moving_name is None


@pytest.mark.parametrize("line, message", [
    ('allow = "releases"', "'releases' is not a policy (give one of release, rc, any)"),
    ("allow = 1", "allow"),
    ("keep_versions = -1", "-1 must be 0 or more"),
])
def test_a_bad_policy_is_refused_at_load(tmp_path, app_repo, capsys, line, message):
    path = write_config(tmp_path / "releaser.toml", app_repo,
                        extra=environments(keep=line + "\n"))
    with pytest.raises(ConfigError, match="environments.staging"):
        load_config(path)
    assert main(["-c", str(path), "status"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_production_refuses_a_release_not_built_from_a_release_tag(tmp_path, capsys):
    sb = Sandbox(tmp_path, {"staging": 1, "production": 1})
    try:
        (sb.source / "app" / "CHANGES").write_text("fix\n")
        commit_all(sb.source, "a fix, not tagged", when="2026-02-01T00:00:00+00:00")
        assert main(["-c", str(sb.config_path), "promote", "staging"]) == 0
        assert installed(sb, "staging-1") == "1.0.0_p1"
        capsys.readouterr()
        assert main(["-c", str(sb.config_path), "promote", "production"]) == 2
        err = capsys.readouterr().err
        assert ("production takes only releases built from a release tag (vX.Y.Z) (allow = "
                "\"release\"); www-apps/notes-1.0.0_p1 was built from commit ") in err, err
        assert "1 commit(s) after tag v1.0.0" in err
        assert installed(sb, "production-1") is None
        assert not (sb.central / "locks" / "production.lock").exists()
    finally:
        sb.down()
