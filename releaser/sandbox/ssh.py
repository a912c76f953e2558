"""The SSH side of ``releaser sandbox init --ssh``: one real sshd per host.

With ``--ssh`` the sandbox fleet is reached exactly as production is: every
node and the central repository sit behind their own OpenSSH ``sshd``
(``releaser.sandbox.sshd.SandboxSSHD``) on their own loopback address, with their own
host key, and releaser talks to them only through ``SSHRunner`` with pinned
host keys and one client key.  What a sandbox node still shares with this
machine is its filesystem: the node directory is the host's ROOT, and the
node's login environment (sshd's ``SetEnv``) carries the Portage variables
that point ``emerge``, ``portageq`` and the ``rc-service`` stand-in at it, as
a real Gentoo host's login would need none.

Layout under the sandbox directory::

    ssh/id_ed25519(.pub)   the client key releaser authenticates with
    ssh/known_hosts        pins every host key (central and nodes)
    sshd/NAME/             one daemon's state: host key, sshd_config, pid, log

Addresses: the central repository on ``127.0.0.2``, node *i* (1-based, in
environment order) on ``127.0.0.(10+i)``, so a node's address says which node
it is in every log line.  Each daemon takes port 22 on its address when that
is free (as a real host would) and a kernel-chosen free port otherwise
(another sandbox, or a system sshd listening on the wildcard address).

What ``sandbox.json`` records of each daemon (``to_state``) is enough to stop
it or restart it with the same configuration (``from_state``), without
trusting a bare pid: ``SandboxSSHD`` only signals an sshd started with that
state directory's config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

from releaser.errors import SSHDError, UsageError
from releaser.hosts.ssh import HostSpec
from releaser.sandbox.sshd import (
    SandboxSSHD,
    free_port,
    generate_client_key,
    port_is_free,
    write_known_hosts,
)

CENTRAL = "central"
CENTRAL_ADDRESS = "127.0.0.2"
#: Node i (1-based) listens on 127.0.0.(NODE_HOST_BASE + i).
NODE_HOST_BASE = 10
USER = "root"
CLIENT_KEY = Path("ssh") / "id_ed25519"
KNOWN_HOSTS = Path("ssh") / "known_hosts"
SSHD_DIR = Path("sshd")


def node_address(index: int) -> str:
    """The loopback address of the ``index``-th node (1-based)."""
    if not 1 <= index <= 254 - NODE_HOST_BASE:
        raise UsageError(f"an SSH sandbox holds at most {254 - NODE_HOST_BASE} nodes")
    return f"127.0.0.{NODE_HOST_BASE + index}"


def client_key(directory: Path) -> str:
    """Create (or keep) the sandbox's client key; returns its public key line."""
    return generate_client_key(directory / CLIENT_KEY, comment="releaser-sandbox")


def start_sshd(directory: Path, name: str, address: str, env: Mapping[str, str],
               authorized_key: str) -> SandboxSSHD:
    """Start host ``name``'s sshd on ``address``: port 22 if free there, else a free port.

    Retried once on another port if the chosen one was taken between the check
    and sshd's bind (two sandboxes set up at the same time).
    """
    state_dir = directory / SSHD_DIR / name
    for attempt in (1, 2):
        port = 22 if port_is_free(address, 22) else free_port(address)
        sshd = SandboxSSHD(state_dir, address, authorized_key=authorized_key, port=port,
                           env=dict(env))
        try:
            return sshd.start()
        except SSHDError:
            if attempt == 2 or port_is_free(address, port):
                raise
    raise AssertionError("unreachable")


def write_trust(directory: Path, daemons: Iterable[SandboxSSHD]) -> Path:
    """Write ssh/known_hosts pinning each daemon's host key at its address and port."""
    return write_known_hosts(directory / KNOWN_HOSTS,
                             [(d.address, d.port, d.host_public_key) for d in daemons])


def host_spec(directory: Path, name: str, daemon: SandboxSSHD) -> HostSpec:
    """How releaser reaches ``daemon``: the sandbox's key and pinned known_hosts."""
    return HostSpec(address=daemon.address, port=daemon.port, user=USER, name=name,
                    identity_file=directory / CLIENT_KEY, known_hosts=directory / KNOWN_HOSTS)


def to_state(daemon: SandboxSSHD) -> dict:
    """What sandbox.json keeps of one daemon (``env`` so a restart keeps the login env)."""
    return {"address": daemon.address, "port": daemon.port, "state_dir": str(daemon.state_dir),
            "pid": daemon.pid, "env": dict(daemon.env)}


def from_state(state: Mapping) -> SandboxSSHD:
    """The daemon a sandbox.json entry describes, ready to ``stop()`` or ``start()`` again."""
    state_dir = Path(state["state_dir"])
    keys = state_dir / "authorized_keys"
    key = keys.read_text().strip() if keys.exists() else ""
    daemon = SandboxSSHD(state_dir, state["address"], authorized_key=key,
                         port=int(state["port"]), env=dict(state.get("env", {})))
    # The pid the daemon wrote itself (the one in sandbox.json is stale after
    # a restart); ``running`` still checks it is this state dir's sshd.
    try:
        daemon.pid = int(daemon.pid_path.read_text().strip())
    except (OSError, ValueError):
        daemon.pid = None
    return daemon


def stop_all(state: Mapping[str, Mapping], progress=lambda _m: None) -> None:
    """Stop every daemon of a sandbox.json ``ssh.sshd`` table; already stopped is fine."""
    errors = []
    for name, entry in state.items():
        daemon = from_state(entry)
        was = daemon.pid_path.exists()
        try:
            daemon.stop()
        except SSHDError as exc:  # keep stopping the others
            errors.append(str(exc))
            continue
        if was:
            progress(f"sshd {name} ({daemon.address}:{daemon.port}) stopped")
    if errors:
        raise SSHDError("; ".join(errors))
