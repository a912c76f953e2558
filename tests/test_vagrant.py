"""The developers' Vagrant boxes (Vagrantfile, vagrant/): built, booted, promoted into, destroyed.

Real parts all the way: the box is built from the LXC hosts' cached image,
``vagrant up`` boots it with vagrant-lxc on LXC's own bridge (lxc-net), the
Vagrantfile's triggers run ``releaser host bootstrap development``, a dirty
working tree is promoted into the boxes with ``releaser promote development``
and the app answers on the box under OpenRC.  Hermetic: Vagrant's home and
its machine folder are in the test's temporary folder, and so is the
development configuration (a copy of vagrant/releaser.toml whose app source is
a git repository of this project's app), with its ``.state``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from releaser.config import load_config
from releaser.sandbox import distserver, lxc
from releaser.sandbox.vagrant_dev import LXC_BRIDGE, state_dir
from releaser.sandbox.world import stop_keyring_agent
from releaser.trust.keys import Keyring

from .sandboxes import make_source

ROOT = Path(__file__).resolve().parent.parent
RELEASER = Path(sys.executable).parent / "releaser"
SETTINGS = json.loads((ROOT / "vagrant" / "settings.json").read_text())


def test_settings_and_configuration_name_the_same_boxes() -> None:
    """The Vagrantfile's boxes (settings.json) are development's nodes, at the same addresses,
    and development takes a developer's dirty build, which production never does."""
    config = load_config(ROOT / "vagrant" / "releaser.toml")
    env = config.environments[SETTINGS["environment"]]
    assert {n.name: n.address for n in env.nodes} == SETTINGS["boxes"]
    assert env.allow_dirty and env.allow == "any"
    assert env.database.backend == "sqlite"
    assert config.central.distfiles_url.startswith(f"http://{SETTINGS['lxc']['gateway']}:")
    # The Vagrantfile's provisioner uploads root's key from where [ssh] identity_file is.
    state = state_dir(config)
    assert config.ssh.identity_file == state / "ssh" / "id_ed25519"
    assert 'File.join(STATE, "ssh", "id_ed25519.pub")' in (ROOT / "Vagrantfile").read_text()
    # Signed like every environment, with a keyring of the checkout's own (made by prepare).
    assert config.trust.signs(env.name) and not config.exceptions
    assert config.trust.gnupghome == state / "gnupg"


def test_prepare_refuses_a_central_the_boxes_cannot_reach(tmp_path: Path) -> None:
    """The boxes fetch from http://ADDRESS:PORT: anything else is one line, exit 2, nothing made."""
    text = (ROOT / "vagrant" / "releaser.toml").read_text()
    config = tmp_path / "releaser.toml"
    config.write_text(text.replace('distfiles_url = "http://10.0.3.1:8711"',
                                   'distfiles_url = "http://10.0.3.1"'))
    done = subprocess.run([str(RELEASER), "-c", str(config), "sandbox", "vagrant", "prepare"],
                          capture_output=True, text=True)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("releaser: error:")]
    assert errors == [
        f"releaser: error: {config}: [central] distfiles_url must be http://ADDRESS:PORT (the "
        "bridge address of this machine), not 'http://10.0.3.1'"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["releaser.toml"]


def _made_by_vagrant(dotfile: Path) -> set[str]:
    """The LXC containers Vagrant made for the machines of ``dotfile`` (its ids)."""
    return {p.read_text().strip() for p in dotfile.glob("machines/*/lxc/id")}


def _dnsmasq_of_lxc_net() -> bool:
    pidfile = Path("/run/lxc/dnsmasq.pid")
    if not pidfile.is_file():
        return False
    pid = pidfile.read_text().strip()
    return pid.isdigit() and Path(f"/proc/{pid}").exists()


@pytest.fixture()
def dev(tmp_path: Path):
    """The environment a developer's shell has, with everything in ``tmp_path``."""
    source = make_source(tmp_path / "src")
    text = (ROOT / "vagrant" / "releaser.toml").read_text()
    assert 'source = ".."' in text
    config = tmp_path / "dev" / "releaser.toml"
    config.parent.mkdir()
    config.write_text(text.replace('source = ".."', f"source = {json.dumps(str(source))}"))
    env = dict(os.environ, VAGRANT_HOME=str(tmp_path / "vagrant.d"),
               VAGRANT_DOTFILE_PATH=str(tmp_path / "dotvagrant"),
               RELEASER_CONFIG=str(config), RELEASER=str(RELEASER),
               VAGRANT_CHECKPOINT_DISABLE="1")
    state = {"env": env, "config": config, "source": source, "made": set(),
             "bridge_before": Path(f"/sys/class/net/{LXC_BRIDGE}").exists()}
    yield state
    # Whatever the test body left (it destroys and asserts on its own first); only the
    # containers this test's Vagrant made: other jobs on the machine have their own.
    subprocess.run(["vagrant", "destroy", "-f"], cwd=ROOT, env=env, capture_output=True)
    for name in state["made"] | _made_by_vagrant(tmp_path / "dotvagrant"):
        lxc.destroy(name)
    distserver.stop_server(config.parent / ".state" / "distserver.pid")
    stop_keyring_agent(config.parent / ".state" / "gnupg", lambda _m: None)
    if (config.parent / ".state" / "lxc-net.started").exists():
        subprocess.run(["/usr/libexec/lxc/lxc-net", "stop"], capture_output=True)


def _run(argv: list[str], env: dict, timeout: float = 600) -> str:
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_vagrant_validate_passes_for_every_provider_named(dev) -> None:
    """lxc and libvirt: each provider's own block checked by its plugin (vagrant-libvirt
    validates without a libvirt daemon), not skipped with --ignore-provider."""
    text = (ROOT / "Vagrantfile").read_text()
    named = set(re.findall(r"vm\.provider :(\w+)", text))
    assert named == {"lxc", "libvirt"}
    for provider in sorted(named):
        out = _run(["vagrant", "validate"], dict(dev["env"], VAGRANT_DEFAULT_PROVIDER=provider))
        assert "Vagrantfile validated successfully." in out


@pytest.mark.slow
def test_dev_box_built_booted_promoted_and_destroyed(dev) -> None:
    env, config = dev["env"], dev["config"]
    for address in SETTINGS["boxes"].values():
        assert not lxc.ssh_answers(address), f"{address} is taken: another dev box runs there"

    _run([str(ROOT / "vagrant" / "build-box")], env, timeout=1800)
    again = _run([str(ROOT / "vagrant" / "build-box")], env)  # nothing it is built from changed
    assert "box: cached" in again and "already added" in again, again
    up = _run(["vagrant", "up"], env)
    for name in SETTINGS["boxes"]:
        assert f"Bringing machine '{name}' up with 'lxc' provider" in up
    dev["made"] = _made_by_vagrant(Path(env["VAGRANT_DOTFILE_PATH"]))
    assert len(dev["made"]) == len(SETTINGS["boxes"]) and all(map(lxc.running, dev["made"]))
    assert re.search(r"dev-1: 9 change\(s\)", up), up  # host bootstrap, by the trigger
    # ...which gave each box development's release key, the only key its Portage accepts
    assert up.count("created /etc/portage/releaser/keys/development.asc") == 2, up

    # A developer's uncommitted change: a dirty build, which development takes.
    readme = dev["source"] / "app" / "README.md"
    readme.write_text(readme.read_text() + "\nA change not committed yet.\n")
    promoted = _run([str(RELEASER), "-c", str(config), "promote", "development", "--ref", "HEAD"],
                    env)
    assert "(dirty)" in promoted
    assert promoted.count("installed") >= 2, promoted
    version = re.search(r"promote www-apps/notes-(\S+) -> development", promoted).group(1)

    health = _run(["vagrant", "ssh", "dev-1", "-c", "curl -fsS http://127.0.0.1:8080/health"], env)
    body = json.loads(health[health.index("{"):health.rindex("}") + 1])
    assert body["status"] == "ok" and body["version"] == version
    assert body["database"]["backend"] == "sqlite"
    # The overlay commit the boxes took is signed by development's release key, which
    # `vagrant up` made (prepare), and the boxes' Portage verifies it.
    keyring = Keyring(load_config(config).trust.gnupghome)
    bare = config.parent / ".state" / "central" / "overlays" / "development.git"
    signed = subprocess.run(["git", "-C", str(bare), "log", "-1", "--format=%G? %GF", "main"],
                            capture_output=True, text=True, check=True,
                            env={**os.environ, "GNUPGHOME": str(keyring.home)}).stdout.split()
    assert signed == ["G", keyring.active("development")]
    repo = _run(["vagrant", "ssh", "dev-1", "-c",
                 "cat /etc/portage/repos.conf/releaser-development.conf"], env)
    assert "sync-git-verify-commit-signature = yes" in repo, repo
    status = _run(["vagrant", "ssh", "dev-2", "-c", "rc-status --all"], env)
    assert re.search(r"^\s*notes\s+\[\s*started\s*\]", status, re.M), status

    _run([str(ROOT / "vagrant" / "seed"), "dev-1"], env)
    notes = _run(["vagrant", "ssh", "dev-1", "-c", "curl -fsS http://127.0.0.1:8080/notes"], env)
    seeded = (ROOT / "vagrant" / "seed-notes.jsonl").read_text().splitlines()
    listed = json.loads(notes[notes.index("["):notes.rindex("]") + 1])
    assert [n["title"] for n in listed] == [json.loads(line)["title"] for line in seeded]

    _run(["vagrant", "destroy", "-f"], env)
    assert not any(lxc.exists(name) for name in dev["made"])
    assert Path(f"/sys/class/net/{LXC_BRIDGE}").exists() == dev["bridge_before"]
    if not dev["bridge_before"]:
        assert not _dnsmasq_of_lxc_net()
    assert not distserver.server_alive(config.parent / ".state" / "distserver.pid")
    leftovers = subprocess.run(["pgrep", "-f", str(config.parent)], capture_output=True,
                               text=True).stdout.split()
    assert leftovers == []
