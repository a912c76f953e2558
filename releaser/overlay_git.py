"""Environment overlays as git repositories on the central host.

Nodes sync an overlay with Portage's own git sync; releaser changes one by
cloning it, committing, and pushing one commit, so a node sees either the old
overlay or the new one, never half of a release.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import git

from . import overlay
from .central import CentralRepository
from .errors import PublishError

AUTHOR = git.Actor("releaser", "releaser@localhost")
BRANCH = "main"


def overlay_url(central: CentralRepository, env: str) -> str:
    """The URL releaser clones and pushes; nodes get theirs from the config/sandbox."""
    return central.overlay_repo(env)


def ensure_overlay(central: CentralRepository, env: str, skeleton: str) -> bool:
    """Create ``env``'s bare overlay from ``overlays/<skeleton>`` unless it exists."""
    path = central.overlay_repo(env)
    if central.exists(path):
        return False
    central.runner.run(["git", "init", "-q", "--bare", f"--initial-branch={BRANCH}", "--", path])
    with tempfile.TemporaryDirectory(prefix="releaser-overlay-") as tmp:
        work = Path(tmp) / "overlay"
        repo = git.Repo.init(work, initial_branch=BRANCH)
        overlay.init_overlay(work, skeleton)
        repo.git.add("-A")
        repo.index.commit(f"Initialise the {env} overlay from overlays/{skeleton}",
                          author=AUTHOR, committer=AUTHOR)
        repo.create_remote("origin", overlay_url(central, env))
        repo.git.push("origin", BRANCH)
    return True


@contextlib.contextmanager
def checkout(central: CentralRepository, env: str) -> Iterator[git.Repo]:
    """A temporary clone of ``env``'s overlay; removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="releaser-overlay-"))
    try:
        try:
            repo = git.Repo.clone_from(overlay_url(central, env), tmp / "overlay", branch=BRANCH)
        except git.GitCommandError as exc:
            raise PublishError(f"cannot clone the {env} overlay from the central repository: "
                               f"{exc.stderr.strip().splitlines()[-1] if exc.stderr else exc}") from None
        yield repo
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def commit_and_push(repo: git.Repo, message: str) -> str:
    """Commit everything in the clone as one commit and push it; returns the commit id."""
    repo.git.add("-A")
    commit = repo.index.commit(message, author=AUTHOR, committer=AUTHOR)
    try:
        repo.git.push("origin", BRANCH)
    except git.GitCommandError as exc:
        raise PublishError(f"pushing the overlay commit failed (someone else pushed? "
                           f"re-run): {exc.stderr.strip() if exc.stderr else exc}") from None
    return commit.hexsha
