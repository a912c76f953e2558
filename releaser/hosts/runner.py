"""The command-runner seam: run an argv on "a host".

Everything that touches a node or the central repository does it through a
``Runner``, so the same code drives the local sandbox (``LocalRunner``, a
subprocess with the node's Portage variables in its environment) and real hosts
over SSH (``releaser.hosts.ssh.SSHRunner``).  Commands are always argv lists; a runner
that needs a shell string (SSH) builds it with ``shlex.join``.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Protocol, Sequence

from releaser.errors import CommandError


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
        """Copy a local file to a path on the host."""

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
        import time

        full_env = dict(os.environ)
        full_env.update(self.env)
        if env:
            full_env.update(env)
        started = time.monotonic()
        try:
            proc = subprocess.run(
                list(argv),
                env=full_env,
                cwd=self.cwd,
                input=input,
                capture_output=True,
                text=True,
                encoding="utf-8",
                errors="replace",
                timeout=timeout,
            )
        except FileNotFoundError as exc:
            raise CommandError(argv, 127, "", f"command not found: {argv[0]}", self.host) from exc
        except subprocess.TimeoutExpired as exc:
            # Same convention as SSHRunner: coreutils timeout's return code.
            raise CommandError(argv, 124, "", f"timed out after {timeout:g} s",
                               self.host) from exc
        result = CommandResult(tuple(argv), proc.returncode, proc.stdout, proc.stderr,
                               time.monotonic() - started)
        if check and proc.returncode != 0:
            raise CommandError(argv, proc.returncode, proc.stdout, proc.stderr, self.host)
        return result

    def put(self, local: Path, remote: str) -> None:
        """Copy a file, atomically: a half-copied file never has the final name."""
        _copy_atomic(Path(local), Path(remote))

    def get(self, remote: str, local: Path) -> None:
        _copy_atomic(Path(remote), Path(local))


def _copy_atomic(source: Path, dest: Path) -> None:
    import shutil
    import uuid

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.releaser-{uuid.uuid4().hex[:12]}.tmp")
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
