"""Starting, stopping and restarting the application on a node, through a Runner.

A rollout restarts the service after ``emerge`` and before the health check;
a rollback stops it before restoring a database dump.  Those steps speak to a
``ServiceManager``, so the rollout does not care which init system a host
runs.  Gentoo hosts run OpenRC, so ``OpenRC`` is the implementation: it runs
``rc-service NAME ACTION`` as an argv list through the node's Runner (a
``LocalRunner`` or SSH).

The sandbox uses the *same* class.  A sandbox node has no OpenRC, so its node
root puts a stand-in ``rc-service`` first on PATH (``releaser.sandbox.rc``),
which starts the installed app the way ``/etc/init.d/notes`` does.  The node
code path is therefore identical on real hosts and in the sandbox; only the
program answering to ``rc-service`` differs.

Exit statuses follow OpenRC: ``rc-service NAME status`` exits 0 when the
service is started, 3 when stopped, 32 when it crashed (pidfile left, process
gone); anything else (1: unknown service...) is a failure to ask.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from typing import Protocol, Sequence

from releaser.errors import NodeError, UsageError
from releaser.hosts.runner import CommandResult, Runner

#: A service name: what OpenRC accepts as an init script name (``notes``,
#: ``net.eth0``, ``postgresql-16``), and nothing a shell or an option parser
#: could misread: no leading ``-``, no ``/``, no metacharacters or spaces.
_SERVICE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+@-]{0,127}")

#: ``rc-service NAME status`` exit statuses meaning "not running".
STATUS_STOPPED = 3
STATUS_CRASHED = 32


def check_service_name(service: str) -> str:
    """Return ``service`` if it is a safe init script name, else raise UsageError."""
    if not isinstance(service, str) or not _SERVICE_NAME.fullmatch(service) or service in (".", ".."):
        raise UsageError(f"invalid service name {service!r}: use letters, digits and _ . + @ -, "
                         f"not starting with - or .")
    return service


class ServiceManager(Protocol):
    """Controls one service on the host a Runner reaches.

    ``restart``, ``start`` and ``stop`` raise NodeError when the init system
    reports failure; ``status`` is True when the service runs.
    """

    def start(self, runner: Runner, service: str) -> None: ...

    def restart(self, runner: Runner, service: str) -> None: ...

    def stop(self, runner: Runner, service: str) -> None: ...

    def status(self, runner: Runner, service: str) -> bool: ...


@dataclass(frozen=True)
class OpenRC:
    """OpenRC through ``rc-service``, on a real Gentoo host or a sandbox node.

    ``command`` is the argv prefix; a host where the SSH user is not root
    would use ``("sudo", "-n", "rc-service")`` (``-n``: fail rather than wait
    for a password nobody will type).  ``timeout`` bounds each command: the
    init script itself waits up to ~35 s for a clean stop (TERM/30/KILL/5).
    """

    command: Sequence[str] = ("rc-service",)
    timeout: float | None = 120.0

    def _run(self, runner: Runner, service: str, action: str) -> CommandResult:
        argv = [*self.command, check_service_name(service), action]
        try:
            return runner.run(argv, check=False, timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            raise NodeError(f"{runner.host}: rc-service {service} {action} did not finish "
                            f"within {exc.timeout:g} s") from None

    def _act(self, runner: Runner, service: str, action: str) -> None:
        result = self._run(runner, service, action)
        if not result.ok:
            raise NodeError(f"{runner.host}: rc-service {service} {action} failed "
                            f"(exit {result.returncode}): {_last_line(result)}")

    def start(self, runner: Runner, service: str) -> None:
        """Start ``service`` (OpenRC: a no-op with a warning if it already runs)."""
        self._act(runner, service, "start")

    def restart(self, runner: Runner, service: str) -> None:
        """Stop (if running) and start ``service``; raises NodeError if it does not come up."""
        self._act(runner, service, "restart")

    def stop(self, runner: Runner, service: str) -> None:
        """Stop ``service`` (a no-op with a warning if already stopped)."""
        self._act(runner, service, "stop")

    def status(self, runner: Runner, service: str) -> bool:
        """True if started, False if stopped or crashed; NodeError if the question fails."""
        result = self._run(runner, service, "status")
        if result.returncode == 0:
            return True
        if result.returncode in (STATUS_STOPPED, STATUS_CRASHED):
            return False
        raise NodeError(f"{runner.host}: rc-service {service} status failed "
                        f"(exit {result.returncode}): {_last_line(result)}")


def _last_line(result: CommandResult) -> str:
    lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
    return lines[-1].strip() if lines else "no output"


__all__ = ["OpenRC", "ServiceManager", "check_service_name", "STATUS_CRASHED", "STATUS_STOPPED"]
