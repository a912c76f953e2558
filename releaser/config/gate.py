"""``[gate]``: the quality gate a release passes before it is published.

::

    [gate]
    tests = ["{python}", "-m", "pytest", "-q", "--junitxml={junit}"]  # false: no tests
    commands = [["ruff", "check", "."]]     # linters, each an argv
    pkgcheck = true                          # Gentoo's QA on the generated ebuild
    timeout = "15m"                          # per command

Commands run in the app's folder of the very commit being released (exported
from git, never the work tree), as argv lists, never through a shell.  Two
placeholders are replaced in their arguments: ``{python}`` (the Python running
releaser) and ``{junit}`` (where the tests' JUnit report is to be written).
"""

from __future__ import annotations

from dataclasses import dataclass

from releaser.config import validate

#: The app's tests when ``[gate] tests`` is not set: its pytest suite, reported as JUnit.
DEFAULT_TESTS = ("{python}", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 "--junitxml={junit}")
PLACEHOLDERS = ("{python}", "{junit}")


@dataclass(frozen=True)
class GateConfig:
    tests: tuple[str, ...] | None = DEFAULT_TESTS  # None: the gate runs no tests
    commands: tuple[tuple[str, ...], ...] = ()
    pkgcheck: bool = True
    timeout: float = 900.0


def parse_gate(r) -> GateConfig:
    """Read ``[gate]`` with the config reader ``r`` (a ``releaser.config._Reader``)."""
    r.unknown({"tests", "commands", "pkgcheck", "timeout"})
    tests = r.get("tests", (list, bool), list(DEFAULT_TESTS))
    if tests is True:
        tests = list(DEFAULT_TESTS)
    if tests is not False:
        tests = tuple(r.valid("tests", validate.command, tests)) or False
    commands = r.get("commands", list, [])
    checked = []
    for i, argv in enumerate(commands):
        if not isinstance(argv, list):
            raise r.fail(f"commands[{i}]", "expected an argv list: [\"ruff\", \"check\", \".\"]")
        if not argv:
            raise r.fail(f"commands[{i}]", "an empty command")
        checked.append(tuple(r.valid(f"commands[{i}]", validate.command, argv)))
    return GateConfig(tests=None if tests is False else tests, commands=tuple(checked),
                      pkgcheck=r.get("pkgcheck", bool, True),
                      timeout=r.get("timeout", (int, float, str), 900.0, check=validate.duration))
