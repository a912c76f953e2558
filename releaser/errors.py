"""The one exception family of releaser.

The core raises; only the CLI (``releaser.cli``) turns an exception into a
message and an exit code.  Each subclass names a condition the user can act on,
and carries the exit code the CLI reports for it.
"""

from __future__ import annotations


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
        tail = (stderr or stdout).strip().splitlines()
        reason = tail[-1] if tail else "no output"
        import shlex

        command = shlex.join(self.argv[:3]) + (" ..." if len(self.argv) > 3 else "")
        super().__init__(f"{host}: {command} exited {returncode}: {reason}")


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


class HostKeyError(ReleaserError):
    """An SSH host key is unknown or changed: the host is refused."""


class UnreachableError(ReleaserError):
    """A host could not be reached over SSH."""


class LockHeld(ReleaserError):
    """Another releaser run holds the environment's lock."""

    exit_code = 5
