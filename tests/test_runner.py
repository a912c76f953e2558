"""LocalRunner: extra environment goes to the process, never into its argv or an error."""

from __future__ import annotations

import pytest

from releaser.errors import CommandError
from releaser.hosts.runner import LocalRunner

SECRET = "s3cr3t value; $(id)\nsecond line"


def test_env_reaches_the_process_and_not_its_argv():
    runner = LocalRunner(host="here", env={"BASE": "from the runner"})
    result = runner.run(["sh", "-c", 'printf "%s|%s" "$BASE" "$SECRET"'], env={"SECRET": SECRET})
    assert result.stdout == f"from the runner|{SECRET}"
    assert all(SECRET not in arg for arg in result.argv)


def test_a_failing_command_names_no_env_value():
    runner = LocalRunner(host="here")
    with pytest.raises(CommandError) as info:
        runner.run(["sh", "-c", "echo it failed >&2; exit 3"], env={"SECRET": SECRET})
    err = info.value
    assert str(err) == "here: sh -c 'echo it failed >&2; exit 3' exited 3: it failed"
    assert "s3cr3t" not in str(err) and all("s3cr3t" not in arg for arg in err.argv)
