"""The command-runner seam: run an argv on "a host".

Everything that touches a node or the central repository does it through a
``Runner``, so the same code drives the local sandbox (``LocalRunner``, a
subprocess with the node's Portage variables in its environment) and real hosts
over SSH (``releaser.hosts.ssh.SSHRunner``).  Commands are always argv lists; a runner
that needs a shell string (SSH) builds it with ``shlex.join``.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Protocol, Sequence

from releaser.errors import CommandError
from releaser.files import copy_atomic


@dataclass(frozen=True)
class CommandResult:
    """What a finished command gave back."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Runner(Protocol):
    """Runs commands and moves files on one host."""

    host: str

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run argv; raise CommandError on non-zero exit when check is true.

        ``env``: extra variables for this command, passed outside its argv
        (never visible in ``ps`` or in a CommandError).
        """

    def put(self, local: Path, remote: str) -> None:
        """Copy a local file to a path on the host, making its folder if need be
        (``transfer.place_file`` relies on it)."""

    def get(self, remote: str, local: Path) -> None:
        """Copy a file on the host to a local path."""


@dataclass
class LocalRunner:
    """Runs commands on this machine, with extra environment variables.

    ``env`` is laid over ``os.environ``; a sandbox node passes its Portage
    variables (PORTAGE_CONFIGROOT, ROOT, EPREFIX...) here, as a real host's
    login environment would carry them.
    """

    host: str = "local"
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None

    def run(self, argv, *, check=True, env=None, input=None, timeout=None) -> CommandResult:
        """Run ``argv`` in a session of its own (see ``_spawn``)."""
        import time

        full_env = dict(os.environ)
        full_env.update(self.env)
        if env:
            full_env.update(env)
        started = time.monotonic()
        try:
            proc = _spawn(argv, full_env, self.cwd, with_input=input is not None)
        except FileNotFoundError as exc:
            raise CommandError(argv, 127, "", f"command not found: {argv[0]}", self.host) from exc
        try:
            stdout, stderr = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            _end_group(proc, signal.SIGKILL)
            # Same convention as SSHRunner: coreutils timeout's return code.
            raise CommandError(argv, 124, "", f"timed out after {timeout:g} s",
                               self.host) from exc
        except BaseException:
            # This thread is being unwound (a Ctrl-C where no graceful stop is in
            # place): the command is not left running behind releaser's back.
            _end_group(proc, signal.SIGTERM)
            raise
        result = CommandResult(tuple(argv), proc.returncode, stdout, stderr,
                               time.monotonic() - started)
        if check and proc.returncode != 0:
            raise CommandError(argv, proc.returncode, stdout, stderr, self.host)
        return result

    def put(self, local: Path, remote: str) -> None:
        """Copy a file, atomically: a half-copied file never has the final name."""
        copy_atomic(Path(local), Path(remote))

    def get(self, remote: str, local: Path) -> None:
        copy_atomic(Path(remote), Path(local))


def _spawn(argv, env: Mapping[str, str], cwd: Path | None, *,
           with_input: bool) -> subprocess.Popen:
    """Start ``argv`` as the leader of a new session and process group.

    A Ctrl-C at the operator's terminal sends SIGINT to the terminal's whole
    foreground process group.  A command in that group (an ``emerge``, an
    ``rc-service restart``) would die half-way while releaser, which alone
    knows what is in flight, means to finish it (``releaser.cli.signals``):
    a new session keeps the command out of that group, so the signal reaches
    releaser only.  Its stdin is /dev/null unless input is given: it has no
    terminal to read from.
    """
    return subprocess.Popen(list(argv), env=dict(env), cwd=cwd,
                            stdin=subprocess.PIPE if with_input else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            encoding="utf-8", errors="replace", start_new_session=True)


def _end_group(proc: subprocess.Popen, sig: int, grace: float = 10.0) -> None:
    """Signal the command's whole process group (its children too), then reap it.

    The group, not the process: a child that keeps the output pipes open
    would otherwise keep the caller waiting after its parent is gone.
    SIGTERM gets ``grace`` seconds before SIGKILL.
    """
    for signum in (sig, signal.SIGKILL):
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass
        try:
            proc.communicate(timeout=grace if signum != signal.SIGKILL else None)
            return
        except subprocess.TimeoutExpired:
            continue
