"""A real OpenSSH ``sshd`` per sandbox node, on a loopback address.

The sandbox fleet must exercise the very code path production uses: SSH with
pinned host keys, key-only authentication and SFTP.  So each sandbox node gets
its own ``sshd`` (Debian's ``openssh-server``), its own ed25519 host key, and a
login environment carrying the node's variables (``PORTAGE_CONFIGROOT``,
``ROOT``, ``PATH``...) through the server's own ``SetEnv`` directive, so a
remote command sees them exactly as it would on a real host, without the client
having to send anything.

Findings that shaped this module (OpenSSH 9.2, Debian bash):

* ``SetEnv NAME=VALUE`` in sshd_config overrides sshd's default environment,
  ``PATH`` included: the value arrives byte for byte when the whole token is
  double-quoted with ``\\`` and ``"`` backslash-escaped (spaces, ``#``, ``'``,
  ``$``, ``%``, tabs and UTF-8 all survive; newlines cannot be expressed).
* The user's login shell still runs between sshd and the command, and a bash
  built with SSH_SOURCE_BASHRC (Debian's is) sources ``~/.bashrc`` when
  started by sshd, even for ``bash -c``.  If the
  developer's ``/root/.bashrc`` prepends to ``PATH`` (pyenv, cargo...), the node
  would see the developer's ``PATH``, not its own.  So the node's login gets
  its own ``HOME`` (``<state_dir>/home`` unless the caller sets ``HOME``):
  bash then reads the node's ``.bashrc`` (none by default), the developer's
  dotfiles (``.bashrc``, ``.gitconfig``, ``.ssh``) never leak into the node,
  and ``PATH`` arrives exactly as given.  sshd still starts commands (and
  SFTP) in the account's passwd home directory.
* ``StrictModes no`` is needed because state directories usually live under
  ``/tmp`` (world-writable); this weakening is confined to sandbox daemons.
* From OpenSSH 9.8 on, ``PerSourcePenalties`` would block 127.0.0.1 for a
  while after clients that hang up during key exchange (exactly what a refused
  host key does); it is switched off when the server knows the option.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from releaser.errors import SSHDError
from releaser.files import write_atomic
from releaser.processes import pid_alive, process_cmdline

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"
PRIVSEP_DIR = Path("/run/sshd")

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# --------------------------------------------------------------------------
# Keys and known_hosts
# --------------------------------------------------------------------------


def _keygen(path: Path, comment: str) -> None:
    # stdin from /dev/null: ssh-keygen asks "Overwrite (y/n)?" on a tty-less
    # stdin it would otherwise wait forever.
    proc = subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SSHDError(f"ssh-keygen {path} failed: {proc.stderr.strip() or proc.stdout.strip()}")


def _public_key_of(path: Path) -> str:
    pub = path.with_name(path.name + ".pub")
    if pub.exists():
        return pub.read_text().strip()
    proc = subprocess.run([SSH_KEYGEN, "-y", "-f", str(path)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SSHDError(f"cannot read public key of {path}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def generate_client_key(path: Path | str, *, comment: str = "releaser") -> str:
    """Create an ed25519 key pair without passphrase at ``path`` (+ ``.pub``).

    Returns the public key line.  Idempotent: an existing key is kept and its
    public half returned, so re-running sandbox setup never invalidates the
    ``authorized_keys`` already handed to nodes.  No passphrase, because the
    runner never prompts (it must not hang waiting for a human).
    """
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _keygen(path, comment)
    return _public_key_of(path)


def known_hosts_line(address: str, port: int, host_pubkey: str) -> str:
    """One known_hosts line pinning ``host_pubkey`` for ``address:port``.

    OpenSSH (and paramiko) look a host up as ``address`` on port 22 and as
    ``[address]:port`` otherwise; ``host_pubkey`` is the ``.pub`` content
    (``type base64 [comment]``), the comment is dropped.
    """
    fields = host_pubkey.split()
    if len(fields) < 2:
        raise ValueError(f"not a public key line: {host_pubkey!r}")
    name = address if int(port) == 22 else f"[{address}]:{int(port)}"
    return f"{name} {fields[0]} {fields[1]}"


def write_known_hosts(path: Path | str, entries: Iterable[tuple[str, int, str]]) -> Path:
    """Write a known_hosts file from ``(address, port, host_pubkey)`` entries.

    Written to a temporary name and renamed, so a runner never reads a half
    written trust file.
    """
    path = Path(path)
    text = "".join(known_hosts_line(a, p, k) + "\n" for a, p, k in entries)
    write_atomic(path, text, perm=0o644)
    return path


# --------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------


def port_is_free(address: str, port: int) -> bool:
    """True if nothing listens on ``address:port`` (or on a wildcard that covers it).

    SO_REUSEADDR, as sshd itself uses, so sockets in TIME_WAIT do not count as
    taken while a listener does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_port(address: str) -> int:
    """A port the kernel currently considers free on ``address``.

    For tests and ad-hoc sandboxes that must not collide with a system sshd or
    with each other; there is a small race until sshd binds it, which
    :meth:`SandboxSSHD.start` reports clearly if lost.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _port_accepts(address: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------
# sshd_config
# --------------------------------------------------------------------------


def _quote(value: str) -> str:
    """Quote one sshd_config argument (sshd's argv_split rules)."""
    if "\n" in value or "\r" in value or "\0" in value:
        raise SSHDError(f"sshd_config value cannot contain a newline or NUL: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quote_path(path: Path) -> str:
    # AuthorizedKeysFile and PidFile expand %-tokens; a literal % is %%.
    return _quote(str(path).replace("%", "%%"))


def _sshd_version() -> tuple[int, int]:
    proc = subprocess.run([SSHD, "-V"], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    match = re.search(r"OpenSSH_(\d+)\.(\d+)", proc.stderr + proc.stdout)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def render_sshd_config(
    *,
    address: str,
    port: int,
    host_key: Path,
    pid_file: Path,
    authorized_keys: Path,
    env: Mapping[str, str],
    sshd_version: tuple[int, int] = (0, 0),
) -> str:
    """The sshd_config text of one sandbox node.

    Hardened like a production node (keys only, no root password, no agent or
    X11 forwarding) except ``StrictModes no`` and ``UsePAM no``, which a
    daemon with its files under /tmp, started by a developer, needs.
    """
    for name in env:
        if not _ENV_NAME.match(name):
            raise SSHDError(f"invalid environment variable name for SetEnv: {name!r}")
    lines = [
        "# written by releaser.sandbox.sshd for a sandbox node; do not edit",
        f"ListenAddress {address}:{port}",
        f"HostKey {_quote(str(host_key))}",
        f"PidFile {_quote_path(pid_file)}",
        f"AuthorizedKeysFile {_quote_path(authorized_keys)}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "PermitEmptyPasswords no",
        "AllowAgentForwarding no",
        "AllowTcpForwarding no",
        "X11Forwarding no",
        "PermitTunnel no",
        "UsePAM no",
        "StrictModes no",
        "PrintMotd no",
        "UseDNS no",
        "LogLevel VERBOSE",
        # The fleet fans out in parallel: do not drop concurrent handshakes.
        "MaxStartups 100",
        "MaxSessions 100",
        "Subsystem sftp internal-sftp",
    ]
    if sshd_version >= (9, 8):
        lines.append("PerSourcePenalties no")
    if env:
        lines.append("SetEnv " + " ".join(_quote(f"{k}={v}") for k, v in env.items()))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# The daemon
# --------------------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``: per-connection sshds and the commands they run."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class SandboxSSHD:
    """One node's sshd: its files live in ``state_dir``, it listens on ``address:port``.

    ``authorized_key`` is the public key line of the fleet's client key; ``env``
    is the login environment of the node (see the module docstring for why a
    ``HOME`` of ``<state_dir>/home`` is added unless given).  ``start()``
    writes everything, validates with ``sshd -t``, starts the daemon and waits
    until it accepts connections; ``stop()`` kills it (and its sessions) by
    the recorded pid.  Usable as a context manager.
    """

    state_dir: Path
    address: str
    _: KW_ONLY
    authorized_key: str
    port: int = 22
    env: Mapping[str, str] = field(default_factory=dict)
    start_timeout: float = 10.0
    pid: int | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).absolute()
        try:
            ip = ipaddress.ip_address(self.address)
        except ValueError as exc:
            raise SSHDError(f"sandbox sshd address {self.address!r} is not an IP address") from exc
        if not (ip.version == 4 and ip.is_loopback):
            raise SSHDError(f"sandbox sshd address {self.address} is not a 127.0.0.x loopback address")

    # -- paths -------------------------------------------------------------

    @property
    def host_key_path(self) -> Path:
        return self.state_dir / "ssh_host_ed25519_key"

    @property
    def config_path(self) -> Path:
        return self.state_dir / "sshd_config"

    @property
    def pid_path(self) -> Path:
        return self.state_dir / "sshd.pid"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "sshd.log"

    @property
    def authorized_keys_path(self) -> Path:
        return self.state_dir / "authorized_keys"

    @property
    def home_dir(self) -> Path:
        return self.state_dir / "home"

    # -- keys --------------------------------------------------------------

    @property
    def host_public_key(self) -> str:
        """The node's host public key line (created on first use, then kept)."""
        if not self.host_key_path.exists():
            self.state_dir.mkdir(parents=True, exist_ok=True)
            _keygen(self.host_key_path, f"sandbox-node@{self.address}")
        return _public_key_of(self.host_key_path)

    def known_hosts_line(self) -> str:
        """The line to pin this node's host key in a known_hosts file."""
        return known_hosts_line(self.address, self.port, self.host_public_key)

    @property
    def login_env(self) -> dict[str, str]:
        """What ``SetEnv`` gives every login: the node's env plus its own HOME."""
        env = dict(self.env)
        env.setdefault("HOME", str(self.home_dir))
        return env

    # -- lifecycle ---------------------------------------------------------

    def write_config(self) -> Path:
        """Write host key, authorized_keys and sshd_config; validate with ``sshd -t``."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.home_dir.mkdir(exist_ok=True)
        self.host_public_key  # noqa: B018 - creates the host key if missing
        key = self.authorized_key.strip()
        if not key or "\n" in key:
            raise SSHDError("authorized_key must be exactly one public key line")
        self.authorized_keys_path.write_text(key + "\n")
        os.chmod(self.authorized_keys_path, 0o600)
        self.config_path.write_text(render_sshd_config(
            address=self.address,
            port=self.port,
            host_key=self.host_key_path,
            pid_file=self.pid_path,
            authorized_keys=self.authorized_keys_path,
            env=self.login_env,
            sshd_version=_sshd_version(),
        ))
        try:
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as exc:
            raise SSHDError(f"cannot create {PRIVSEP_DIR}, sshd's privilege separation "
                            f"directory ({exc.strerror}); create it as root") from exc
        proc = subprocess.run([SSHD, "-t", "-f", str(self.config_path)],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            msg = "; ".join(line for line in lines if not line.startswith("@"))
            raise SSHDError(f"sshd rejected {self.config_path}: {msg}")
        return self.config_path

    def start(self) -> "SandboxSSHD":
        """Start the daemon and return once it accepts TCP connections."""
        if self.running:
            return self
        # A daemon left behind by an earlier run (same state dir) is restarted
        # with the current configuration rather than reported as a busy port.
        self.stop()
        if not port_is_free(self.address, self.port):
            raise SSHDError(f"{self.address}:{self.port} is already in use; "
                            "pick another port or address for this node")
        self.write_config()
        self.pid_path.unlink(missing_ok=True)
        # sshd daemonises: the parent exits at once, the listener writes PidFile.
        proc = subprocess.run([SSHD, "-f", str(self.config_path), "-E", str(self.log_path)],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SSHDError(f"sshd for {self.address}:{self.port} failed to start: "
                            f"{(proc.stderr or proc.stdout).strip()} {self._log_tail()}")
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.pid is None:
                self.pid = self._read_pid()
            if self.pid is not None and not pid_alive(self.pid):
                self.pid = None
                break
            if self.pid is not None and _port_accepts(self.address, self.port):
                return self
            time.sleep(0.02)
        pid, self.pid = self.pid, None
        if pid is not None:
            self._kill(pid)
        raise SSHDError(f"sshd for {self.address}:{self.port} did not come up within "
                        f"{self.start_timeout:g}s {self._log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        """Kill the daemon by its recorded pid, with its open sessions, and wait.

        Sessions and the commands they run go too, as when a real host goes
        down: an already-connected client must notice, not keep talking to a
        half-stopped node.  (A daemon that detached from its session, as a
        service does, is not below sshd and is left alone.)
        """
        pid = self.pid if self.pid is not None else self._read_pid()
        self.pid = None
        if pid is None:
            return
        self._kill(pid, timeout)
        self.pid_path.unlink(missing_ok=True)

    @property
    def running(self) -> bool:
        return self.pid is not None and pid_alive(self.pid) and self._is_ours(self.pid)

    def __enter__(self) -> "SandboxSSHD":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------

    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None

    def _is_ours(self, pid: int) -> bool:
        # Never signal a recycled pid: it must be an sshd run with our config.
        # (sshd rewrites its argv into one "sshd: /usr/sbin/sshd -f ..." title.)
        title = " ".join(process_cmdline(pid))
        return "sshd" in title and f"-f {self.config_path}" in title

    def _kill(self, pid: int, timeout: float = 10.0) -> None:
        if not self._is_ours(pid):
            return
        sessions = _descendants(pid)
        for target in [pid, *sessions]:
            try:
                os.kill(target, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        for target in [pid, *sessions]:
            if pid_alive(target):
                try:
                    os.kill(target, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        while pid_alive(pid) and time.monotonic() < deadline + 2:
            time.sleep(0.01)
        if pid_alive(pid):
            raise SSHDError(f"sshd pid {pid} for {self.address}:{self.port} did not exit")

    def _log_tail(self, lines: int = 5) -> str:
        try:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return ""
        return f"(log {self.log_path}: {' | '.join(tail)})" if tail else ""
