"""The README's first command: `releaser demo` on the embedded default, end to end."""

import re

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
