"""Environment overlays as git repositories on the central host.

Nodes sync an overlay with Portage's own git sync; releaser changes one by
cloning it, committing, and pushing one commit, so a node sees either the old
overlay or the new one, never half of a release.

Where the central repository is an SSH host (its runner is an ``SSHRunner``),
releaser's own git reaches it over SSH with the very trust the runner uses:
the one identity file, the one pinned known_hosts file, strict host key
checking, no agent, no prompt, and none of the operator's ``~/.ssh/config``
or ``/etc/ssh/ssh_config`` (``-F /dev/null``), so a git push can never trust
more than a ``releaser`` command does.  A local central is used by path.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Mapping

import git

from releaser.central import overlay
from releaser.central.repository import CentralRepository
from releaser.errors import PublishError
from releaser.processes import pid_alive
from releaser.trust.keys import Keyring
from releaser.trust.signing import Signer

AUTHOR = git.Actor("releaser", "releaser@localhost")
BRANCH = "main"
#: Temporary clones are ``$TMPDIR/releaser-overlay-PID-XXXX``: the pid says whose.
SCRATCH_PREFIX = "releaser-overlay-"


def overlay_url(central: CentralRepository, env: str) -> str:
    """The URL releaser clones and pushes ``env``'s overlay from.

    The central bare repository's path for a local central;
    ``ssh://USER@ADDRESS:PORT/PATH`` for an SSH central host.  This is only
    releaser's own URL: what nodes use as their overlay ``sync-uri`` is written
    into each node's repos.conf when the node is set up (the sandbox writes
    the bare repository's path, its nodes being on the same machine as the
    central repository; a real fleet names a URL its nodes can reach).
    """
    path = central.overlay_repo(env)
    spec = _ssh_spec(central)
    if spec is None:
        return path
    host = f"[{spec.address}]" if ":" in spec.address else spec.address
    return f"ssh://{spec.user}@{host}:{int(spec.port)}{path}"


def git_ssh_command(spec) -> str:
    """``GIT_SSH_COMMAND`` for reaching ``spec`` (an ``ssh.HostSpec``) with pinned trust.

    git splits the value like a shell, so it is built with ``shlex.join``:
    paths with spaces or quotes stay one argument each.
    """
    return shlex.join([
        "ssh",
        "-i", str(spec.identity_file),
        "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={spec.known_hosts}",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "UpdateHostKeys=no",  # never rewrite the pinned trust file
        "-o", f"ConnectTimeout={max(1, int(spec.connect_timeout))}",
        "-F", "/dev/null",
    ])


def git_env(central: CentralRepository) -> Mapping[str, str]:
    """Environment for git commands that talk to ``central`` (empty for a local one)."""
    spec = _ssh_spec(central)
    return {} if spec is None else {"GIT_SSH_COMMAND": git_ssh_command(spec)}


def _ssh_spec(central: CentralRepository):
    # Imported here: paramiko/fabric are only needed when there is an SSH host.
    from releaser.hosts.ssh import SSHRunner

    runner = central.runner
    return runner.spec if isinstance(runner, SSHRunner) else None


def ensure_overlay(central: CentralRepository, env: str, name: str) -> bool:
    """Create ``env``'s bare overlay, repository ``name``, from the skeleton unless it exists.

    ``name`` is the environment's ``overlay`` setting: what its nodes'
    repos.conf calls the repository.  It is checked before anything is made.
    """
    overlay.check_repo_name(name)
    path = central.overlay_repo(env)
    if central.exists(path):
        return False
    central.runner.run(["git", "init", "-q", "--bare", f"--initial-branch={BRANCH}", "--", path])
    signer = signer_of(central, env)
    with _scratch() as tmp:
        work = tmp / "overlay"
        repo = git.Repo.init(work, initial_branch=BRANCH)
        overlay.init_overlay(work, name)
        repo.create_remote("origin", overlay_url(central, env))
        _prepare_clone(repo, central, signer)
        commit_and_push(repo, f"Initialise the {env} overlay ({name}) from the overlay skeleton")
        repo.close()
    return True


def signer_of(central: CentralRepository, env: str) -> Signer | None:
    """The signer of ``env``'s overlay commits: its release key when ``central`` carries
    ``[trust]`` (KeyringError if the environment has no key yet), else None."""
    trust = getattr(central, "trust", None)
    if trust is None or not trust.signs(env):
        return None
    return Signer.for_env(Keyring(trust.gnupghome), env)


def _prepare_clone(repo: git.Repo, central: CentralRepository, signer: Signer | None) -> None:
    """Give a clone the identity, the signing key (if any) and the SSH trust its commits
    and pushes use; only the clone's own config and environment, nothing global."""
    with repo.config_writer() as cfg:
        cfg.set_value("user", "name", AUTHOR.name)
        cfg.set_value("user", "email", AUTHOR.email)
        for key, value in (signer.git_config() if signer else {"commit.gpgsign": "false"}).items():
            section, option = key.split(".", 1)
            cfg.set_value(section, option, value)
    repo.git.update_environment(**git_env(central), **(signer.env() if signer else {}))
    repo.releaser_signer = signer  # commit_and_push records the head it pushes


@contextlib.contextmanager
def checkout(central: CentralRepository, env: str) -> Iterator[git.Repo]:
    """A temporary clone of ``env``'s overlay; removed afterwards.

    The clone keeps the environment git needs to reach the central host, so
    ``commit_and_push`` on it pushes with the same pinned trust.
    """
    env_vars = dict(git_env(central))
    signer = signer_of(central, env)
    with _scratch() as tmp:
        try:
            repo = git.Repo.clone_from(overlay_url(central, env), tmp / "overlay", branch=BRANCH,
                                       env=env_vars or None)
        except git.GitCommandError as exc:
            raise PublishError(f"cannot clone the {env} overlay from the central repository: "
                               f"{git_reason(exc)}") from None
        try:
            _prepare_clone(repo, central, signer)
            if signer is not None:
                check_head(repo, signer)
            yield repo
        finally:
            repo.close()  # GitPython's persistent git processes hold the clone open


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    """A private temporary folder, removed on every way out (exceptions included).

    A run killed outright (``kill -9``) cannot remove its own: the next run
    removes every such folder whose process is gone.
    """
    _remove_orphaned_scratch()
    tmp = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_orphaned_scratch() -> None:
    """Remove this user's temporary clones whose releaser process is gone."""
    for path in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*"):
        pid = path.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        try:
            mine = path.is_dir() and not path.is_symlink() and path.stat().st_uid == os.getuid()
        except OSError:
            continue
        if mine and pid.isascii() and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def commit_and_push(repo: git.Repo, message: str) -> str:
    """Commit everything in the clone as one commit and push it; returns the commit id.

    ``metadata/timestamp.chk`` is rewritten by every commit, so a node can tell a
    frozen overlay (one nobody signed for longer than ``[trust] max_age_days``)
    from a live one.  The clone's config (``_prepare_clone``) says whether git
    signs, and with which key.
    """
    overlay.write_timestamp(Path(repo.working_tree_dir), datetime.now(timezone.utc))
    repo.git.add("-A")
    try:
        repo.git.commit("-q", "--no-verify", "-m", message)
    except git.GitCommandError as exc:
        raise PublishError(f"cannot commit to the overlay: {git_reason(exc)}") from None
    try:
        repo.git.push("origin", BRANCH)
    except git.GitCommandError as exc:
        raise PublishError(f"pushing the overlay commit failed (someone else pushed? "
                           f"re-run): {git_reason(exc)}") from None
    head = repo.head.commit.hexsha
    signer = getattr(repo, "releaser_signer", None)
    if signer is not None:
        signer.keyring.record_head(signer.environment, head)
    return head


def check_head(repo: git.Repo, signer: Signer) -> None:
    """Refuse to build on a central overlay whose head the environment's keys did not sign.

    Portage verifies only the top commit: were releaser to sign a commit on top
    of one pushed by someone else, that commit's content would reach the nodes
    under the release key.  So the head releaser builds on must carry a good
    signature from one of the keys the environment's nodes accept, and descend
    from the head releaser pushed last (recorded in the keyring, on the
    operator's side): an older signed head force-pushed back is refused here,
    before the nodes would refuse the result.
    """
    status, fpr = signature(repo, "HEAD", signer)
    accepted = signer.keyring.verify_keys(signer.environment)
    head = repo.head.commit.hexsha
    if status not in ("G", "U") or fpr not in accepted:
        raise PublishError(f"the {signer.environment} overlay on the central repository has a head "
                           f"({head[:12]}) not signed by its release key "
                           f"({describe_signature(status, fpr)}): someone pushed to it "
                           "directly; not building on it")
    last = signer.keyring.last_head(signer.environment)
    if last and last != head and not _descends(repo, last, head):
        raise PublishError(f"the {signer.environment} overlay on the central repository was "
                           f"rolled back or rewritten: its head {head[:12]} does not descend "
                           f"from {last[:12]}, which releaser pushed last; not building on it")


def _descends(repo: git.Repo, older: str, newer: str) -> bool:
    try:
        repo.git.merge_base("--is-ancestor", older, newer)
    except git.GitCommandError:
        return False  # not an ancestor, or not in this history at all
    return True


def signature(repo: git.Repo, rev: str, signer: Signer) -> tuple[str, str]:
    """git's signature status letter (``%G?``) and signing key fingerprint of ``rev``."""
    out = repo.git.log("-1", "--format=%G?%n%GF", rev)
    lines = out.splitlines() + ["", ""]
    return lines[0].strip(), lines[1].strip()


def describe_signature(status: str, fpr: str) -> str:
    """git's ``%G?`` letter in words."""
    words = {"N": "no signature", "E": "signed by an unknown key", "B": "bad signature",
             "X": "expired signature", "Y": "signed by an expired key",
             "R": "signed by a revoked key", "G": f"signed by {fpr}", "U": f"signed by {fpr}"}
    return words.get(status, f"signature status {status!r}")


#: git's boilerplate after an SSH failure, which says nothing about the cause.
_NOISE = ("Cloning into ", "Please make sure you have the correct access rights",
          "and the repository exists.")


def git_reason(exc: git.GitCommandError) -> str:
    """The lines of a failed git command's stderr that say why, on one line.

    GitPython wraps stderr as ``stderr: '...'``, and over SSH the cause is
    ssh's own message ("Host key verification failed.") *before* git's
    generic "fatal: Could not read from remote repository." and its advice;
    so the wrapper and the advice are dropped and the rest is kept in order.
    """
    text = (exc.stderr or "").strip()
    if text.startswith("stderr: '") and text.endswith("'"):
        text = text[len("stderr: '"):-1]
    return stderr_reason(text) or str(exc)


def stderr_reason(text: str) -> str:
    """The lines of git's stderr that say why it failed, on one line ("" if none)."""
    lines = [line.strip() for line in text.splitlines()]
    return "; ".join(line for line in lines if line and not line.startswith(_NOISE))
