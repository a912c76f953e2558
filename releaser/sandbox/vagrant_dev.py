"""The operator's side of the Vagrant dev boxes: ``releaser sandbox vagrant prepare|down``.

The Vagrantfile's triggers call these (argv, no shell); a developer never
needs to.  Everything lives next to the development configuration
(``vagrant/releaser.toml``), in its ``.state/`` folder, and comes from that
configuration alone:

* ``prepare``: root's SSH key for releaser (``[ssh] identity_file``), a host
  key for every node and the ``known_hosts`` file pinning them (``[ssh]
  known_hosts``): the box's provisioner installs both, so the first SSH
  connection of ``releaser host bootstrap`` is already verified, as in the
  LXC sandbox; a release key for every environment that has none yet
  (``releaser keys init ENV`` into ``[trust] gnupghome``, ``.state/gnupg``:
  the boxes verify signed overlays as every host does, and a developer's
  key is made on the first ``vagrant up``, with nothing to do by hand); the
  central repository (``[central] path``) and every environment's overlay in
  it, its first commit signed; with ``lxc_net``, LXC's bridge (``lxc-net
  start``, recorded so ``down`` stops only what it started); with ``serve``,
  the HTTP server on the bridge address (``[central] distfiles_url``) that
  serves the distfiles and the overlays by git's smart HTTP, as the LXC
  sandbox's does.  Idempotent, under a lock: Vagrant may run the triggers of
  several boxes at once.
* ``down``: stops the HTTP server, the keyring's gpg-agent (signing started it),
  and LXC's bridge if ``prepare`` started it.
"""

from __future__ import annotations

import fcntl
import subprocess
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from releaser.central import overlay_git
from releaser.central.repository import CentralRepository
from releaser.config import Config
from releaser.errors import KeyringError, SandboxError, UsageError, last_line
from releaser.hosts.runner import LocalRunner
from releaser.sandbox import distserver
from releaser.sandbox.sshd import generate_client_key, write_known_hosts
from releaser.trust.keys import Keyring

#: The folder next to the configuration that holds the boxes' operator-side state.
STATE = ".state"
LXC_NET = "/usr/libexec/lxc/lxc-net"
#: LXC's own bridge, which ``lxc-net start`` makes.
LXC_BRIDGE = "lxcbr0"


def state_dir(config: Config) -> Path:
    return config.path.parent / STATE


def host_key_path(config: Config, node: str) -> Path:
    """Where ``node``'s sshd host key is made (the provisioner copies it into the box)."""
    return state_dir(config) / "hostkeys" / node / "ssh_host_ed25519_key"


@contextmanager
def _locked(config: Config):
    state = state_dir(config)
    state.mkdir(parents=True, exist_ok=True)
    with open(state / "prepare.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _central_url(config: Config) -> tuple[str, int]:
    """The address and port the boxes reach this machine's HTTP server at."""
    if config.central is None or config.central.address is not None:
        raise UsageError(f"{config.path}: the dev boxes need a local [central] path")
    url = urlsplit(config.central.distfiles_url)
    if url.scheme != "http" or not url.hostname or not url.port:
        raise UsageError(f"{config.path}: [central] distfiles_url must be http://ADDRESS:PORT "
                         f"(the bridge address of this machine), not "
                         f"{config.central.distfiles_url!r}")
    return url.hostname, url.port


def prepare(config: Config, *, lxc_net: bool = False, serve: bool = False,
            progress=lambda _m: None) -> None:
    """Everything the boxes need from this machine (see the module docstring)."""
    if config.ssh.identity_file is None or config.ssh.known_hosts is None:
        raise UsageError(f"{config.path}: [ssh] identity_file and known_hosts must be set")
    address, port = _central_url(config)
    with _locked(config):
        generate_client_key(config.ssh.identity_file, comment="releaser-development")
        pinned = []
        for env in config.environments.values():
            for node in (n for n in env.nodes if n.address is not None):
                key = host_key_path(config, node.name)
                pinned.append((node.address, node.port, generate_client_key(
                    key, comment=f"root@{node.name}")))
        write_known_hosts(config.ssh.known_hosts, pinned)
        _release_keys(config, progress)
        central = CentralRepository(LocalRunner(host="central"), str(config.central.path),
                                    trust=config.trust)
        if central.init():
            progress(f"central repository {config.central.path} created")
        for env in config.environments.values():
            if overlay_git.ensure_overlay(central, env.name, env.overlay):
                progress(f"overlay {env.overlay} of {env.name} created")
        if lxc_net:
            _lxc_net_up(config, address, progress)
        if serve:
            _serve(config, address, port, progress)


def _release_keys(config: Config, progress) -> None:
    """``releaser keys init ENV`` for every signed environment without a release key."""
    if config.trust is None:
        return
    keyring = Keyring(config.trust.gnupghome)
    for env in config.environments:
        if not config.trust.signs(env):
            continue
        try:
            keyring.active(env)
        except KeyringError:
            fpr = keyring.init(env)
            progress(f"release key of {env} made in {keyring.home} ({fpr})")


def _has_address(address: str) -> bool:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True,
                         text=True).stdout
    return any(f"inet {address}/" in line for line in out.splitlines())


def _lxc_net_up(config: Config, address: str, progress) -> None:
    """LXC's bridge with ``address`` on it; started (and recorded) if it is not up."""
    if _has_address(address):
        return
    if Path(f"/sys/class/net/{LXC_BRIDGE}").exists():
        raise SandboxError(f"{LXC_BRIDGE} exists without {address}: [central] distfiles_url "
                           f"must name this machine's address on the boxes' bridge")
    # lxc-net start undoes itself on any failure (its own "stop force"), and a
    # firewall or dnsmasq step can fail once while another process holds the
    # firewall; one more try after that clean-up, then the reason it gave.
    for _ in range(2):
        done = subprocess.run([LXC_NET, "start"], capture_output=True, text=True)
        if done.returncode == 0 and _has_address(address):
            break
    else:
        said = " / ".join(line.strip() for line in (done.stderr + done.stdout).splitlines()
                          if line.strip())[-300:]
        raise SandboxError(f"{LXC_NET} start did not give {LXC_BRIDGE} {address}: "
                           f"{said or 'no output'}")
    (state_dir(config) / "lxc-net.started").write_text("started by releaser sandbox vagrant\n")
    progress(f"{LXC_BRIDGE} up at {address} ({LXC_NET} start)")


def _serve(config: Config, address: str, port: int, progress) -> None:
    pidfile = state_dir(config) / "distserver.pid"
    if distserver.server_alive(pidfile):
        return
    central = config.central.path
    server = distserver.start_server(central / "distfiles", address, port, pidfile=pidfile,
                                     logfile=state_dir(config) / "logs" / "distserver.log",
                                     git_root=central / "overlays")
    progress(f"central served on {server.url} (distfiles, git at {distserver.GIT_PREFIX})")


def down(config: Config, progress=lambda _m: None) -> None:
    """Stop the HTTP server, the keyring's agent, and LXC's bridge if ``prepare`` started it."""
    from releaser.sandbox.world import stop_keyring_agent

    with _locked(config):
        if distserver.stop_server(state_dir(config) / "distserver.pid"):
            progress("central HTTP server stopped")
        if config.trust is not None:
            stop_keyring_agent(config.trust.gnupghome, progress)
        marker = state_dir(config) / "lxc-net.started"
        if marker.exists():
            done = subprocess.run([LXC_NET, "stop"], capture_output=True, text=True)
            if done.returncode != 0:
                raise SandboxError(f"{LXC_NET} stop exited {done.returncode}: "
                                   f"{last_line(done.stderr, done.stdout)}")
            marker.unlink()
            progress(f"{LXC_BRIDGE} stopped ({LXC_NET} stop)")
