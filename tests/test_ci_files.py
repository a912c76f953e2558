"""The CI examples parse, and every ``releaser ...`` they run is a real command with
real options (click's own parser judges each one); ``./scripts/test`` writes the
JUnit report ``.ci/run`` publishes.

The Jenkinsfile is parsed by a Groovy 3 grammar (groovy-parser, Lark) and its
commands are read from the parse tree's string literals; the workflow by PyYAML.
"""

from __future__ import annotations

import re
import shlex

import click
import pytest
import yaml
from groovy_parser.parser import parse_groovy_content
from lark.exceptions import LarkError
from lark.lexer import Token

from releaser.cli import cli

from .conftest import PROJECT

JENKINSFILE = PROJECT / "Jenkinsfile"
WORKFLOW = PROJECT / ".github" / "workflows" / "release.yml"
#: Shell and CI variables: any value of the right shape will do for the parser.
VARIABLE = re.compile(r"\$\{\{[^}]*\}\}|\$\{?[A-Za-z_][A-Za-z0-9_]*\}?")


def check_command(line: str) -> list[str]:
    """The command path of ``releaser ...``, after click parsed its arguments; raises
    click's UsageError (unknown command, option, or bad value) otherwise."""
    words = shlex.split(VARIABLE.sub("7", line))
    assert words[0] == "releaser", line
    command, path, rest = cli, [], words[1:]
    while isinstance(command, click.Group):
        name, rest = rest[0], rest[1:]
        command = command.commands.get(name)
        if command is None:
            raise click.UsageError(f"no such command {name!r} in {line!r}")
        path.append(name)
    command.make_context(" ".join(["releaser", *path]), rest)
    return path


def jenkins_commands(text: str) -> list[str]:
    tree = parse_groovy_content(text)
    values = [t.value[1] if isinstance(t.value, tuple) else t.value
              for t in tree.scan_values(lambda v: isinstance(v, Token))]
    return [v for v in values if isinstance(v, str) and v.startswith("releaser ")]


def workflow_commands(workflow: dict) -> list[str]:
    runs = [step["run"] for job in workflow["jobs"].values() for step in job["steps"]
            if "run" in step]
    return [line.strip() for run in runs for line in run.splitlines()
            if line.strip().startswith("releaser ")]


def test_the_checker_refuses_what_does_not_exist():
    assert check_command('releaser promote staging --reason "$REASON"') == ["promote"]
    assert check_command("releaser lock release staging --break x") == ["lock", "release"]
    for bad in ("releaser deploy staging", "releaser promote staging --no-such-option",
                "releaser build --build-number many", "releaser lock explode staging"):
        with pytest.raises(click.UsageError):
            check_command(bad)


def test_the_jenkinsfile_parses_and_calls_only_real_commands():
    text = JENKINSFILE.read_text()
    commands = jenkins_commands(text)
    used = {" ".join(check_command(c)) for c in commands}
    assert used >= {"build", "gate", "doctor", "promote", "rollback", "history"}, used
    # commit stage, then manual promotion to staging and production, and the rollback job
    stages = re.findall(r"stage\('([^']+)'\)", text)
    assert stages == ["Commit: build", "Commit: gate", "Promote to staging",
                      "Promote to production", "Rollback"]
    assert text.count("input {") == 3 and "junit testResults: 'reports/*.xml'" in text
    # control: the parser does reject a Jenkinsfile with a brace missing
    with pytest.raises(LarkError):
        parse_groovy_content(text.replace("    }\n}\n", "    }\n", 1).rstrip("}\n"))


def test_the_workflow_parses_and_calls_only_real_commands():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare on as true
    assert set(triggers) == {"push", "workflow_dispatch"}
    jobs = workflow["jobs"]
    assert jobs["staging"]["needs"] == "commit" and jobs["production"]["needs"] == "staging"
    assert jobs["staging"]["environment"] == "staging"  # reviewers make these manual
    assert jobs["production"]["environment"] == "production"
    used = {" ".join(check_command(c)) for c in workflow_commands(workflow)}
    assert used >= {"build", "gate", "doctor", "promote", "rollback", "history", "status"}
    uploads = [s for s in jobs["commit"]["steps"] if s.get("uses", "").startswith(
        "actions/upload-artifact")]
    assert uploads and uploads[0]["with"]["path"] == "reports/*.xml"
    # inputs reach commands through env, never spliced into a script
    for job in jobs.values():
        for step in job["steps"]:
            assert "${{" not in step.get("run", ""), step


def test_scripts_test_writes_the_junit_report_ci_publishes():
    script = (PROJECT / "scripts" / "test").read_text()
    assert "--junitxml=" in script and "tests app/tests" in script
    assert "reports/junit.xml" in (PROJECT / ".ci" / "run").read_text()
