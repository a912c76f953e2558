"""LXC containers and the bridge they sit on: the machinery of ``sandbox init --hosts lxc``.

The sandbox's own tools, driven through ``lxc-*`` and ``ip`` as an operator
would; the product never sees them (it reaches the hosts by address over
SSH).  Everything a sandbox makes is named after the sandbox folder
(``prefix``: ``rl`` and six hex digits of the folder's path digest), so two
sandboxes (a test and a demo) coexist and ``down`` removes exactly what its
own ``sandbox.json`` recorded: containers ``<prefix>-<node>``, the bridge
``<prefix>br`` with its ``/24``.

A host is made from the cached image (``releaser.sandbox.lxc_image``): its
root filesystem unpacked under LXC's path, a config file of our own (static
address, OpenRC as PID 1), and the three things a cloud provider gives a new
machine: its hostname, its sshd host key (generated here, so the sandbox pins
it in known_hosts before the first connection) and root's authorized key.
"""

from __future__ import annotations

import hashlib
import ipaddress
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from releaser.errors import SandboxError, last_line
from releaser.sandbox import artifact_cache

#: Seconds a started container has to answer on port 22.
BOOT_TIMEOUT = 60.0
#: The /24 networks a sandbox bridge may take: 10.X.Y.0/24 with X in this range.
SUBNET_FIRST_OCTET = range(200, 250)


def prefix(directory: Path) -> str:
    """The name prefix of everything ``directory``'s sandbox makes."""
    return "rl" + hashlib.sha256(str(Path(directory).absolute()).encode()).hexdigest()[:6]


def container_name(directory: Path, node: str) -> str:
    return f"{prefix(directory)}-{node}"


def _run(argv: list[str], what: str, *, check: bool = True,
         timeout: float = 120) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxError(f"{what}: {exc}") from None
    if check and done.returncode != 0:
        raise SandboxError(f"{what} exited {done.returncode}: "
                           f"{last_line(done.stderr, done.stdout)}")
    return done


def lxc_path() -> Path:
    """Where LXC keeps its containers (``lxc.lxcpath``, /var/lib/lxc by default)."""
    out = _run(["lxc-config", "lxc.lxcpath"], "lxc-config").stdout.strip()
    return Path(out or "/var/lib/lxc")


# --------------------------------------------------------------------------- the bridge


@dataclass(frozen=True)
class Bridge:
    """A Linux bridge with the sandbox's /24: ``.1`` is this machine, hosts from ``.10``."""

    name: str
    network: str  # "10.X.Y.0/24"

    @property
    def gateway(self) -> str:
        return str(ipaddress.ip_network(self.network).network_address + 1)

    def host_address(self, index: int) -> str:
        """The address of the ``index``-th host (1-based)."""
        if not 1 <= index <= 200:
            raise SandboxError("an LXC sandbox holds at most 200 hosts")
        return str(ipaddress.ip_network(self.network).network_address + 9 + index)

    def to_state(self) -> dict:
        return {"name": self.name, "network": self.network}


def _networks_in_use() -> list[ipaddress.IPv4Network]:
    out = _run(["ip", "-4", "-o", "addr", "show"], "ip addr").stdout
    nets = []
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            nets.append(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
    return nets


def create_bridge(directory: Path) -> Bridge:
    """Make the sandbox's bridge on a /24 no interface of this machine uses."""
    name = prefix(directory) + "br"
    if Path(f"/sys/class/net/{name}").exists():
        raise SandboxError(f"a bridge {name} already exists: `releaser sandbox down "
                           f"{directory}` removes the sandbox that made it")
    used = _networks_in_use()
    start = int(prefix(directory)[2:], 16)
    for i in range(len(SUBNET_FIRST_OCTET) * 256):
        k = (start + i) % (len(SUBNET_FIRST_OCTET) * 256)
        net = ipaddress.ip_network(f"10.{SUBNET_FIRST_OCTET[k // 256]}.{k % 256}.0/24")
        if not any(net.overlaps(u) for u in used):
            break
    else:
        raise SandboxError("no free 10.x.y.0/24 network for the sandbox bridge")
    bridge = Bridge(name, str(net))
    _run(["ip", "link", "add", name, "type", "bridge"], f"ip link add {name}")
    try:
        _run(["ip", "addr", "add", f"{bridge.gateway}/24", "dev", name], "ip addr add")
        _run(["ip", "link", "set", name, "up"], "ip link set up")
    except SandboxError:
        delete_bridge(name)
        raise
    return bridge


def delete_bridge(name: str) -> bool:
    """Remove bridge ``name``; False if it was not there."""
    if not Path(f"/sys/class/net/{name}").exists():
        return False
    _run(["ip", "link", "del", name], f"ip link del {name}")
    return True


# --------------------------------------------------------------------------- containers


CONFIG = """# Written by releaser.sandbox.lxc: one host of a sandbox.
lxc.include = /usr/share/lxc/config/common.conf
lxc.arch = linux64
lxc.uts.name = {hostname}
lxc.rootfs.path = dir:{rootfs}
lxc.init.cmd = /sbin/openrc-init
lxc.tty.dir =
lxc.net.0.type = veth
lxc.net.0.link = {bridge}
lxc.net.0.flags = up
lxc.net.0.name = eth0
lxc.net.0.ipv4.address = {address}/24
lxc.net.0.ipv4.gateway = {gateway}
"""


@dataclass(frozen=True)
class Container:
    """One host: LXC's name for it, its hostname (the node name) and its address."""

    name: str
    hostname: str
    address: str

    def to_state(self) -> dict:
        return {"name": self.name, "hostname": self.hostname, "address": self.address}


def create_container(image: Path, container: Container, bridge: Bridge,
                     authorized_key: str) -> str:
    """Make ``container`` from the image; returns its sshd's public host key line."""
    home = lxc_path() / container.name
    if home.exists():
        raise SandboxError(f"container {container.name} already exists ({home})")
    rootfs = home / "rootfs"
    home.mkdir(parents=True)
    # The config first: from then on LXC knows the container, and ``destroy`` removes it
    # even if unpacking stops part way.
    (home / "config").write_text(CONFIG.format(
        hostname=container.hostname, rootfs=rootfs, bridge=bridge.name,
        address=container.address, gateway=bridge.gateway))
    artifact_cache.unpack(image, rootfs)
    (rootfs / "etc/hostname").write_text(container.hostname + "\n")
    (rootfs / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n{container.address}\t"
                                      f"{container.hostname}\n")
    key = rootfs / "etc/ssh/ssh_host_ed25519_key"
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{container.hostname}",
          "-f", str(key)], "ssh-keygen")
    keys = rootfs / "root/.ssh/authorized_keys"
    keys.write_text(authorized_key.strip() + "\n")
    keys.chmod(0o600)
    return key.with_suffix(".pub").read_text().strip()


def start(container: Container, timeout: float = BOOT_TIMEOUT) -> None:
    """Boot ``container`` and wait until its sshd answers on port 22."""
    _run(["lxc-start", "-n", container.name], f"lxc-start {container.name}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ssh_answers(container.address):
            return
        time.sleep(0.2)
    raise SandboxError(f"{container.name} ({container.address}): sshd did not answer on port "
                       f"22 within {timeout:g} s")


def ssh_answers(address: str, port: int = 22) -> bool:
    """True if an SSH server greets on ``address:port``."""
    try:
        with socket.create_connection((address, port), timeout=1) as s:
            s.settimeout(2)
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def attach(name: str, argv: list[str], *, check: bool = True,
           timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``argv`` inside container ``name`` (``lxc-attach``), as its console would."""
    return _run(["lxc-attach", "-n", name, "--clear-env", "--set-var",
                 "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 "--", *argv], f"lxc-attach {name} {argv[0]}", check=check, timeout=timeout)


def exists(name: str) -> bool:
    return (lxc_path() / name / "config").exists()


def destroy(name: str) -> bool:
    """Stop (kill) and destroy container ``name``; False if it did not exist."""
    if not exists(name):
        return False
    _run(["lxc-stop", "-n", name, "-k"], f"lxc-stop {name}", check=False, timeout=60)
    done = _run(["lxc-destroy", "-n", name], f"lxc-destroy {name}", check=False, timeout=120)
    if done.returncode != 0 and exists(name):
        shutil.rmtree(lxc_path() / name, ignore_errors=True)
    return True


def running(name: str) -> bool:
    done = _run(["lxc-info", "-n", name, "-s", "-H"], f"lxc-info {name}", check=False)
    return done.stdout.strip() == "RUNNING"
