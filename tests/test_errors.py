"""One error family in one module: every ReleaserError subclass is in releaser.errors."""

import importlib
import pkgutil

import releaser
from releaser import exitcodes
from releaser.errors import CommandError, ReleaserError, last_line


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_releaser_error_is_defined_in_releaser_errors():
    for info in pkgutil.walk_packages(releaser.__path__, "releaser."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    found = list(_subclasses(ReleaserError))
    elsewhere = sorted(f"{c.__module__}.{c.__qualname__}" for c in found
                       if c.__module__ != "releaser.errors")
    assert not elsewhere, f"ReleaserError subclasses outside releaser.errors: {elsewhere}"
    codes = {v for k, v in vars(exitcodes).items() if k.isupper()}
    assert {c.exit_code for c in found} <= codes
    assert {"PortageError", "BackupError", "RollbackRefused", "SSHDError",
            "DistServerError"} <= {c.__name__ for c in found}


def test_last_line_is_the_last_words_of_the_first_output_that_has_any():
    assert last_line("warning\n  fatal: no such ref  \n\n", "ignored") == "fatal: no such ref"
    assert last_line("  \n", "out 1\nout 2\n") == "out 2"
    assert last_line("", "") == "no output"
    assert last_line("", default="exit status 3") == "exit status 3"
    error = CommandError(["git", "fetch", "origin", "main"], 128, "", "hint\nfatal: gone\n")
    assert str(error) == "local: git fetch origin ... exited 128: fatal: gone"
