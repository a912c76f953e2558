"""The application's source repository, read with GitPython.

Only committed trees are read: a release is made from the tree of a commit,
never from files lying in the work tree.  ``--allow-dirty`` builds from a
commit object that ``git stash create`` makes of the work tree, without
touching the work tree, the index or the stash list.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import git

from releaser.errors import DirtyTreeError, GitError


@dataclass(frozen=True)
class SourceCommit:
    """A resolved commit and the application subtree within it."""

    commit: git.Commit
    tree: git.Tree  # the application subdirectory's tree
    branch: str | None
    dirty: bool

    @property
    def hexsha(self) -> str:
        return self.commit.hexsha


def open_repo(path: Path) -> git.Repo:
    try:
        return git.Repo(path, search_parent_directories=False)
    except (git.NoSuchPathError, git.InvalidGitRepositoryError):
        raise GitError(f"{path}: not a git repository") from None


def resolve(repo: git.Repo, ref: str, subdir: str, *, allow_dirty: bool = False) -> SourceCommit:
    """Resolve ``ref`` to a commit and its ``subdir`` tree.

    A dirty work tree matters only when building HEAD: it is refused unless
    ``allow_dirty``, and then the build is made from the work tree's state and
    marked dirty, so that production can never take it.
    """
    if ref.startswith("-"):
        raise GitError(f"unknown git ref {ref!r}")
    try:
        commit = repo.commit(ref)
    except (git.BadName, git.BadObject, ValueError, git.GitCommandError):
        raise GitError(f"unknown git ref {ref!r} in {repo.working_tree_dir}") from None
    dirty = False
    if _is_head(repo, commit, ref) and _app_dirty(repo, subdir):
        if not allow_dirty:
            raise DirtyTreeError(
                f"{repo.working_tree_dir}: uncommitted changes under {subdir}/ "
                "(commit them, or pass --allow-dirty for a build production will refuse)")
        stash = repo.git.stash("create").strip()
        if stash:
            commit = repo.commit(stash)
            dirty = True
    tree = commit.tree
    if subdir not in (".", ""):
        try:
            tree = commit.tree / subdir
        except KeyError:
            raise GitError(f"{ref}: no directory {subdir!r} in commit {commit.hexsha[:12]}") from None
        if tree.type != "tree":
            raise GitError(f"{ref}: {subdir!r} is not a directory in commit {commit.hexsha[:12]}")
    return SourceCommit(commit=commit, tree=tree, branch=_branch_of(repo, ref, commit),
                        dirty=dirty)


def _is_head(repo: git.Repo, commit: git.Commit, ref: str) -> bool:
    try:
        return ref == "HEAD" or repo.head.commit == commit
    except ValueError:
        return False


def _app_dirty(repo: git.Repo, subdir: str) -> bool:
    path = None if subdir in (".", "") else subdir
    return repo.is_dirty(index=True, working_tree=True, untracked_files=False, path=path)


def _branch_of(repo: git.Repo, ref: str, commit: git.Commit) -> str | None:
    """The branch the ref names, or that HEAD is on; for a detached HEAD (a CI
    checkout) the one local branch whose head is this very commit; else None."""
    if ref in repo.heads:
        return ref
    if ref == "HEAD" and not repo.head.is_detached:
        return repo.active_branch.name
    if ref.startswith("refs/heads/"):
        return ref[len("refs/heads/"):]
    if ref == "HEAD":
        at = [h.name for h in repo.heads if h.commit == commit]
        return at[0] if len(at) == 1 else None
    return None


def describe(repo: git.Repo, commit: git.Commit, tag_prefix: str) -> tuple[str, int] | None:
    """The nearest tag matching ``{tag_prefix}[0-9]*`` and the commit distance, or None."""
    try:
        out = repo.git.describe(commit.hexsha, "--tags", "--long", "--abbrev=12",
                                f"--match={tag_prefix}[0-9]*")
    except git.GitCommandError:
        return None
    tag, distance, _ = out.rsplit("-", 2)
    return tag, int(distance)


def commit_count(repo: git.Repo, commit: git.Commit) -> int:
    return int(repo.git.rev_list("--count", commit.hexsha))
