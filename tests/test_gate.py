"""The quality gate: the app's tests with a JUnit report, pkgcheck on the generated
ebuild, the configured linters; a failure stops the publish and says why.

Real git repositories holding the real app, its real pytest suite (one file
of it, to stay quick), the real pkgcheck offline.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from releaser.build.builder import build_release
from releaser.cli import main
from releaser.config import load_config
from releaser.errors import ConfigError
from releaser.exitcodes import GATE_FAILED
from releaser.gate.pkgcheck import pkgcheck_step

from .conftest import commit_all, write_config

TESTS = '["{python}", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--noconftest", ' \
        '"--junitxml={junit}", ' \
        '"tests/test_notes_version.py", "tests/test_gate_extra.py"]'
LINT_OK = '["{python}", "-m", "compileall", "-q", "notes"]'


def gate_config(tmp_path: Path, source: Path, lint: str = LINT_OK, env: str = "") -> Path:
    return write_config(tmp_path / "releaser.toml", source,
                        extra=f"{env}\n[gate]\ntests = {TESTS}\ncommands = [{lint}]\n"
                              f'[build]\nout = "{tmp_path / "out"}"\n')


def add_test(source: Path, body: str, message: str) -> None:
    (source / "app" / "tests" / "test_gate_extra.py").write_text(body)
    commit_all(source, message, when="2026-02-01T00:00:00+00:00")


def releaser(config: Path, *args: str) -> int:
    return main(["-c", str(config), *args])


def test_a_passing_gate_and_its_reports(tmp_path, app_repo, capsys):
    add_test(app_repo, "def test_fine():\n    assert 1 + 1 == 2\n", "a passing test")
    config = gate_config(tmp_path, app_repo)
    assert releaser(config, "gate") == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "gate HEAD (" in out and "): passed" in out
    assert "pass  tests: 7 passed (JUnit: app-tests.xml)" in out
    assert "pass  pkgcheck: notes-1.0.0_p1.ebuild: no error" in out
    assert f"pass  lint: {sys.executable}: ok" in out  # {python} was filled in
    reports = tmp_path / "out" / "reports"
    app = ET.parse(reports / "app-tests.xml").getroot()
    assert sum(int(s.get("tests")) for s in app.iter("testsuite")) == 7
    gate = ET.parse(reports / "gate.xml").getroot()
    assert [c.get("name") for c in gate.iter("testcase")][:2] == ["tests", "pkgcheck"]
    assert gate.get("failures") == "0"


def test_failing_tests_and_linter_fail_the_gate_and_say_why(tmp_path, app_repo, capsys):
    (app_repo / "app" / "notes" / "lintme.py").write_text("def broken(:\n    pass\n")
    add_test(app_repo, "def test_broken():\n    assert 1 + 1 == 3\n", "a failing test")
    config = gate_config(tmp_path, app_repo)
    assert releaser(config, "gate", "--json") == GATE_FAILED
    report = json.loads(capsys.readouterr().out)
    steps = {s["name"]: s for s in report["steps"]}
    assert report["ok"] is False
    assert steps["tests"]["ok"] is False
    assert steps["tests"]["detail"] == "1 of 7 failed: tests.test_gate_extra::test_broken"
    assert steps["pkgcheck"]["ok"] is True
    lint_step = next(s for n, s in steps.items() if n.startswith("lint: "))
    assert lint_step["ok"] is False and "SyntaxError" in lint_step["detail"], lint_step
    gate = ET.parse(tmp_path / "out" / "reports" / "gate.xml").getroot()
    assert gate.get("failures") == "2"
    failure = next(c for c in gate.iter("testcase") if c.get("name") == "tests").find("failure")
    assert failure.get("message").startswith("1 of 7 failed")


def test_pkgcheck_fails_a_broken_ebuild(tmp_path, app_repo):
    """A template defect that reaches the ebuild (an unknown licence) is an error."""
    built = build_release(load_config(write_config(tmp_path / "r.toml", app_repo)),
                          out=tmp_path / "out")
    ebuild = built.release_dir / built.release.ebuild["name"]
    assert pkgcheck_step(built.release_dir, tmp_path / "scan-ok").ok
    ebuild.write_text(ebuild.read_text().replace('LICENSE="', 'LICENSE="NOT-A-LICENSE '))
    result = pkgcheck_step(built.release_dir, tmp_path / "scan")
    assert not result.ok and "UnknownLicense" in result.detail, result.detail


def test_promote_with_the_gate_publishes_nothing_when_it_fails(tmp_path, app_repo, capsys):
    add_test(app_repo, "def test_broken():\n    assert False, 'no'\n", "a failing test")
    node = f'{{name = "s1", app_url = "http://127.0.0.1:9", root = "{tmp_path / "s1"}"}}'
    config = gate_config(tmp_path, app_repo, env=f"[environments.staging]\nnodes = [{node}]\n")
    assert releaser(config, "central", "init") == 0
    capsys.readouterr()
    assert releaser(config, "promote", "staging", "--gate") == GATE_FAILED
    err = capsys.readouterr().err
    assert ("releaser: error: the quality gate failed on " in err
            and "tests: 1 of 7 failed: tests.test_gate_extra::test_broken" in err
            and "nothing was published" in err), err
    central = tmp_path / "central"
    assert list((central / "distfiles").iterdir()) == []
    assert list((central / "overlays").iterdir()) == []


@pytest.mark.parametrize("gate, message", [
    ('commands = ["ruff check ."]', "commands[0]: expected an argv list"),
    ("commands = [[]]", "commands[0]: an empty command"),
    ('commands = [["-x"]]', "'-x' is not a program"),
    ('tests = "pytest"', "gate.tests"),
    ('timeout = "forever"', "not a duration"),
    ("pkgcheck = 1", "gate.pkgcheck"),
])
def test_a_bad_gate_is_refused_at_load(tmp_path, app_repo, gate, message):
    path = write_config(tmp_path / "releaser.toml", app_repo, extra=f"[gate]\n{gate}\n")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(path)
