"""The README's first command: `releaser demo` on the embedded default, end to end."""

import re

import pytest

from releaser.cli import main


def test_demo_runs_the_whole_pipeline(tmp_path, capsys, monkeypatch):
    from .conftest import PROJECT

    from .conftest import git

    monkeypatch.chdir(PROJECT)
    head = git(PROJECT, "rev-parse", "HEAD")
    tags = git(PROJECT, "tag", "--list")
    assert main(["demo", "--dir", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "production runs 1.1.0 on all 2 node(s), healthy" in out
    assert "rollback plan for production: 1.1.0 -> 1.0.0" in out
    assert "production is back on 1.0.0" in out
    assert "overlay offers 1.0.0, 1.1.0 (masked); environment is on 1.0.0" in out
    assert re.search(r"demo finished in \d+\.\ds", out)
    # the demo committed only in its own source repository, never in the project
    assert (tmp_path / "demo" / "src" / ".git").is_dir()
    assert git(PROJECT, "rev-parse", "HEAD") == head and git(PROJECT, "tag", "--list") == tags


def test_demo_refuses_bad_arguments_before_making_anything(tmp_path):
    from releaser.sandbox.demo import run_demo
    from releaser.errors import UsageError

    from .conftest import PROJECT

    lines = []
    with pytest.raises(UsageError, match="no app/ with the notes demo app"):
        run_demo(tmp_path / "new", project=tmp_path, keep=False, echo=lines.append)
    assert not (tmp_path / "new").exists()
    (tmp_path / "used" / "src").mkdir(parents=True)
    with pytest.raises(UsageError, match=r"used/src already exists"):
        run_demo(tmp_path / "used", project=PROJECT, keep=False, echo=lines.append)
    assert [p.name for p in (tmp_path / "used").iterdir()] == ["src"]
    assert lines == []


def test_a_demo_that_fails_after_making_things_says_what_is_left(tmp_path, monkeypatch):
    from releaser.sandbox import demo
    from releaser.errors import SandboxError

    from .conftest import PROJECT

    monkeypatch.setattr(demo, "DEFAULT_NODES", {"QA": 1})  # not an environment name
    with pytest.raises(SandboxError) as info:
        demo.run_demo(tmp_path / "d", project=PROJECT, keep=False, echo=lambda _l: None)
    assert info.value.exit_code == 1
    assert str(info.value) == (
        "demo stopped: 'QA' is not an environment name (a lower-case letter, then lower-case "
        f"letters, digits, '_' or '-'); what it made so far is in {tmp_path / 'd'}")
    assert (tmp_path / "d" / "src" / ".git").is_dir()


def test_a_node_root_refused_changes_nothing_and_a_failed_one_says_what_is_left(tmp_path):
    from releaser.sandbox import noderoot
    from releaser.errors import SandboxError, UsageError

    def spec(root, **kw):
        return noderoot.NodeRootSpec(root=root, repos=[noderoot.RepoSpec("a")],
                                     profile=noderoot.ProfileSpec("a"), **kw)

    with pytest.raises(UsageError, match="package.provided entry"):
        noderoot.create_node_root(spec(tmp_path / "n1", provided=["dev-lang/python;id"]))
    assert not (tmp_path / "n1").exists()
    profile = tmp_path / "n2" / "etc/portage/make.profile"
    profile.parent.mkdir(parents=True)
    profile.write_text("not a symlink\n")
    with pytest.raises(UsageError, match="not a symlink"):
        noderoot.create_node_root(spec(tmp_path / "n2"))
    assert sorted(p.name for p in profile.parent.iterdir()) == ["make.profile"]
    (tmp_path / "n3" / "var").mkdir(parents=True)
    (tmp_path / "n3" / "var" / "cache").write_text("a file where a folder goes\n")
    with pytest.raises(SandboxError, match=r"n3: laying out the node root stopped part way: "
                       r".*what was made is left there") as info:
        noderoot.create_node_root(spec(tmp_path / "n3"))
    assert info.value.exit_code == 1
    assert (tmp_path / "n3" / "var/db/pkg").is_dir()  # made before the failure


def test_sandbox_init_that_fails_part_way_stops_its_server_and_says_what_is_left(tmp_path):
    from releaser.errors import SandboxError
    from releaser.sandbox.world import STATE, default_app, init_sandbox

    from .sandboxes import make_source

    directory = tmp_path / "sandbox"
    profile = directory / "nodes" / "staging-1" / "etc" / "portage" / "make.profile"
    profile.parent.mkdir(parents=True)
    profile.write_text("not a symlink\n")
    app = default_app(make_source(tmp_path / "src"))
    with pytest.raises(SandboxError, match=r"^sandbox init stopped part way: .*make\.profile "
                       r"exists and is not a symlink.*files made so far are left in") as info:
        init_sandbox(directory, app, {"staging": 1})
    assert info.value.exit_code == 1
    assert (directory / "central").is_dir()  # made before the failure, and said so
    assert not (directory / "distserver.pid").exists() and not (directory / STATE).exists()


def test_sandbox_init_without_the_sandbox_extra_says_how_to_install_it(tmp_path, monkeypatch):
    """Flask and waitress come with the ``sandbox`` extra, not with the tool: a sandbox
    without them is refused before anything is made."""
    from releaser.errors import UsageError
    from releaser.sandbox import world

    assert [e.rsplit("-", 1)[0] for e in world.provided_packages()] == [
        "dev-lang/python", "dev-python/flask", "dev-python/waitress"]
    monkeypatch.setattr(world, "APP_DISTRIBUTIONS", ("flask", "no-such-distribution"))
    with pytest.raises(UsageError, match=r"no-such-distribution, which is not installed: "
                       r"pip install 'releaser\[sandbox\]'"):
        world.init_sandbox(tmp_path / "sb", world.default_app(tmp_path), {"staging": 1})
    assert not (tmp_path / "sb").exists()
