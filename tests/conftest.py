"""Shared fixtures: real git repositories holding the real demo app, and configs."""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
APP_DIR = PROJECT / "app"

RDEPEND = [">=dev-lang/python-3.11", "dev-python/flask", "dev-python/waitress"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def commit_all(repo: Path, message: str, when: str = "2026-01-01T00:00:00+00:00") -> str:
    git(repo, "add", "-A")
    env_date = {"GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when}
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", message], check=True,
                   env={**_base_env(), **env_date})
    return git(repo, "rev-parse", "HEAD")


def _base_env() -> dict:
    import os

    return {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@localhost"}


@pytest.fixture
def app_repo(tmp_path: Path) -> Path:
    """A git repository whose ``app/`` is this project's demo app, tagged v1.0.0."""
    repo = tmp_path / "src"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    shutil.copytree(APP_DIR, repo / "app",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache"))
    (repo / "README.md").write_text("test source repo\n")
    commit_all(repo, "first")
    git(repo, "tag", "v1.0.0")
    return repo


def write_config(path: Path, source: Path, *, extra: str = "",
                 distfiles_url: str = "http://127.0.0.1:9/distfiles",
                 unsigned: bool = True) -> Path:
    """A minimal releaser.toml building ``source``'s app.

    Signing is releaser's default; a test config whose ``extra`` brings no ``[trust]``
    and no ``[[exceptions]]`` of its own documents its environments as unsigned
    (``unsigned_exception``) unless ``unsigned=False``: the signed paths have tests of
    their own (tests/test_trust_*.py), the others need no keyring."""
    text = _config_text(path, source, extra, distfiles_url)
    try:
        environments = list(tomllib.loads(text).get("environments", {}))
    except (tomllib.TOMLDecodeError, AttributeError):  # a test of a broken config
        environments = []
    if unsigned and environments and "[trust]" not in extra and "[[exceptions]]" not in extra:
        text += unsigned_exception(environments)
    path.write_text(text)
    return path


#: What every run of a write_config test config prints on stderr first.
def unsigned_notice(*environments: str) -> str:
    return (f"releaser: security exception: unsigned-overlay in {', '.join(environments)} "
            "(overlay commits unsigned, nodes verify nothing): tests "
            f"[owner releaser tests, expires {_A_YEAR_AHEAD.isoformat()}]\n")


_A_YEAR_AHEAD = datetime.date.today() + datetime.timedelta(days=365)


def unsigned_exception(environments: list[str]) -> str:
    """An ``[[exceptions]]`` entry leaving ``environments`` unsigned for a year."""
    return ("\n[[exceptions]]\nsetting = \"unsigned-overlay\"\n"
            f"environments = {json.dumps(environments)}\nreason = \"tests\"\n"
            f"owner = \"releaser tests\"\nexpires = {_A_YEAR_AHEAD.isoformat()}\n")


def _config_text(path: Path, source: Path, extra: str, distfiles_url: str) -> str:
    return (f"""
[app]
name = "notes"
category = "www-apps"
source = "{source}"
subdir = "app"
description = "Notes, the demo application"
homepage = "https://example.invalid/notes"
rdepend = {RDEPEND!r}

[central]
path = "{path.parent / 'central'}"
distfiles_url = "{distfiles_url}"
{extra}
""".replace("'", '"'))
