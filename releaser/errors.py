"""The one exception family of releaser: every ``ReleaserError`` subclass lives here.

The core raises; only the CLI (``releaser.cli``) turns an exception into a
message and an exit code.  Each subclass names a condition the user can act on,
and carries the exit code the CLI reports for it (``releaser.exitcodes``).

Exit 2 promises that nothing was changed (bad input, configuration, a refusal
before anything ran); exit 1 that something failed after work began; 5 that
another run holds the lock.  The subclasses below are grouped by the
subpackage that raises them, so a ``except`` anywhere can name any of them
without importing the module that raises it.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from releaser.hosts.runner import CommandResult


class ReleaserError(Exception):
    """Base of every error releaser reports to its user as one line."""

    exit_code = 1


class ConfigError(ReleaserError):
    """releaser.toml is missing, unreadable or invalid (names key and file)."""

    exit_code = 2


class UsageError(ReleaserError):
    """A command-line argument is invalid: unknown environment, malformed version..."""

    exit_code = 2


class CentralMissing(ReleaserError):
    """The configured central path holds no central repository: a typo, or not created yet."""

    exit_code = 2


class GitError(ReleaserError):
    """The source repository cannot give what was asked: unknown ref, missing directory."""

    exit_code = 2


class VersionError(ReleaserError):
    """A tag or version string is not a valid Gentoo version."""

    exit_code = 2


class DirtyTreeError(ReleaserError):
    """The work tree has uncommitted changes and --allow-dirty was not given."""

    exit_code = 2


class CommandError(ReleaserError):
    """An external command (git, portage, ssh...) failed.

    ``argv`` is the command as the caller gave it.  Its environment is not
    part of it: runners pass variables out of band (``LocalRunner``: the
    process environment; ``SSHRunner``: stdin), so no value reaches this
    message, nor ``ps`` on the host.
    """

    def __init__(self, argv, returncode, stdout="", stderr="", host="local"):
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.host = host
        reason = last_line(stderr, stdout)
        command = shlex.join(self.argv[:3]) + (" ..." if len(self.argv) > 3 else "")
        super().__init__(f"{host}: {command} exited {returncode}: {reason}")


def last_line(*outputs: str, default: str = "no output") -> str:
    """The last non-blank line of the first output that has one: what a failed
    command says last is nearly always why it failed.

    ``last_line(stderr, stdout)`` prefers stderr; ``default`` when all are blank.
    """
    for text in outputs:
        lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return default


class CorruptCopy(ReleaserError):
    """A file copied to a host landed with other bytes than were sent; it was removed
    and nothing was placed (``releaser.hosts.transfer.place_file``)."""

    def __init__(self, host: str, path: str, algo: str, expected: str, landed: str | None):
        self.host, self.path, self.algo = host, path, algo
        self.expected, self.landed = expected, landed
        self.detail = (f"{algo} {str(landed)[:16]}... instead of {expected[:16]}..."
                       if landed else "nothing arrived")
        super().__init__(f"{host}: the copy of {path} arrived corrupted ({self.detail})")


class BuildError(ReleaserError):
    """The release could not be built (template, manifest, tarball)."""


class PublishError(ReleaserError):
    """Publishing was refused or failed; nothing half-published remains."""


class ReleaseNotFound(ReleaserError):
    """The asked-for release or version is not known."""

    exit_code = 2


class SandboxError(ReleaserError):
    """Setting up or running the local sandbox (node roots, ``demo``) stopped after
    it had changed things; the message says what was left behind.

    Not a UsageError: exit 2 promises that nothing was changed.
    """


class NodeError(ReleaserError):
    """A node operation failed (sync, emerge, start, health)."""


class PortageError(NodeError):
    """A Portage command failed on a host (``releaser.hosts.portage_commands``).

    ``summary`` is the one line that says why (also the message), ``details``
    the other lines worth showing (die message, call stack head, digests,
    masking reasons...), ``phase`` the ebuild phase that failed if any
    ("install", "postinst"...), ``log_path`` the build log on the host.
    """

    def __init__(self, result: "CommandResult", host: str, summary: str,
                 details: Sequence[str] = (), phase: str | None = None,
                 log_path: str | None = None):
        self.result = result
        self.host = host
        self.argv = list(result.argv)
        self.returncode = result.returncode
        self.summary = summary
        self.details = list(details)
        self.phase = phase
        self.log_path = log_path
        what = " ".join(result.argv[:1] + tuple(a for a in result.argv[1:] if not a.startswith("-")))
        super().__init__(f"{host}: {what} failed: {summary}")


class OverlayTrustError(NodeError):
    """A node refused what it synced from its overlay, and stays on what it had.

    ``kind`` names the attack the node refused: ``unsigned`` (no signature),
    ``untrusted`` (signed by a key that is not the environment's release key),
    ``rollback`` (older than what the node last synced), ``diverged`` (history
    rewritten), ``stale`` (metadata/timestamp.chk older than the maximum age).
    """

    def __init__(self, host: str, kind: str, reason: str):
        self.host = host
        self.kind = kind
        self.reason = reason
        super().__init__(f"{host}: overlay refused ({kind}): {reason}")


class KeyringError(ReleaserError):
    """The release keyring cannot give what was asked: no key for an environment, gpg failed."""

    exit_code = 2


class BackupError(ReleaserError):
    """A backup could not be made or proven good: the node must not be upgraded.

    Also raised when a rollback asks for a backup that does not exist or does
    not verify.  The message is one line naming the node (or the central
    repository) and the reason.
    """


class RollbackRefused(ReleaserError):
    """The rollback plan shows a node that cannot roll back (and no --force was given),
    or the plan changed since it was shown: nothing was changed."""

    exit_code = 2


class RefreshError(ReleaserError):
    """``releaser db refresh`` could not copy the database: the message says what was put
    back (the target's own database, restored from the dump taken first)."""


class HookError(ReleaserError):
    """A configured hook (``[environments.NAME.hooks]``) failed, timed out or could not
    start; the node it was run for counts as failed."""


class HostKeyError(ReleaserError):
    """An SSH host key is unknown or changed: the host is refused."""


class UnreachableError(ReleaserError):
    """A host could not be reached over SSH."""


class PolicyRefused(ReleaserError):
    """The environment's ``allow`` policy does not take this release (not built from a
    release tag, say): nothing was changed."""

    exit_code = 2


class GateFailed(ReleaserError):
    """The quality gate (``releaser gate``, ``promote --gate``) failed: the app's tests,
    pkgcheck or a linter; nothing was published."""

    exit_code = 8


class NotReady(ReleaserError):
    """``releaser doctor``'s fast checks found the environment not ready (central
    unreachable, unwritable or full): refused before anything was built or changed."""


class LockHeld(ReleaserError):
    """Another releaser run holds the environment's lock."""

    exit_code = 5


# --- the sandbox (test-and-demo machinery; the product never raises these) ---


class DistServerError(ReleaserError):
    """The sandbox distfiles server could not be started (bad directory, port taken...)."""


class SSHDError(ReleaserError):
    """A sandbox sshd could not be configured, started or stopped."""
