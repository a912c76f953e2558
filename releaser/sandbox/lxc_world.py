"""``releaser sandbox init DIR --hosts lxc``: a fleet of hosts that live like real ones.

Every node is an LXC container made from the cached image
(``releaser.sandbox.lxc_image``): Debian with OpenRC as PID 1, sshd on port
22, Portage at its real paths, its own static address on the bridge the
sandbox makes (``releaser.sandbox.lxc``).  This machine plays the central
repository's host: the repository stays in ``DIR/central`` (releaser writes it
locally), and the HTTP server on the bridge address serves both what the
nodes fetch over the network, the distfiles and the overlays (git's smart HTTP,
``git http-backend``).  releaser.toml names the nodes by address with their
pinned host keys and says ``[central] sync_uri = "http://BRIDGE:PORT/git/{env}.git"``:
nothing in it is particular to the sandbox.

The sandbox gives each container only what a cloud provider gives a new
machine (its OS image, hostname, sshd host key, root's authorized key);
everything releaser needs on it is then done by ``releaser host bootstrap``
over SSH, the same code that prepares a real host.

Signed like the directory sandbox: with ``trust`` (the default of ``sandbox
init``; ``--unsigned`` documents an exception instead) every overlay commit is
signed with its environment's release key from the keyring in ``DIR/gnupg``,
the bootstrap gives each host that key alone, and Portage on the host (gemato
and gpg are in the image) refuses any commit that key did not sign.

Under DIR, besides releaser.toml and central/: ``sandbox.json`` records the
bridge, the containers and the HTTP server, so ``sandbox down`` removes
exactly those and nothing else; ``ssh/`` holds the client key and the
known_hosts file pinning every container's host key.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from releaser.central import overlay_git
from releaser.central.repository import CentralRepository
from releaser.config import AppConfig
from releaser.errors import SandboxError
from releaser.hosts.runner import LocalRunner
from releaser.sandbox import distserver, lxc, lxc_image
from releaser.sandbox import ssh as sandbox_ssh
from releaser.sandbox.sshd import write_known_hosts

#: Where the app answers on a host (its own /etc/notes/notes.toml default), asked on the host.
APP_PORT = 8080
#: Containers made, booted or destroyed at once.
PARALLEL = 4
HOSTS_KEY = "lxc"


def build(directory: Path, app: AppConfig, nodes: dict[str, int], overlays: dict[str, str],
          progress, trust=None) -> Path:
    """Make the LXC world under ``directory`` (see the module docstring); its releaser.toml.

    ``trust``: the ``TrustConfig`` of the sandbox's keyring (``world.sandbox_trust``),
    None for unsigned overlays under a documented exception.

    ``sandbox.json`` is written first and kept current, so a failure part way
    is undone by ``down`` (the caller runs it) from what was really made.
    """
    from releaser.sandbox.world import (SandboxNode, bootstrap_all, ordered_environments,
                                        render_config)

    ordered = ordered_environments
    image = lxc_image.ensure_image(progress)
    state: dict = {"hosts": HOSTS_KEY, "nodes": {},
                   "distserver": {"pidfile": str(directory / "distserver.pid")},
                   HOSTS_KEY: {"bridge": None, "containers": []}}
    save = lambda: _save(directory, state)  # noqa: E731
    save()
    bridge = lxc.create_bridge(directory)
    state[HOSTS_KEY]["bridge"] = bridge.to_state()
    save()
    progress(f"bridge {bridge.name}: {bridge.gateway}/24")

    central = CentralRepository(LocalRunner(host="central"), str(directory / "central"),
                                trust=trust)
    central.init()
    for env in ordered(nodes):
        overlay_git.ensure_overlay(central, env, overlays[env])
    server = distserver.start_server(directory / "central" / "distfiles", bridge.gateway, 0,
                                     pidfile=directory / "distserver.pid",
                                     logfile=directory / "logs" / "distserver.log",
                                     git_root=directory / "central" / "overlays")
    state["distserver"]["url"] = server.url
    save()
    progress(f"central: {central.root}, served on {server.url} (distfiles, git at "
             f"{distserver.GIT_PREFIX})")

    key = sandbox_ssh.client_key(directory)
    boxes = []
    for env in ordered(nodes):
        for i in range(1, nodes[env] + 1):
            name = f"{env}-{i}"
            boxes.append((env, lxc.Container(lxc.container_name(directory, name), name,
                                             bridge.host_address(len(boxes) + 1))))
    state[HOSTS_KEY]["containers"] = [box.to_state() for _env, box in boxes]
    save()  # before any is made: down removes whichever exist

    def make(box: lxc.Container) -> str:
        host_key = lxc.create_container(image, box, bridge, key)
        lxc.start(box)
        progress(f"host {box.hostname}: container {box.name} at {box.address}, sshd on port 22")
        return host_key

    # Unpacking and booting are mostly waiting on the disk and on init: a few at once.
    with ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="lxc") as pool:
        host_keys = list(pool.map(make, [box for _env, box in boxes]))
    made = [SandboxNode(box.hostname, env, None, APP_PORT, box.address, ssh_port=22)
            for env, box in boxes]
    state["nodes"] = {box.hostname: {"env": env, "address": box.address, "container": box.name}
                      for env, box in boxes}
    save()
    pinned = [(box.address, 22, host_key) for (_env, box), host_key in zip(boxes, host_keys)]
    write_known_hosts(directory / sandbox_ssh.KNOWN_HOSTS, pinned)

    config_path = directory / "releaser.toml"
    config_path.write_text(render_config(
        app, server.url, made, overlays=overlays,
        sync_uri=f"{server.url}{distserver.GIT_PREFIX}{{env}}.git", trust=trust))
    bootstrap_all(config_path, progress)
    return config_path


def _save(directory: Path, state: dict) -> None:
    from releaser.files import write_atomic

    write_atomic(directory / "sandbox.json", json.dumps(state, indent=2) + "\n")


def down(state: dict, progress) -> None:
    """Destroy the containers and the bridge ``state`` records (the HTTP server is the caller's)."""
    mine = state.get(HOSTS_KEY) or {}
    errors = []

    def destroy(box: dict) -> None:
        try:
            if lxc.destroy(box["name"]):
                progress(f"host {box['hostname']}: container {box['name']} destroyed")
        except SandboxError as exc:
            errors.append(str(exc))

    with ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="lxc") as pool:
        list(pool.map(destroy, mine.get("containers", [])))
    bridge = mine.get("bridge")
    if bridge:
        try:
            if lxc.delete_bridge(bridge["name"]):
                progress(f"bridge {bridge['name']} removed")
        except SandboxError as exc:
            errors.append(str(exc))
    if errors:
        raise SandboxError("; ".join(errors))
