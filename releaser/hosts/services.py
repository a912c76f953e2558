"""Starting, stopping and restarting the application on a node, through a Runner.

A rollout restarts the service after ``emerge`` and before the health check;
a rollback stops it before restoring a database dump.  Those steps speak to a
``ServiceManager``, so the rollout does not care which init system a host
runs.  Gentoo hosts run OpenRC, so ``OpenRC`` is the implementation: it runs
``rc-service NAME ACTION`` as an argv list through the node's Runner (a
``LocalRunner`` or SSH).

What it reads is what the app's own init script (``app/openrc/NAME.initd``,
whose paths ``releaser.appcontract`` states) gives on an OpenRC host: the exit
status of ``rc-service``, the ``pidfile`` (``/run/NAME.pid``), and, when the
service fails to start or dies, the last lines of its ``output_log``
(``/var/log/NAME/NAME.log``), which is where the app says why.  Both paths
lie under the node's ``root``: ``/`` on a host, where nothing else is assumed.

The sandbox uses the *same* class.  A sandbox node has no OpenRC, so its node
root puts a stand-in ``rc-service`` first on PATH (``releaser.sandbox.rc``),
which starts the installed app the way ``/etc/init.d/notes`` does.  The node
code path is therefore identical on real hosts and in the sandbox; only the
program answering to ``rc-service`` differs.

Exit statuses follow OpenRC: ``rc-service NAME status`` exits 0 when the
service is started, 3 when stopped, 32 when it crashed (pidfile left, process
gone); anything else (1: unknown service...) is a failure to ask.

A restart that exits 0 is not proof that the service was restarted (a
``restart`` racing another one, an init script whose ``stop`` did nothing, a
daemon that was never stopped).  ``OpenRC.restart_process`` therefore reads
the service's process before and after from what the init system keeps: the
pidfile its init script names (``/run/NAME.pid``, under the node's root) and
the start time of that pid (``/proc/PID/stat``, so a pid reused by a later
process is not mistaken for the same one).  The rollout's health check then
requires that very process to still run while it answers.

Installing a service does not make a host start it at boot: on Gentoo a
package never adds itself to a runlevel (the admin's choice, so not in
``pkg_postinst``).  The rollout does it where releaser first installs the app,
through ``OpenRC.enable``: ``rc-update show RUNLEVEL`` first, ``rc-update add
NAME RUNLEVEL`` only when the service is not listed there, so an upgrade
changes nothing and the node step is reported once.  What ``rc-update add``
makes, ``/etc/runlevels/default/NAME``, is what OpenRC reads at boot.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Protocol, Sequence

from releaser.appcontract import PIDFILE, SERVICE_LOG
from releaser.errors import NodeError, UsageError, last_line
from releaser.hosts.runner import CommandResult, Runner

#: A service name: what OpenRC accepts as an init script name (``notes``,
#: ``net.eth0``, ``postgresql-16``), and nothing a shell or an option parser
#: could misread: no leading ``-``, no ``/``, no metacharacters or spaces.
_SERVICE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+@-]{0,127}")

#: The runlevel a host boots into, where ``enable`` adds the app's service.
DEFAULT_RUNLEVEL = "default"

#: ``rc-service NAME status`` exit statuses meaning "not running".
STATUS_STOPPED = 3
STATUS_CRASHED = 32

#: How many of the service log's last lines a failure reason quotes.
LOG_LINES = 3

_NO_PIDFILE, _NO_PID = 90, 91
#: POSIX sh, run as ``sh -c PROCESS_SCRIPT releaser-process PIDFILE``: the pid the
#: pidfile holds (its first word, digits only, else exit 91; no pidfile: exit 90) on
#: a line, then that process's ``/proc/PID/stat`` (fails when it is gone).
PROCESS_SCRIPT = f"""\
set -f
text=$(cat -- "$1") || exit {_NO_PIDFILE}
set -- $text
case ${{1:-}} in ''|*[!0-9]*) printf '%s\\n' "$text"; exit {_NO_PID};; esac
printf '%s\\n' "$1"
exec cat -- "/proc/$1/stat"
"""


class NotRead:
    """``restart_process``'s ``before`` when the caller did not read it."""

    def __repr__(self) -> str:
        return "NOT_READ"


NOT_READ = NotRead()


@dataclass(frozen=True)
class ServiceProcess:
    """The process the init system runs for a service.

    ``started`` is the process's start time in clock ticks after boot (field
    22 of ``/proc/PID/stat``): with the pid it names one process for good,
    since a pid is reused only by a process started later.
    """

    pid: int
    started: int

    def __str__(self) -> str:
        return f"pid {self.pid} (started at tick {self.started})"


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

    def start(self, runner: Runner, service: str, root: str = "/") -> None: ...

    def restart(self, runner: Runner, service: str, root: str = "/") -> None: ...

    def stop(self, runner: Runner, service: str, root: str = "/") -> None: ...

    def status(self, runner: Runner, service: str) -> bool: ...

    def enable(self, runner: Runner, service: str, runlevel: str = DEFAULT_RUNLEVEL) -> bool: ...


@dataclass(frozen=True)
class OpenRC:
    """OpenRC through ``rc-service``, on a real Gentoo host or a sandbox node.

    ``command`` is the argv prefix; a host where the SSH user is not root
    would use ``("sudo", "-n", "rc-service")`` (``-n``: fail rather than wait
    for a password nobody will type).  ``timeout`` bounds each command: the
    init script itself waits up to ~35 s for a clean stop (TERM/30/KILL/5).
    ``pidfile`` and ``log`` are the init script's paths on the host
    (``releaser.appcontract``; ``{name}``: the service), read under the
    ``root`` each method is given.
    """

    command: Sequence[str] = ("rc-service",)
    #: The argv prefix of OpenRC's runlevel tool (``("sudo", "-n", "rc-update")`` likewise).
    update_command: Sequence[str] = ("rc-update",)
    timeout: float | None = 120.0
    pidfile: str = PIDFILE
    log: str = SERVICE_LOG

    def _run(self, runner: Runner, service: str, action: str) -> CommandResult:
        argv = [*self.command, check_service_name(service), action]
        try:
            return runner.run(argv, check=False, timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            raise NodeError(f"{runner.host}: rc-service {service} {action} did not finish "
                            f"within {exc.timeout:g} s") from None

    def _act(self, runner: Runner, service: str, action: str, root: str) -> None:
        result = self._run(runner, service, action)
        if not result.ok:
            raise NodeError(f"{runner.host}: rc-service {service} {action} failed "
                            f"(exit {result.returncode}): {_said(result)}"
                            f"{self.log_excerpt(runner, service, root)}")

    def start(self, runner: Runner, service: str, root: str = "/") -> None:
        """Start ``service`` (OpenRC: a no-op with a warning if it already runs)."""
        self._act(runner, service, "start", root)

    def restart(self, runner: Runner, service: str, root: str = "/") -> None:
        """Stop (if running) and start ``service``; raises NodeError if it does not come up."""
        self._act(runner, service, "restart", root)

    def stop(self, runner: Runner, service: str, root: str = "/") -> None:
        """Stop ``service`` (a no-op with a warning if already stopped)."""
        self._act(runner, service, "stop", root)

    def status(self, runner: Runner, service: str) -> bool:
        """True if started, False if stopped or crashed; NodeError if the question fails."""
        result = self._run(runner, service, "status")
        if result.returncode == 0:
            return True
        if result.returncode in (STATUS_STOPPED, STATUS_CRASHED):
            return False
        raise NodeError(f"{runner.host}: rc-service {service} status failed "
                        f"(exit {result.returncode}): {_last_line(result)}")

    def enabled(self, runner: Runner, service: str, runlevel: str = DEFAULT_RUNLEVEL) -> bool:
        """True if ``rc-update show RUNLEVEL`` lists ``service``; NodeError if it cannot tell."""
        check_service_name(service)
        result = self._update(runner, ["show", check_service_name(runlevel)])
        if not result.ok:
            raise NodeError(f"{runner.host}: rc-update show {runlevel} failed "
                            f"(exit {result.returncode}): {_last_line(result)}")
        return service in runlevel_services(result.stdout, runlevel)

    def enable(self, runner: Runner, service: str, runlevel: str = DEFAULT_RUNLEVEL) -> bool:
        """Add ``service`` to ``runlevel`` (OpenRC starts it at boot) unless it is there.

        True if this call added it, False if it was there already: the caller
        reports the change once.  An ``rc-update add`` that fails is forgiven
        only when the service is listed afterwards (another run added it);
        otherwise NodeError with what ``rc-update`` said.
        """
        if self.enabled(runner, service, runlevel):
            return False
        result = self._update(runner, ["add", service, runlevel])
        if result.ok:
            return True
        if self.enabled(runner, service, runlevel):
            return False
        raise NodeError(f"{runner.host}: rc-update add {service} {runlevel} failed "
                        f"(exit {result.returncode}): {_said(result)}")

    def _update(self, runner: Runner, args: list[str]) -> CommandResult:
        argv = [*self.update_command, *args]
        try:
            return runner.run(argv, check=False, timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            raise NodeError(f"{runner.host}: rc-update {' '.join(args)} did not finish "
                            f"within {exc.timeout:g} s") from None

    def process(self, runner: Runner, service: str, root: str = "/") -> ServiceProcess | None:
        """The process running ``service`` now, or None if the init system says it is not running.

        ``root`` is the node's root (``/`` on a host, the node directory in the
        sandbox), under which the init script's pidfile lies.  NodeError when
        the service is said to run but its pidfile or process cannot be read.
        """
        if not self.status(runner, service):
            return None
        return self._pidfile_process(runner, service, root)

    def _pidfile_process(self, runner: Runner, service: str, root: str) -> ServiceProcess | None:
        """The process the pidfile names, with its start tick, read in one command
        (``PROCESS_SCRIPT``); None when it is gone.  NodeError when the pidfile
        holds no pid."""
        pidfile = _under(root, self.pidfile, service)
        result = runner.run(["sh", "-c", PROCESS_SCRIPT, "releaser-process", pidfile],
                            check=False)
        first, _, stat = result.stdout.partition("\n")
        pid = None if result.returncode in (_NO_PIDFILE, _NO_PID) else _first_int(first)
        if pid is None:
            raise NodeError(f"{runner.host}: {service} is started but its pidfile {pidfile} "
                            f"holds no pid: {_last_line(result)}")
        started = _start_time(stat) if result.ok else None
        if started is None:
            # Exited between the two questions: as not running as can be.
            return None
        return ServiceProcess(pid, started)

    def still_runs(self, runner: Runner, process: ServiceProcess) -> bool:
        """True while ``process`` (that pid, started at that tick, not a zombie) runs.

        One read of ``/proc/PID/stat``: the question a health check asks at each
        poll, where the full ``process`` (a ``status`` too) would cost most.
        """
        stat = runner.run(["cat", "--", f"/proc/{int(process.pid)}/stat"], check=False)
        return stat.ok and _start_time(stat.stdout) == process.started \
            and _state(stat.stdout) != "Z"

    def restart_process(self, runner: Runner, service: str, root: str = "/", *,
                        before: ServiceProcess | None | NotRead = NOT_READ) -> ServiceProcess:
        """Restart ``service`` and return its new process.

        NodeError if the restart fails, if nothing runs afterwards, or if the
        process running afterwards is the one that ran before: the init system
        said "restarted" but the old code still serves.  ``before``: the
        process the caller read before it installed the new code (None: none
        ran); that one must be gone, and asking again (a ``status``, the
        dearest question on a host) is spared.
        """
        if before is NOT_READ:
            before = self.process(runner, service, root)
        self.restart(runner, service, root)
        try:
            # A restart that exited 0 left the service started: the pidfile it wrote
            # names the new process (a crash since leaves no process there).
            after = self._pidfile_process(runner, service, root)
        except NodeError:
            after = None
        if after is None:
            raise NodeError(f"{runner.host}: rc-service {service} restart exited 0 but "
                            f"{service} is not running{self.log_excerpt(runner, service, root)}")
        if after == before:
            raise NodeError(f"{runner.host}: rc-service {service} restart exited 0 but the same "
                            f"process still runs ({after}): the service was not restarted")
        return after

    def log_tail(self, runner: Runner, service: str, root: str = "/") -> list[str]:
        """The last ``LOG_LINES`` non-blank lines of the service's log (empty if it cannot
        be read): where the app says why it stopped or did not start."""
        log = _under(root, self.log, check_service_name(service))
        result = runner.run(["tail", "-n", str(LOG_LINES * 4), "--", log], check=False)
        if not result.ok:
            return []
        return [line.strip() for line in result.stdout.splitlines() if line.strip()][-LOG_LINES:]

    def log_excerpt(self, runner: Runner, service: str, root: str = "/") -> str:
        """``; /var/log/NAME/NAME.log ends: A | B | C`` to end a failure reason, or ``""``."""
        lines = self.log_tail(runner, service, root)
        return f"; {self.log.format(name=service)} ends: {' | '.join(lines)}" if lines else ""


def runlevel_services(show: str, runlevel: str) -> set[str]:
    """The services ``rc-update show`` lists in ``runlevel``.

    Each line reads ``NAME | RUNLEVEL...`` (names right-aligned); a line
    without ``|`` (a warning) names nothing.
    """
    names = set()
    for line in show.splitlines():
        name, sep, levels = line.partition("|")
        if sep and runlevel in levels.split():
            names.add(name.strip())
    return names


def _under(root: str, path: str, service: str) -> str:
    """The init script's ``path`` (``{name}``: the service) under the node's ``root``."""
    return str(PurePosixPath(root) / path.format(name=service).lstrip("/"))


def _first_int(text: str) -> int | None:
    """The pid a pidfile holds (its first word), or None."""
    words = text.split()
    if not words or not (words[0].isascii() and words[0].isdigit()):
        return None
    return int(words[0]) or None


def _state(stat: str) -> str | None:
    """Field 3 (state: R, S, Z...) of a ``/proc/PID/stat`` line, or None."""
    fields = stat.rpartition(")")[2].split()
    return fields[0] if fields else None


def _start_time(stat: str) -> int | None:
    """Field 22 (starttime) of a ``/proc/PID/stat`` line, or None.

    The second field, the command name in parentheses, may itself hold spaces
    and parentheses: the fields are counted after its last ``)``.
    """
    head, sep, rest = stat.rpartition(")")
    fields = rest.split()
    if not sep or len(fields) < 20 or not fields[19].isdigit():
        return None
    return int(fields[19])


def _said(result: CommandResult) -> str:
    """What a failed ``rc-service`` said last, in one line: its last ``LOG_LINES`` lines.

    An init script's own ``eend`` closes with a generic " * ERROR: notes failed to
    start"; the reason (a ``start_pre`` that failed, the migration's error) comes
    just before it.
    """
    for text in (result.stderr, result.stdout):
        lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
        if lines:
            return " | ".join(lines[-LOG_LINES:])
    return "no output"


def _last_line(result: CommandResult) -> str:
    return last_line(result.stderr, result.stdout)


__all__ = ["DEFAULT_RUNLEVEL", "LOG_LINES", "NOT_READ", "OpenRC", "ServiceManager",
           "ServiceProcess", "check_service_name", "runlevel_services",
           "STATUS_CRASHED", "STATUS_STOPPED"]
