"""The sandbox fleet over SSH: real sshd per host, real Portage, no mocks.

One module-scoped sandbox built with ``init_sandbox(..., ssh=True)``: the
central repository behind an sshd on 127.0.0.2, four nodes (staging=2,
production=2) behind their own sshds on 127.0.0.11-14.  The tests run in
file order and build on each other: staging is promoted, then a node's host
key changes, then a production node's sshd is stopped, then everything is
taken down.  What a node really has installed is always read from its root
directly (its vdb), never from releaser's report.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import urllib.request
from pathlib import Path

import pytest

from releaser.sandbox import noderoot
from releaser.central import overlay_git
from releaser.hosts import portage_commands as portage_tools
from releaser.sandbox import ssh as sandbox_ssh
from releaser.central.repository import CentralRepository
from releaser.cli import main
from releaser.sandbox.distserver import pid_alive, read_pidfile
from releaser.errors import PublishError, ReleaserError
from releaser.deploy.promote import promote
from releaser.hosts.runner import LocalRunner
from releaser.sandbox.world import STATE, default_app, init_sandbox
from releaser.hosts.ssh import HostSpec, SSHRunner
from releaser.sandbox.sshd import SSHD, SandboxSSHD, free_port, write_known_hosts

from .conftest import commit_all, git
from .sandboxes import Sandbox, make_source, tree_digests

pytestmark = pytest.mark.skipif(
    not (os.path.exists(SSHD) and shutil.which("ssh-keygen") and shutil.which("ssh")
         and os.geteuid() == 0),
    reason="needs root and Debian's openssh-server/openssh-client",
)

NODES = ("staging-1", "staging-2", "production-1", "production-2")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    sb = Sandbox(tmp_path_factory.mktemp("sshfleet"), {"staging": 2, "production": 2}, ssh=True)
    yield sb
    sb.down()  # after test_down: must be harmless


def installed(sb: Sandbox, node: str) -> str | None:
    """The version in the node's vdb, read from its root on this machine (not over SSH)."""
    root = sb.node_root(node)
    return portage_tools.installed_version(LocalRunner(env=noderoot.portage_env(root)),
                                           str(root), "www-apps/notes")


def node_config(sb: Sandbox, name: str):
    return next(n for env in sb.config.environments.values() for n in env.nodes
                if n.name == name)


def health(sb: Sandbox, node: str) -> dict:
    with urllib.request.urlopen(node_config(sb, node).health_url, timeout=5) as r:
        return json.loads(r.read())


def runner(sb: Sandbox, name: str) -> SSHRunner:
    cfg = node_config(sb, name)
    return SSHRunner(HostSpec(address=cfg.address, port=cfg.port, name=name,
                              identity_file=sb.config.ssh.identity_file,
                              known_hosts=sb.config.ssh.known_hosts))


def accepted_logins(sb: Sandbox, name: str) -> int:
    return sb.sshd(name).log_path.read_text().count("Accepted publickey")


def by_node(report) -> dict:
    return {n.node: n for n in report.nodes}


def cli(sb: Sandbox, *args: str) -> int:
    return main(["-c", str(sb.config_path), *args])


# --------------------------------------------------------------------------


def test_config_names_every_host_by_address_with_pinned_keys(fleet):
    cfg = fleet.config
    assert cfg.central.address == sandbox_ssh.CENTRAL_ADDRESS
    assert cfg.central.path == fleet.central
    assert cfg.ssh.user == "root"
    assert cfg.ssh.identity_file == fleet.directory / "ssh" / "id_ed25519"
    pinned = cfg.ssh.known_hosts.read_text().splitlines()
    assert len(pinned) == 5  # central + 4 nodes, one key each
    for i, name in enumerate(NODES, start=1):
        node = node_config(fleet, name)
        assert not node.is_local
        assert node.address == f"127.0.0.{10 + i}"
        assert node.root == fleet.node_root(name)
        assert node.health_url.startswith(f"http://{node.address}:")
        daemon = fleet.sshd(name)
        assert daemon.running and daemon.port == node.port
        assert daemon.known_hosts_line() in pinned
    assert fleet.sshd("central").known_hosts_line() in pinned
    # releaser's own git reaches the central host over SSH with the same trust
    url = overlay_git.overlay_url(CentralRepository.from_config(cfg), "staging")
    assert url == (f"ssh://root@{cfg.central.address}:{cfg.central.port}"
                   f"{fleet.central}/overlays/staging.git")


def test_node_login_carries_its_portage_environment(fleet):
    root = fleet.node_root("staging-1")
    expected = noderoot.portage_env(root)
    with runner(fleet, "staging-1") as r:
        env = dict(line.split("=", 1) for line in r.run(["env"]).stdout.splitlines()
                   if "=" in line)
        found = r.run(["sh", "-c", "command -v emerge; command -v rc-service"]).stdout.split()
    for key in ("ROOT", "PORTAGE_CONFIGROOT", "PORTAGE_OVERRIDE_EPREFIX", "EPREFIX", "PATH"):
        assert env.get(key) == expected[key], key
    assert found == [str(Path(expected["PATH"].split(":")[0]) / "emerge"),
                     str(root / ".releaser" / "bin" / "rc-service")]


def test_git_over_ssh_refuses_a_central_host_not_pinned(fleet, tmp_path):
    """git's ssh reads only the named known_hosts: an empty one means refusal."""
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    cfg = fleet.config
    spec = HostSpec(address=cfg.central.address, port=cfg.central.port, name="central",
                    identity_file=cfg.ssh.identity_file, known_hosts=empty)
    central = CentralRepository(SSHRunner(spec), str(cfg.central.path))
    with pytest.raises(PublishError, match="Host key verification failed"):
        with overlay_git.checkout(central, "staging"):
            pass


def test_git_over_ssh_on_a_port_other_than_22(fleet, tmp_path):
    """Not on port 22, the host is pinned as ``[address]:port``, for git's ssh as for paramiko."""
    key = fleet.config.ssh.identity_file
    daemon = SandboxSSHD(tmp_path / "sshd", "127.0.0.3", port=free_port("127.0.0.3"),
                         authorized_key=key.with_name(key.name + ".pub").read_text())
    with daemon:
        known = write_known_hosts(tmp_path / "known_hosts",
                                  [(daemon.address, daemon.port, daemon.host_public_key)])
        assert known.read_text().startswith(f"[127.0.0.3]:{daemon.port} ")
        spec = HostSpec(address=daemon.address, port=daemon.port, name="central",
                        identity_file=key, known_hosts=known)
        central = CentralRepository(SSHRunner(spec), str(fleet.central))
        assert overlay_git.overlay_url(central, "staging").startswith(
            f"ssh://root@127.0.0.3:{daemon.port}/")
        with overlay_git.checkout(central, "staging") as repo:
            assert (Path(repo.working_tree_dir) / "profiles" / "repo_name").exists()


def test_failed_init_leaves_no_process_behind(tmp_path):
    """A node that cannot be set up: the central sshd and HTTP server are stopped again."""
    directory = tmp_path / "sandbox"
    profile = directory / "nodes" / "staging-1" / "etc" / "portage" / "make.profile"
    profile.parent.mkdir(parents=True)
    profile.write_text("not a symlink\n")  # create_node_root refuses to replace it
    app = default_app(make_source(tmp_path / "src"))
    with pytest.raises(ReleaserError, match="not a symlink"):
        init_sandbox(directory, app, {"staging": 1}, ssh=True)
    config = directory / "sshd" / "central" / "sshd_config"
    assert config.exists()  # the central sshd had been started...
    assert not [pid for pid in _pids() if f"-f {config}" in _cmdline(pid)]  # ...and stopped
    # and so was the agent of its keyring, started by making the release key
    assert not [pid for pid in _pids() if f"--homedir {directory / 'gnupg'} " in _cmdline(pid)]
    assert not (directory / "distserver.pid").exists()
    assert not (directory / STATE).exists()


def test_promote_staging_over_ssh(fleet):
    logins = {n: accepted_logins(fleet, n) for n in NODES}
    report = promote(fleet.config, "staging")
    assert report.ok, report.to_dict()
    for node in ("staging-1", "staging-2"):
        assert installed(fleet, node) == "1.0.0"
        assert health(fleet, node)["version"] == "1.0.0"
        assert accepted_logins(fleet, node) > logins[node]  # it went over SSH
    for node in ("production-1", "production-2"):
        assert installed(fleet, node) is None
        assert accepted_logins(fleet, node) == logins[node]
    # Portage on the node fetched the distfile over HTTP into its own DISTDIR
    assert (fleet.node_root("staging-1") / "var/cache/distfiles/notes-1.0.0.tar.gz").exists()


def test_status_over_ssh_reports_what_nodes_run(fleet, capsys):
    capsys.readouterr()
    assert cli(fleet, "status", "staging", "--json") == 0
    [env] = json.loads(capsys.readouterr().out)
    assert env["current"] == "1.0.0"
    nodes = {n["name"]: n for n in env["nodes"]}
    for node in ("staging-1", "staging-2"):
        assert nodes[node]["installed"] == "1.0.0"
        assert nodes[node]["healthy"] is True
        assert nodes[node]["drift"] == ""


def test_changed_host_key_is_refused_and_nothing_runs_there(fleet):
    # A new release, so that a node that took part would visibly change.
    (fleet.source / "app" / "CHANGES").write_text("1.0.1\n")
    commit_all(fleet.source, "notes 1.0.1", when="2026-01-02T00:00:00+00:00")
    git(fleet.source, "tag", "v1.0.1")

    # staging-2 is "reinstalled": a new host key behind the same address.
    daemon = fleet.sshd("staging-2")
    daemon.stop()
    daemon.host_key_path.unlink()
    daemon.host_key_path.with_name(daemon.host_key_path.name + ".pub").unlink()
    daemon.start()
    assert daemon.known_hosts_line() not in fleet.config.ssh.known_hosts.read_text()
    vdb = tree_digests(fleet.node_root("staging-2") / "var/db/pkg")
    log_before = daemon.log_path.read_text()

    report = promote(fleet.config, "staging")

    assert not report.ok
    nodes = by_node(report)
    assert nodes["staging-1"].status == "installed", nodes["staging-1"]
    assert installed(fleet, "staging-1") == "1.0.1"
    assert health(fleet, "staging-1")["version"] == "1.0.1"
    refused = nodes["staging-2"]
    assert refused.status == "refused" and refused.phase == "connect", refused
    assert "host key CHANGED" in refused.detail
    # nothing ran on it: its vdb is byte for byte what it was, no login was accepted
    assert tree_digests(fleet.node_root("staging-2") / "var/db/pkg") == vdb
    assert installed(fleet, "staging-2") == "1.0.0"
    new_log = daemon.log_path.read_text()[len(log_before):]
    assert "Accepted" not in new_log
    assert health(fleet, "staging-2")["version"] == "1.0.0"


def test_stopped_sshd_is_unreachable_and_others_report_real_state(fleet, capsys):
    fleet.sshd("production-2").stop()
    report = promote(fleet.config, "production")  # 1.0.0: the release healthy on staging

    assert report.release.version == "1.0.0"
    assert not report.ok
    nodes = by_node(report)
    assert nodes["production-1"].status == "installed"
    assert nodes["production-1"].after == "1.0.0"
    down = nodes["production-2"]
    assert down.status == "failed" and down.phase == "connect", down
    assert "connection refused" in down.detail
    assert installed(fleet, "production-1") == "1.0.0"
    assert installed(fleet, "production-2") is None

    capsys.readouterr()
    assert cli(fleet, "status", "production", "--json") == 6  # drift
    [env] = json.loads(capsys.readouterr().out)
    status = {n["name"]: n for n in env["nodes"]}
    assert status["production-1"]["installed"] == "1.0.0"
    assert status["production-1"]["healthy"] is True
    assert status["production-2"]["drift"] == "unreachable"
    assert "connection refused" in status["production-2"]["detail"]


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _listening(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def test_down_stops_every_process(fleet):
    state = fleet.state
    sshd_pids = {name: fleet.sshd(name).pid for name in state["ssh"]["sshd"]}
    assert sshd_pids["production-2"] is None  # stopped by the test above
    assert all(pid for name, pid in sshd_pids.items() if name != "production-2")
    server_pid, _port = read_pidfile(Path(state["distserver"]["pidfile"]))
    app_pids = {}
    for name in NODES:
        pidfile = fleet.node_root(name) / "run" / "notes.pid"
        if pidfile.exists():
            app_pids[name] = int(pidfile.read_text().split()[0])
    assert set(app_pids) == {"staging-1", "staging-2", "production-1"}
    pids = [p for p in sshd_pids.values() if p] + [server_pid, *app_pids.values()]
    assert all(pid_alive(p) for p in pids)

    fleet.down()

    assert [p for p in pids if pid_alive(p)] == []
    for name, entry in state["ssh"]["sshd"].items():
        assert not _listening(entry["address"], entry["port"]), name
    for name in NODES:
        node = state["nodes"][name]
        assert not _listening(node["address"], node["port"]), name
    fleet.down()  # again: nothing left to stop, no error
