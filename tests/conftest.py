"""Shared fixtures: real git repositories holding the real demo app, and configs."""

from __future__ import annotations

import shutil
import subprocess
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
                 distfiles_url: str = "http://127.0.0.1:9/distfiles") -> Path:
    """A minimal releaser.toml building ``source``'s app."""
    path.write_text(f"""
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
    return path
