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
    (["sandbox", "init", "/tmp/x", "--nodes", "qa=1"], 2, "no overlay skeleton"),
    (["sandbox", "down", "/nonexistent-sandbox"], 2, "holds no sandbox"),
])
def test_errors_are_one_line_with_an_exit_code(capsys, args, code, message):
    assert main(args) == code
    err = capsys.readouterr().err
    assert message in err
    assert len([line for line in err.splitlines() if line.strip()]) <= 3, err
