"""The SSH side of the ``Runner`` seam: run argv lists and move files on a host.

Everything releaser does to a node or to the central repository host goes
through a ``Runner`` (``releaser.hosts.runner``); ``SSHRunner`` is the one for real
hosts and for sandbox nodes behind their own ``sshd`` (``releaser.sandbox.sshd``).

Trust is explicit and pinned, never learned:

* host keys come only from the known_hosts file the caller names.  paramiko's
  ``RejectPolicy`` refuses any host not in it (Fabric would auto-add), and
  neither ``~/.ssh/known_hosts`` nor ``~/.ssh/config`` / ``/etc/ssh/ssh_config``
  is read, so nothing on the operator's machine can widen trust or redirect a
  host (HostName, ProxyCommand, IdentityFile...) behind the config's back;
* authentication is by the one identity file the caller names: no agent, no
  key search in ``~/.ssh``, no agent forwarding, no password, no stdin; a run
  can fail, it can never sit waiting for a human.

Commands are argv lists turned into the remote command line with
``shlex.join`` (the remote login shell parses it back into the same argv).
Extra environment never enters that command line, where ``ps`` on the host
and every error message would show it (and secrets will travel this way):
the command runs under a small ``sh`` wrapper (``ENV_READER``) that reads
the variables from its stdin, exports them and ``exec``s the command, which
then reads the rest of stdin as its own input.  It does not depend on the
server's ``AcceptEnv`` either.

Fabric's ``Connection`` establishes and owns the connection and the SFTP
session; commands run on a raw paramiko channel rather than through
``Connection.run``, because releaser needs byte-exact capture, a guaranteed EOF
on the remote stdin (``cat`` must not hang), a hard timeout that also stops
the remote process, and no use of the local terminal.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import select
import shlex
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import fabric
import paramiko

from releaser.errors import CommandError, ConfigError, HostKeyError, UnreachableError
from releaser.files import atomic_file
from releaser.hosts.runner import CommandResult

# paramiko logs handshake failures (with tracebacks) at ERROR from its
# transport thread; with no handler configured, Python's last-resort handler
# would print them on stderr.  The error reaches the caller as one exception
# anyway, and an application that configures logging still gets the records.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

#: Return code reported in the CommandError of a command that timed out
#: (the convention of coreutils ``timeout``).
TIMEOUT_RETURNCODE = 124

#: Seconds between the remote SIGTERM and SIGKILL of a command that timed out.
KILL_AFTER = 5.0

_ENV_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")

#: Exit status of the wrapper when its stdin does not hold the variables it expects.
ENV_READER_FAILED = 125

#: POSIX sh, run as ``sh -c ENV_READER releaser-env ARGV...``: read the
#: variables ``env_block`` wrote on stdin, export them, exec ARGV.  The
#: block: a line with the number of variables, then per variable a line
#: ``NAME COUNT`` and COUNT lines whose ``\n``-join is the value (so a value
#: may hold newlines, quotes, ``$(...)``: it is data for ``read -r``, never
#: code).  The shell's ``read`` takes one byte at a time from a pipe, so the
#: command exec'd afterwards gets exactly the rest of stdin.
ENV_READER = f"""\
IFS= read -r count || exit {ENV_READER_FAILED}
n=0
while [ "$n" -lt "$count" ]; do
  IFS=' ' read -r name lines || exit {ENV_READER_FAILED}
  value='' i=0
  while [ "$i" -lt "$lines" ]; do
    IFS= read -r line || exit {ENV_READER_FAILED}
    if [ "$i" -eq 0 ]; then value=$line; else value="$value
$line"; fi
    i=$((i + 1))
  done
  export "$name=$value" || exit {ENV_READER_FAILED}
  n=$((n + 1))
done
exec "$@"
"""


@dataclass(frozen=True, kw_only=True)
class HostSpec:
    """How to reach one host: what the fleet config gives for a node.

    ``name`` is the label used in messages (defaults to ``address``).
    ``known_hosts`` must pin the host's key as ``address`` (port 22) or
    ``[address]:port``; ``identity_file`` is an unencrypted private key.
    """

    address: str
    identity_file: Path
    known_hosts: Path
    port: int = 22
    user: str = "root"
    connect_timeout: float = 10.0
    name: str = ""
    keepalive: int = 30

    @property
    def label(self) -> str:
        return self.name or self.address

    @property
    def where(self) -> str:
        return f"{self.address}:{self.port}"

    @classmethod
    def configured(cls, ssh, *, address: str, port: int, name: str,
                   where: str = "releaser.toml") -> "HostSpec":
        """The spec of a configured SSH host (central or node) with the ``[ssh]`` trust.

        ``ssh`` is the ``releaser.config.SSHConfig``; without its pinned
        known_hosts and identity file no host is reached (ConfigError).
        """
        if ssh.known_hosts is None or ssh.identity_file is None:
            raise ConfigError(f"{where}: ssh.known_hosts and ssh.identity_file are required "
                              f"for SSH host {name}")
        return cls(address=address, port=port, user=ssh.user,
                   identity_file=Path(ssh.identity_file), known_hosts=Path(ssh.known_hosts),
                   connect_timeout=ssh.connect_timeout, name=name)


def env_block(env: Mapping[str, str]) -> bytes:
    """The variables as ``ENV_READER`` reads them from stdin (see there).

    Names must be shell variable names; values any text without NUL (which
    no environment can hold).
    """
    lines = [str(len(env))]
    for key, value in env.items():
        if not key or key[0].isdigit() or not set(key) <= _ENV_NAME_CHARS:
            raise ValueError(f"invalid environment variable name: {key!r}")
        value = str(value)
        if "\0" in value:
            raise ValueError(f"environment variable {key} holds a NUL byte")
        parts = value.split("\n")
        lines += [f"{key} {len(parts)}", *parts]
    return ("\n".join(lines) + "\n").encode("utf-8")


def remote_command(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> str:
    """The command line sent to the host: ``shlex.join`` of argv.

    Nothing is interpolated: every argument reaches the remote program exactly
    as given, whatever shell metacharacters it holds.  With ``env`` the
    command runs under ``sh -c ENV_READER``, which takes the variables from
    stdin (``env_block``): neither names nor values are in this line.
    ``timeout`` becomes a ``timeout -k N SECS`` prefix, so the
    host itself stops the command's process group when time is up (closing
    the channel would not: a command without a tty keeps running, and sshd
    refuses RFC 4254 "signal" requests for root sessions).
    """
    argv = [str(a) for a in argv]
    if not argv:
        raise ValueError("empty argv")
    if env:
        env_block(env)  # refuse bad names before anything is sent
        argv = ["sh", "-c", ENV_READER, "releaser-env", *argv]
    if timeout is not None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        # Short options only: GNU coreutils and busybox both accept them.
        argv = ["timeout", "-k", f"{KILL_AFTER:g}", f"{timeout:g}", *argv]
    return shlex.join(argv)


class _PinnedRejectPolicy(paramiko.RejectPolicy):
    """RejectPolicy whose refusal names the known_hosts file and the offered key."""

    def __init__(self, spec: HostSpec) -> None:
        self.spec = spec

    def missing_host_key(self, client, hostname, key) -> None:
        raise HostKeyError(
            f"host {self.spec.label} ({self.spec.where}): host key not in {self.spec.known_hosts}; "
            f"refusing (server offers {key.get_name()} {key.fingerprint})"
        )


class SSHRunner:
    """Runs commands and copies files on one host over SSH (the ``Runner`` protocol).

    The connection opens on first use and is reused; a connection that died
    in between (host rebooted, sshd restarted) is reopened before a command
    is sent, never after.  Commands from several threads run side by side,
    each on a channel of its own over the one connection (paramiko's
    Transport multiplexes them); file transfers take turns on its one SFTP
    session.  Within ``releaser.hosts.ssh_pool.shared_connections`` every
    user of a host gets the same runner, so a run connects to each host once.
    """

    def __init__(self, spec: HostSpec, *, shared: bool = False) -> None:
        self.spec = spec
        self.host = spec.label
        #: Handed out by a ConnectionPool: ``close`` leaves it to the pool.
        self.shared = shared
        self._lock = threading.RLock()
        # One SFTP session per connection, and paramiko's SFTPClient is not
        # thread-safe: transfers from worker threads take turns.
        self._transfer_lock = threading.Lock()
        self._conn: fabric.Connection | None = None
        #: Folders ``put`` made on the host (``_make_dir``); a set's add is atomic.
        self._made_dirs: set[str] = set()

    # -- connection --------------------------------------------------------

    def _new_connection(self) -> fabric.Connection:
        spec = self.spec
        # lazy=True: no /etc/fabric.yaml, ~/.fabric.yaml, ~/.ssh/config or
        # /etc/ssh/ssh_config; load_ssh_configs=False keeps it that way.
        config = fabric.Config(lazy=True, overrides={"load_ssh_configs": False,
                                                     "forward_agent": False})
        timeout = float(spec.connect_timeout)
        conn = fabric.Connection(
            host=spec.address,
            user=spec.user,
            port=int(spec.port),
            config=config,
            forward_agent=False,
            gateway=None,
            # Fabric truncates connect_timeout with int(); give paramiko the
            # float directly (and the same bound to the banner and auth steps,
            # so a port that accepts TCP but never speaks SSH cannot stall us).
            connect_kwargs={
                "key_filename": str(spec.identity_file),
                "allow_agent": False,
                "look_for_keys": False,
                "timeout": timeout,
                "banner_timeout": timeout,
                "auth_timeout": timeout,
                "channel_timeout": timeout,
            },
        )
        # Fabric installs AutoAddPolicy; trust only the pinned file.
        conn.client.set_missing_host_key_policy(_PinnedRejectPolicy(spec))
        return conn

    def _check_files(self) -> None:
        spec = self.spec
        if not os.access(spec.identity_file, os.R_OK):
            raise ConfigError(f"host {spec.label}: identity file {spec.identity_file} "
                              "is missing or unreadable")
        if not os.access(spec.known_hosts, os.R_OK):
            raise HostKeyError(f"host {spec.label} ({spec.where}): known_hosts file "
                               f"{spec.known_hosts} is missing or unreadable; refusing")

    def connect(self) -> fabric.Connection:
        """Open (or reuse) the connection; raise HostKeyError/UnreachableError."""
        with self._lock:
            if self._conn is not None and self._conn.is_connected:
                return self._conn
            self._discard()
            self._check_files()
            spec = self.spec
            conn = self._new_connection()
            try:
                conn.client.load_host_keys(str(spec.known_hosts))
            except (OSError, paramiko.SSHException) as exc:
                raise HostKeyError(f"host {spec.label} ({spec.where}): cannot load "
                                   f"{spec.known_hosts}: {exc}; refusing") from exc
            try:
                conn.connect_kwargs["sock"] = self._tcp_connect()
                conn.open()
            except BaseException as exc:
                # paramiko leaves the transport thread running on refusal.
                conn.client.close()
                mapped = self._connect_error(exc)
                if mapped is exc:
                    raise
                raise mapped from exc
            if spec.keepalive:
                conn.transport.set_keepalive(spec.keepalive)
            self._conn = conn
            return conn

    def _tcp_connect(self) -> socket.socket:
        """The TCP connection, with TCP_NODELAY set before the first byte.

        Without it, each new channel on a reused connection waits ~40 ms for
        a delayed ACK (Nagle); with it a command round trip is a few ms.
        """
        sock = socket.create_connection((self.spec.address, int(self.spec.port)),
                                        timeout=float(self.spec.connect_timeout))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _connect_error(self, exc: BaseException) -> BaseException:
        spec = self.spec
        prefix = f"host {spec.label} ({spec.where})"
        if isinstance(exc, HostKeyError):
            return exc
        if isinstance(exc, paramiko.BadHostKeyException):
            return HostKeyError(
                f"{prefix}: host key CHANGED: server offers {exc.key.get_name()} "
                f"{exc.key.fingerprint} but {spec.known_hosts} pins "
                f"{exc.expected_key.get_name()} {exc.expected_key.fingerprint}; refusing "
                "(possible man-in-the-middle; if the host was reinstalled, update the file)"
            )
        if isinstance(exc, paramiko.AuthenticationException):
            return UnreachableError(f"{prefix}: authentication failed for user {spec.user} "
                                    f"with key {spec.identity_file}: {exc}")
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
            inner = list(exc.errors.values())
            exc = inner[0] if inner else exc
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return UnreachableError(f"{prefix}: connection timed out after "
                                    f"{spec.connect_timeout:g}s")
        if isinstance(exc, socket.gaierror):
            return UnreachableError(f"{prefix}: cannot resolve address: {exc.strerror}")
        if isinstance(exc, OSError):
            reason = {
                errno.ECONNREFUSED: "connection refused",
                errno.EHOSTUNREACH: "no route to host",
                errno.ENETUNREACH: "network unreachable",
                errno.ECONNRESET: "connection reset",
            }.get(exc.errno, exc.strerror or str(exc))
            return UnreachableError(f"{prefix}: {reason}")
        if isinstance(exc, EOFError):
            return UnreachableError(f"{prefix}: connection closed during SSH handshake")
        if isinstance(exc, paramiko.SSHException):
            return UnreachableError(f"{prefix}: SSH handshake failed: {exc}")
        return exc

    def _discard(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn.client.close()
                self._conn = None

    def disconnect(self) -> None:
        """Close the SFTP session and the connection (reopened on next use): the link
        broke or stalled, so it is closed for every user of this runner."""
        with self._lock:
            self._discard()

    def close(self) -> None:
        """Close the SFTP session and the connection (reopened on next use).

        A runner of a pool (``releaser.hosts.ssh_pool``) stays open for the pool's
        other users: the pool closes it when the run ends.
        """
        if not self.shared:
            self.disconnect()

    def __enter__(self) -> "SSHRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    def _open_session(self) -> paramiko.Channel:
        """A fresh session channel, reconnecting once if the old link died.

        Safe to retry: nothing has been sent to the host yet.
        """
        for attempt in (1, 2):
            conn = self.connect()
            try:
                return conn.transport.open_session(timeout=self.spec.connect_timeout)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                self.disconnect()
                if attempt == 2:
                    raise UnreachableError(f"host {self.host} ({self.spec.where}): "
                                           f"cannot open a session: {exc}") from exc
        raise AssertionError("unreachable")

    # -- commands ----------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run argv on the host; CommandError on non-zero exit when ``check``.

        ``input`` goes to the command's stdin, which is closed afterwards (or
        at once without input), so nothing ever waits for a terminal.  ``env``
        travels on stdin ahead of it (``ENV_READER``), never in the command
        line.  After
        ``timeout`` seconds the host's ``timeout`` stops the command (SIGTERM,
        SIGKILL ``KILL_AFTER`` s later) and a CommandError with return code
        124 is raised whatever ``check`` says: there is no exit status worth
        returning.  A connection lost mid-command is an UnreachableError: the
        command's outcome is unknown.
        """
        argv = tuple(str(a) for a in argv)
        command = remote_command(argv, env, timeout)
        stdin = None if input is None else input.encode("utf-8")
        if env:
            # The variables go first on stdin (ENV_READER), the command's input after.
            stdin = env_block(env) + (stdin or b"")
        # Backstop in case the host stops answering altogether.
        backstop = None if timeout is None else timeout + KILL_AFTER + self.spec.connect_timeout
        started = time.monotonic()
        chan = self._open_session()
        try:
            chan.exec_command(command)
            feeder = self._feed_stdin(chan, stdin)
            out, err, stalled = self._collect(chan, backstop, started)
            if feeder is not None:
                feeder.join(timeout=1)
            elapsed = time.monotonic() - started
            stdout = out.decode("utf-8", errors="replace")
            stderr = err.decode("utf-8", errors="replace")
            if stalled:
                self.disconnect()
                raise CommandError(argv, TIMEOUT_RETURNCODE, stdout,
                                   stderr + f"\nreleaser: no answer from {self.host} "
                                   f"{backstop:g}s after starting the command (timeout {timeout:g}s)",
                                   self.host)
            if chan.exit_status_ready() and chan.exit_status != -1:
                returncode = chan.exit_status
            elif self._conn is not None and self._conn.is_connected:
                # Closed without exit-status: sshd sent exit-signal (paramiko
                # does not record it): the command was killed by a signal.
                returncode = -1
                stderr += "\nreleaser: remote command was killed by a signal"
            else:
                self.disconnect()
                raise UnreachableError(f"host {self.host} ({self.spec.where}): connection lost "
                                       f"while running {argv[0]}; its outcome is unknown")
        except paramiko.SSHException as exc:
            self.disconnect()
            raise UnreachableError(f"host {self.host} ({self.spec.where}): SSH failure while "
                                   f"running {argv[0]}: {exc}") from exc
        finally:
            chan.close()
        if timeout is not None and returncode in (124, 137) and elapsed >= timeout:
            raise CommandError(argv, TIMEOUT_RETURNCODE, stdout,
                               stderr + f"\nreleaser: timed out after {timeout:g}s", self.host)
        result = CommandResult(argv, returncode, stdout, stderr, elapsed)
        if check and returncode != 0:
            raise CommandError(argv, returncode, stdout, stderr, self.host)
        return result

    @staticmethod
    def _feed_stdin(chan: paramiko.Channel, data: bytes | None) -> threading.Thread | None:
        if data is None:
            chan.shutdown_write()  # EOF now: a command reading stdin must not wait
            return None

        def feed() -> None:
            # In a thread: sendall blocks while the remote does not read, and
            # we must keep draining its output meanwhile.
            try:
                chan.sendall(data)
                chan.shutdown_write()
            except (OSError, EOFError, paramiko.SSHException):
                pass  # command exited without reading everything: not an error

        thread = threading.Thread(target=feed, name=f"ssh-stdin-{chan.get_id()}", daemon=True)
        thread.start()
        return thread

    @staticmethod
    def _collect(chan: paramiko.Channel, backstop: float | None,
                 started: float) -> tuple[bytes, bytes, bool]:
        """Drain stdout and stderr until the command finished (or the backstop passed)."""
        out: list[bytes] = []
        err: list[bytes] = []
        deadline = None if backstop is None else started + backstop
        fd = chan.fileno()  # readable whenever stdout or stderr has data, or on close
        while True:
            while chan.recv_ready():
                out.append(chan.recv(65536))
            while chan.recv_stderr_ready():
                err.append(chan.recv_stderr(65536))
            finished = chan.closed or (chan.eof_received and chan.exit_status_ready())
            if finished and not chan.recv_ready() and not chan.recv_stderr_ready():
                return b"".join(out), b"".join(err), False
            wait = 1.0
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    return b"".join(out), b"".join(err), True
                wait = min(wait, 1.0)
            select.select([fd], [], [], wait)

    # -- files -------------------------------------------------------------

    def _sftp(self) -> paramiko.SFTPClient:
        with self._lock:
            conn = self.connect()
            return conn.sftp()

    def put(self, local: Path, remote: str) -> None:
        """Copy a local file to ``remote``, atomically.

        The bytes go to a temporary name in the same remote directory, which
        is then renamed over ``remote`` (posix-rename@openssh.com), so a
        half-copied file never appears under its final name.  The parent
        directory is created with ``mkdir -p``.  Local errors (missing file)
        are raised as OSError, like LocalRunner; remote ones as CommandError.
        """
        remote = str(remote)
        directory, name = posixpath.split(remote)
        if not name:
            raise ValueError(f"remote path {remote!r} names a directory, not a file")
        with open(local, "rb") as source:
            assumed = directory in self._made_dirs
            if not assumed:
                self._make_dir(directory)
            try:
                self._upload(source, local, remote)
            except CommandError:
                if not assumed:
                    raise
                # The folder this runner made earlier was removed since: once more with it.
                self._made_dirs.discard(directory)
                self._make_dir(directory)
                source.seek(0)
                self._upload(source, local, remote)

    def _make_dir(self, directory: str) -> None:
        """``mkdir -p`` once per folder and runner: a run puts many files in few folders."""
        if directory:
            self.run(["mkdir", "-p", "--", directory])
            self._made_dirs.add(directory)

    def _upload(self, source, local: Path, remote: str) -> None:
        directory, name = posixpath.split(remote)
        tmp = posixpath.join(directory, f".{name}.releaser-{uuid.uuid4().hex[:12]}.tmp")
        sftp = self._sftp()
        try:
            with self._transfer_lock:
                sftp.putfo(source, tmp, file_size=os.fstat(source.fileno()).st_size,
                           confirm=True)
                sftp.posix_rename(tmp, remote)
        except OSError as exc:
            try:
                sftp.remove(tmp)
            except OSError:
                pass
            raise CommandError(["sftp-put", str(local), remote], 1, "",
                               f"{remote}: {exc}", self.host) from exc

    def get(self, remote: str, local: Path) -> None:
        """Copy ``remote`` to a local path, atomically (temporary name, then rename)."""
        sftp = self._sftp()
        with atomic_file(Path(local)) as target:  # local errors propagate as OSError
            try:
                with self._transfer_lock:
                    sftp.getfo(str(remote), target)
            except OSError as exc:
                raise CommandError(["sftp-get", str(remote), str(local)], 1, "",
                                   f"{remote}: {exc}", self.host) from exc

