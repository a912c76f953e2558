"""The command line: help, version, and one clear line for every error."""

import pytest

from releaser import __version__
from releaser.cli import main


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("build", "promote", "rollback", "status", "sandbox", "backups", "demo"):
        assert command in out


@pytest.mark.parametrize("args,code,message", [
    (["-c", "/nonexistent/releaser.toml", "status"], 2, "no such configuration file"),
    (["promote"], 2, "Missing argument"),
    (["sandbox", "init", "/tmp/x", "--nodes", "staging=zero"], 2, "is not ENV=COUNT"),
    (["sandbox", "init", "/tmp/x", "--nodes", "QA=1"], 2, "'QA' is not an environment name"),
    (["sandbox", "down", "/nonexistent-sandbox"], 2, "holds no sandbox"),
])
def test_errors_are_one_line_with_an_exit_code(capsys, args, code, message):
    assert main(args) == code
    err = capsys.readouterr().err
    assert message in err
    assert len([line for line in err.splitlines() if line.strip()]) <= 3, err


STAGING = """
[environments.staging]
nodes = [{ name = "s1", root = "nodes/s1", health_url = "http://127.0.0.1:9/health" }]
"""


@pytest.mark.parametrize("command", [["promote", "staging"], ["promote", "staging", "--dry-run"],
                                     ["status"], ["rollback", "staging", "--yes"],
                                     ["backups", "list", "staging"]])
def test_a_missing_central_is_an_error_before_anything_changes(tmp_path, capsys, command):
    from .conftest import unsigned_notice, write_config

    config = write_config(tmp_path / "releaser.toml", tmp_path / "src", extra=STAGING)
    before = sorted(tmp_path.rglob("*"))
    assert main(["-c", str(config), *command]) == 2
    err = capsys.readouterr().err
    assert err.startswith(unsigned_notice("staging")), err  # the exception, then one error
    err = err.removeprefix(unsigned_notice("staging"))
    assert err.count("\n") == 1, err
    assert f"{tmp_path / 'central'} is no central repository (no central.json)" in err
    assert f"check [central] path in {config}" in err and "releaser central init" in err
    assert sorted(tmp_path.rglob("*")) == before  # no central was created


def test_central_init_creates_the_central_explicitly(tmp_path, capsys):
    import json

    from .conftest import write_config

    config = write_config(tmp_path / "releaser.toml", tmp_path / "src", extra=STAGING)
    central = tmp_path / "central"
    assert main(["-c", str(config), "central", "init"]) == 0
    assert capsys.readouterr().out == f"central repository created at {central}\n"
    assert json.loads((central / "central.json").read_text()) == {"format": 1}
    assert {p.name for p in central.iterdir()} >= {"distfiles", "overlays", "ledger", "locks"}
    assert main(["-c", str(config), "central", "init"]) == 0
    assert capsys.readouterr().out == f"central repository already exists at {central}\n"
    assert main(["-c", str(config), "backups", "list", "staging"]) == 0


def test_a_foreign_marker_is_refused(tmp_path, capsys):
    from .conftest import write_config

    config = write_config(tmp_path / "releaser.toml", tmp_path / "src", extra=STAGING)
    (tmp_path / "central").mkdir()
    (tmp_path / "central" / "central.json").write_text('{"format": 99}\n')
    assert main(["-c", str(config), "central", "init"]) == 2
    assert "is not a central repository marker of format 1" in capsys.readouterr().err
    assert main(["-c", str(config), "status"]) == 2
    assert "is not a central repository marker of format 1" in capsys.readouterr().err


class _Terminal:
    """stdin of a terminal where the operator types ``answer``."""

    def __init__(self, answer: str):
        import io

        self._lines = io.StringIO(answer)

    def isatty(self) -> bool:
        return True

    def readline(self, *args) -> str:
        return self._lines.readline(*args)


def test_declining_the_rollback_prompt_changes_nothing_and_exits_2(tmp_path, capsys,
                                                                   monkeypatch):
    """A "no" is an answer, not an interruption (130): exit 2, nothing was changed."""
    import sys
    from types import SimpleNamespace

    from releaser.cli import report
    from releaser.deploy import rollback

    from .conftest import unsigned_notice, write_config

    config = write_config(tmp_path / "releaser.toml", tmp_path / "src", extra=STAGING)
    assert main(["-c", str(config), "central", "init"]) == 0
    plan = SimpleNamespace(target="1.0.0")
    monkeypatch.setattr(rollback, "plan_rollback", lambda *a, **k: plan)
    monkeypatch.setattr(report, "print_rollback_plan", lambda p: print(f"plan -> {p.target}"))
    executed = []
    monkeypatch.setattr(rollback, "execute_rollback", lambda *a, **k: executed.append(a))
    monkeypatch.setattr(sys, "stdin", _Terminal("n\n"))
    capsys.readouterr()
    assert main(["-c", str(config), "rollback", "staging"]) == 2
    captured = capsys.readouterr()
    assert "roll staging back to 1.0.0? [y/N]" in captured.out
    assert captured.err == (unsigned_notice("staging") +
                            "releaser: error: rollback not confirmed: nothing was changed\n")
    assert executed == []
