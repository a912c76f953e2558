"""The whole pipeline on hosts that live like real ones: LXC containers with OpenRC.

One module-scoped sandbox of three LXC hosts (``sandbox init --hosts lxc``:
staging-1, production-1, production-2), each a Debian container with OpenRC
as PID 1, sshd on port 22, Portage at its real paths and its own address on
the sandbox's bridge; nodes sync the overlays from the central repository
over the network (git smart HTTP) and fetch distfiles over HTTP.  The tests
run in file order and build on each other: bootstrap (again, dry, refused),
promote 1.0.0 (signed: a host refuses an unsigned or foreign-signed overlay
commit, verified by its own Portage, gemato and gpg), a reboot that OpenRC brings the app back from, upgrade staging to 1.1.0 with backups, production to 1.1.0
while a host's sshd is stopped, a bad 1.2.0 rolled back by itself on
staging, an on-call rollback with the database, and ``sandbox down``.

What a host really has is read on the host with ``lxc-attach`` (its console,
not releaser's SSH): ``rc-status``, ``ps``, the vdb, repos.conf, the clone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from releaser.central.repository import CentralRepository
from releaser.cli import main
from releaser.config import load_config
from releaser.deploy.promote import promote
from releaser.central.ledger import Ledger
from releaser.hosts.bootstrap import REFUSED, UNCHANGED, bootstrap
from releaser.hosts.node import connect
from releaser.hosts.services import runlevel_services
from releaser.processes import pid_alive
from releaser.sandbox import lxc
from releaser.errors import OverlayTrustError, UsageError
from releaser.hosts.runner import LocalRunner
from releaser.sandbox.distserver import read_pidfile, start_server, stop_server
from releaser.sandbox.world import SandboxNode, default_app, init_sandbox, render_config
from releaser.trust.keys import NODE_KEYS_DIR, Keyring

from .conftest import commit_all, git
from .sandboxes import Sandbox, add_migration

#: The fleet's tests (a few minutes with the image cached); the few at the end are quick.
slow = pytest.mark.slow

HOSTS = ("staging-1", "production-1", "production-2")
APP = "www-apps/notes"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    sb = Sandbox(tmp_path_factory.mktemp("lxcfleet"), {"staging": 1, "production": 2},
                 hosts="lxc")
    try:
        yield sb
    finally:
        sb.down()  # after test_down: must be harmless


def box(sb: Sandbox, host: str) -> str:
    return sb.state["nodes"][host]["container"]


def on(sb: Sandbox, host: str, *argv: str, check: bool = True) -> str:
    """Run ``argv`` on the host's console (``lxc-attach``); its stdout."""
    return lxc.attach(box(sb, host), list(argv), check=check).stdout


def sh(sb: Sandbox, host: str, script: str) -> str:
    return on(sb, host, "sh", "-c", script)


def installed(sb: Sandbox, host: str) -> list[str]:
    """The notes versions in the host's vdb (/var/db/pkg)."""
    out = sh(sb, host, "ls -d /var/db/pkg/www-apps/notes-* 2>/dev/null || true")
    return sorted(line.rsplit("notes-", 1)[1] for line in out.split())


def served(sb: Sandbox, host: str) -> dict:
    return json.loads(on(sb, host, "curl", "-fsS", "--max-time", "5",
                         "http://127.0.0.1:8080/health"))


def runs_under_openrc_as_notes(sb: Sandbox, host: str) -> None:
    status = on(sb, host, "rc-status")  # the runlevel, and what was started by hand (manual)
    assert any(line.split()[0] == "notes" and "started" in line
               for line in status.splitlines() if line.strip()), status
    pid = sh(sb, host, "cat /run/notes.pid").strip()
    assert on(sb, host, "ps", "-o", "user=", "-p", pid).strip() == "notes"
    assert on(sb, host, "cat", "/proc/1/comm").strip() == "openrc-init"


def host_state(sb: Sandbox, host: str) -> str:
    """What a bootstrap could change on a host: its Portage config, accounts, app folders."""
    return sh(sb, host, "find /etc/portage /var/lib/notes /var/db/repos -printf "
                        "'%p %y %m %u %g %s\\n' | sort; sha256sum /etc/passwd /etc/group "
                        "/etc/portage/make.conf/* /etc/portage/repos.conf/*")


def cli(sb: Sandbox, *args: str) -> int:
    return main(["-c", str(sb.config_path), *args])


def ledger(sb: Sandbox, env: str) -> dict:
    return json.loads((sb.central / "ledger" / f"{env}.json").read_text())


# --------------------------------------------------------------------------- the hosts


@slow
def test_hosts_are_containers_reached_by_address_over_the_network(fleet):
    cfg = fleet.config
    bridge = fleet.state["lxc"]["bridge"]
    gateway = bridge["network"].rsplit(".", 1)[0] + ".1"
    assert cfg.central.sync_uri == f"{cfg.central.distfiles_url}/git/{{env}}.git"
    assert cfg.central.distfiles_url.startswith(f"http://{gateway}:")
    pinned = cfg.ssh.known_hosts.read_text().splitlines()
    assert len(pinned) == len(HOSTS)
    for env in cfg.environments.values():
        for node in env.nodes:
            assert node.root is None and node.port == 22 and node.address.startswith(
                bridge["network"].rsplit(".", 1)[0] + ".")
            assert lxc.running(box(fleet, node.name))
            assert any(line.startswith(f"{node.address} ssh-ed25519 ") for line in pinned)
            assert node.health_url == "http://127.0.0.1:8080/health"


@slow
def test_every_bare_host_was_prepared_by_host_bootstrap_over_ssh(fleet):
    for host in HOSTS:
        assert any(line.startswith(f"node {host}: changed by host bootstrap")
                   for line in fleet.init_lines), fleet.init_lines
        env = host.rsplit("-", 1)[0]
        uri = fleet.config.central.overlay_sync_uri(env, f"releaser-{env}")
        repo = on(fleet, host, "cat", f"/etc/portage/repos.conf/releaser-{env}.conf")
        assert f"sync-uri = {uri}" in repo and "location = /var/db/repos/" in repo
        origin = on(fleet, host, "git", "-C", f"/var/db/repos/releaser-{env}", "remote",
                    "get-url", "origin")
        assert origin.strip() == uri
        assert sh(fleet, host, "getent passwd notes | cut -d: -f6,7").strip() == \
            "/var/lib/notes:/sbin/nologin"
        # Portage at its real paths: no prefix, the system's /etc/portage and vdb
        assert on(fleet, host, "portageq", "envvar", "EPREFIX").strip() == ""
        assert on(fleet, host, "portageq", "get_repo_path", "/", f"releaser-{env}").strip() == \
            f"/var/db/repos/releaser-{env}"


@slow
def test_a_second_bootstrap_and_a_dry_run_change_nothing(fleet, capsys):
    before = {h: host_state(fleet, h) for h in HOSTS}
    capsys.readouterr()
    for env in ("staging", "production"):
        assert cli(fleet, "host", "bootstrap", env) == 0
        assert cli(fleet, "host", "bootstrap", env, "--dry-run") == 0
    out = capsys.readouterr().out
    assert out.count("already prepared, nothing changed") == 2 * len(HOSTS), out
    assert "dry run: nothing was changed" in out
    assert {h: host_state(fleet, h) for h in HOSTS} == before


@slow
def test_a_host_missing_git_is_refused_and_left_as_it_was(fleet):
    host = "production-2"
    sh(fleet, host, "rm /etc/portage/make.conf/90-releaser.conf && "
                    "mv /usr/bin/git /usr/bin/git.away")
    try:
        before = host_state(fleet, host)
        config = load_config(fleet.config_path)
        [report] = bootstrap(config, "production", [host]).hosts
        assert report.status == REFUSED
        assert report.reason.startswith("git is not installed"), report.reason
        assert host_state(fleet, host) == before
    finally:
        sh(fleet, host, "mv /usr/bin/git.away /usr/bin/git")
    [report] = bootstrap(config, "production", [host]).hosts
    assert report.ok and [c["what"] for c in report.changes] == \
        ["/etc/portage/make.conf/90-releaser.conf"], report.changes
    [again] = bootstrap(config, "production", [host]).hosts
    assert again.status == UNCHANGED


# --------------------------------------------------------------------------- the pipeline


@slow
def test_promote_staging_then_production_runs_the_app_under_openrc(fleet):
    assert cli(fleet, "promote", "staging") == 0
    assert cli(fleet, "promote", "production") == 0
    for host in HOSTS:
        assert installed(fleet, host) == ["1.0.0"]
        runs_under_openrc_as_notes(fleet, host)
        assert served(fleet, host)["version"] == "1.0.0"
        env = host.rsplit("-", 1)[0]
        # The clone is what the central repository serves: pulled over the network.
        head = git(fleet.central / "overlays" / f"{env}.git", "rev-parse", "HEAD")
        assert on(fleet, host, "git", "-C", f"/var/db/repos/releaser-{env}", "rev-parse",
                  "HEAD").strip() == head
    log = (fleet.directory / "logs" / "distserver.log").read_text()
    for host in HOSTS:
        address = fleet.state["nodes"][host]["address"]
        assert f"{address} \"POST /git/" in log  # git fetches (upload-pack)
        assert f"{address} \"GET /notes-1.0.0.tar.gz" in log  # Portage's fetch


def overlay_head(sb: Sandbox, host: str, env: str) -> str:
    return on(sb, host, "git", "-C", f"/var/db/repos/releaser-{env}", "rev-parse",
              "HEAD").strip()


def push_attack(sb: Sandbox, env: str, work: Path, gnupghome: Path | None) -> str:
    """A commit pushed straight into the central bare overlay, as anyone with write access
    to the central repository could: unsigned, or signed with ``gnupghome``'s key for
    ``env`` (not the release key); returns its id."""
    bare = sb.central / "overlays" / f"{env}.git"
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True)
    (work / "profiles" / "attacker").write_text("echo owned\n")
    git(work, "add", "-A")
    sign, env_vars = [], {**os.environ, "GIT_AUTHOR_NAME": "x", "GIT_AUTHOR_EMAIL": "x@x",
                          "GIT_COMMITTER_NAME": "x", "GIT_COMMITTER_EMAIL": "x@x"}
    if gnupghome is not None:
        sign = [f"-S{Keyring(gnupghome).active(env)}"]
        env_vars["GNUPGHOME"] = str(gnupghome)
    subprocess.run(["git", "-C", str(work), "commit", "-q", *sign, "-m", "attack"], check=True,
                   env=env_vars)
    git(work, "push", "-q", "origin", "HEAD:main")
    return git(work, "rev-parse", "HEAD")


@slow
def test_overlays_are_signed_and_a_host_refuses_a_commit_the_release_key_did_not_sign(
        fleet, tmp_path):
    """Signed by default, as the directory sandbox: every promote's commit carries the
    environment's release key, and the host's own Portage (gemato and gpg from its image)
    refuses an unsigned commit or one signed by another key, keeping its overlay and app."""
    env, host = "staging", "staging-1"
    keyring = Keyring(fleet.config.trust.gnupghome)
    bare = fleet.central / "overlays" / f"{env}.git"
    good = git(bare, "rev-parse", "main")
    signed = subprocess.run(["git", "-C", str(bare), "log", "-1", "--format=%G? %GF", "main"],
                            capture_output=True, text=True, check=True,
                            env={**os.environ, "GNUPGHOME": str(keyring.home)}).stdout.split()
    assert signed == ["G", keyring.active(env)]
    repo = on(fleet, host, "cat", f"/etc/portage/repos.conf/releaser-{env}.conf")
    assert "sync-git-verify-commit-signature = yes" in repo
    assert f"sync-openpgp-key-path = {NODE_KEYS_DIR}/{env}.asc" in repo
    assert not any(e.setting == "unsigned-overlay" for e in fleet.config.exceptions)

    other = tmp_path / "other-gnupg"
    Keyring(other).init(env)  # a key named like the release key, but not it
    config = load_config(fleet.config_path)
    node = connect(config, config.environment(env).nodes[0])
    try:
        for n, (gnupghome, kind) in enumerate([(None, "unsigned"), (other, "untrusted")]):
            planted = push_attack(fleet, env, tmp_path / f"attack-{n}", gnupghome)
            try:
                with pytest.raises(OverlayTrustError) as refused:
                    node.sync(f"releaser-{env}")
            finally:
                git(bare, "update-ref", "refs/heads/main", good)
            assert refused.value.kind == kind, refused.value
            assert overlay_head(fleet, host, env) == good != planted
            assert installed(fleet, host) == ["1.0.0"]
            assert served(fleet, host)["version"] == "1.0.0"
        node.sync(f"releaser-{env}")  # the release key's head again: taken
    finally:
        node.close()
        subprocess.run(["gpgconf", "--homedir", str(other), "--kill", "gpg-agent"],
                       capture_output=True)
    assert overlay_head(fleet, host, env) == good


def pid1_started(sb: Sandbox, host: str) -> str:
    """When the host's PID 1 started (``/proc/1/stat`` field 22): a new value, a new boot."""
    return on(sb, host, "cut", "-d", " ", "-f", "22", "/proc/1/stat", check=False).strip()


def reboot(sb: Sandbox, host: str, timeout: float = 60) -> None:
    """Reboot the host as its admin would (``openrc-shutdown -r now``: OpenRC stops every
    service, LXC boots the container again) and wait until OpenRC has run the default
    runlevel: a new PID 1, sshd answering, the softlevel ``default`` and no ``openrc``
    process left (openrc-init runs ``openrc default`` last, and waits for it)."""
    before = pid1_started(sb, host)
    on(sb, host, "openrc-shutdown", "-r", "now")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = pid1_started(sb, host)
        if now and now != before and lxc.ssh_answers(sb.state["nodes"][host]["address"]) \
                and on(sb, host, "cat", "/run/openrc/softlevel", check=False).strip() == \
                "default" and lxc.attach(box(sb, host), ["pgrep", "-x", "openrc"],
                                         check=False).returncode == 1:
            return
        time.sleep(0.3)
    raise AssertionError(f"{host} did not come back from its reboot within {timeout:g} s")


def default_runlevel(sb: Sandbox, host: str) -> list[str]:
    """The services ``rc-status`` lists under ``Runlevel: default`` with their state."""
    lines, section = [], None
    for line in on(sb, host, "rc-status").splitlines():
        if line.startswith("Runlevel:") or line.startswith("Dynamic Runlevel:"):
            section = line
        elif section == "Runlevel: default" and line.strip():
            lines.append(" ".join(line.replace("[", " ").replace("]", " ").split()))
    return lines


@slow
def test_the_app_starts_at_boot_after_its_first_install(fleet, capsys):
    central = CentralRepository(LocalRunner(host="central"), str(fleet.central))
    for host in HOSTS:
        # rc-update's own word: the rollout put notes in the runlevel the host boots into.
        assert "notes" in runlevel_services(on(fleet, host, "rc-update", "show", "default"),
                                            "default")
        env = host.rsplit("-", 1)[0]
        enabled = [e for e in Ledger.load(central, env).events("service_enabled")
                   if e["node"] == host]
        assert [(e["service"], e["runlevel"]) for e in enabled] == [("notes", "default")]

    host = "staging-1"
    before = sh(fleet, host, "cat /run/notes.pid").strip()
    reboot(fleet, host)
    # Started by OpenRC at boot, as its own user; nothing releaser did after the reboot.
    assert "notes started" in default_runlevel(fleet, host), on(fleet, host, "rc-status")
    runs_under_openrc_as_notes(fleet, host)
    assert sh(fleet, host, "cat /run/notes.pid").strip() != before
    config = load_config(fleet.config_path)
    node = connect(config, config.environment("staging").nodes[0])
    try:
        assert node.health("1.0.0", timeout=30).ok  # asked on the host, through its runner
    finally:
        node.close()
    capsys.readouterr()
    assert cli(fleet, "status", "staging", "--json") == 0
    [status] = json.loads(capsys.readouterr().out)
    [entry] = status["nodes"]
    assert entry["installed"] == "1.0.0" and entry["healthy"] is True


@slow
def test_a_crashed_app_reads_crashed_and_restarts(fleet):
    """app/openrc/notes.initd's status and stop go by the pidfile: Debian's start-stop-daemon
    keeps no daemon record, so OpenRC alone would call a dead notes "started" and fail
    to stop (and so to restart) it."""
    host = "staging-1"
    sh(fleet, host, "kill -9 $(cat /run/notes.pid)")
    status = lxc.attach(box(fleet, host), ["rc-service", "notes", "status"], check=False)
    assert status.returncode == 32 and "crashed" in status.stdout + status.stderr, status
    config = load_config(fleet.config_path)
    node = connect(config, config.environment("staging").nodes[0])
    try:
        assert node.service_process("notes") is None
        node.restart("notes")  # what a rollout does: the crashed one is replaced
        assert node.health("1.0.0", timeout=30).ok
    finally:
        node.close()
    runs_under_openrc_as_notes(fleet, host)


@slow
def test_a_sync_on_the_host_pulls_from_the_central_repository_over_http(fleet):
    log = fleet.directory / "logs" / "distserver.log"
    address = fleet.state["nodes"]["staging-1"]["address"]
    fetch = f'{address} "POST /git/staging.git/git-upload-pack'
    fetches = log.read_text().count(fetch)
    on(fleet, "staging-1", "emaint", "sync", "-r", "releaser-staging")
    assert log.read_text().count(fetch) > fetches


@slow
def test_upgrade_takes_backups_on_the_host(fleet):
    add_migration(fleet.source, "v1.1.0")
    assert cli(fleet, "promote", "staging") == 0
    assert installed(fleet, "staging-1") == ["1.1.0"]
    runs_under_openrc_as_notes(fleet, "staging-1")
    health = served(fleet, "staging-1")
    assert health["version"] == "1.1.0" and health["database"]["schema_version"] == 2
    backups = ledger(fleet, "staging")["nodes"]["staging-1"]["last_attempt"]["backups"]
    # Kept on the central repository: the host's quickpkg of 1.0.0 and its database dump.
    assert backups["binpkg"].endswith("/staging/www-apps/notes-1.0.0.gpkg.tar")
    assert Path(backups["binpkg"]).is_file() and Path(backups["dump"]).is_file()
    # On the host, Portage's stock layout (binpkg-multi-instance): PKGDIR/CAT/PN/PF-N.gpkg.tar
    pkgs = sh(fleet, "staging-1", "ls /var/cache/binpkgs/www-apps/notes").split()
    assert any(re.fullmatch(r"notes-1\.0\.0-\d+\.gpkg\.tar", p) for p in pkgs), pkgs
    # and the dump the ebuild's own pkg_preinst took before replacing 1.0.0
    dumps = sh(fleet, "staging-1", "ls -l /var/lib/notes/backups")
    assert "preinst-notes-1.1.0-" in dumps, dumps


@slow
def test_a_host_whose_sshd_stops_mid_rollout_is_unreachable_and_max_fail_decides(fleet,
                                                                                  capsys):
    stopped = threading.Event()

    def progress(message: str) -> None:
        # production-1 is the canary; production-2's sshd goes once the rollout is under way.
        if message.startswith("production-1: sync") and not stopped.is_set():
            on(fleet, "production-2", "rc-service", "ssh", "stop")
            stopped.set()

    config = load_config(fleet.config_path)
    report = promote(config, "production", progress=progress, max_fail="1")
    assert stopped.is_set()
    nodes = {n.node: n for n in report.nodes}
    assert nodes["production-1"].status == "installed" and nodes["production-1"].after == "1.1.0"
    down = nodes["production-2"]
    assert down.status == "failed" and down.phase == "connect", down
    assert not report.halted  # one failure: within --max-fail 1
    capsys.readouterr()
    assert cli(fleet, "status", "production", "--json") == 6
    [env] = json.loads(capsys.readouterr().out)
    status = {n["name"]: n for n in env["nodes"]}
    assert status["production-2"]["drift"] == "unreachable"
    assert status["production-1"]["healthy"] is True

    # Allowing no failure, the same unreachable host halts the rollout.
    halted = promote(config, "production", max_fail="0")
    assert {n.node: n.status for n in halted.nodes}["production-2"] == "failed"
    assert halted.halted and not halted.withdrawn
    on(fleet, "production-2", "rc-service", "ssh", "start")
    assert cli(fleet, "promote", "production") == 0
    assert installed(fleet, "production-2") == ["1.1.0"]
    runs_under_openrc_as_notes(fleet, "production-2")


@slow
def test_a_release_failing_its_health_is_rolled_back_by_itself(fleet):
    health = fleet.source / "app" / "notes" / "health.py"
    text = health.read_text()
    old = "return body, 200 if healthy else 503"
    assert old in text
    health.write_text(text.replace(old, 'return {**body, "status": "error"}, 500'))
    commit_all(fleet.source, "bad 1.2.0", when="2026-03-01T00:00:00+00:00")
    git(fleet.source, "tag", "v1.2.0")

    assert cli(fleet, "promote", "staging", "--ref", "v1.2.0") != 0
    assert installed(fleet, "staging-1") == ["1.1.0"]
    assert served(fleet, "staging-1")["version"] == "1.1.0"
    runs_under_openrc_as_notes(fleet, "staging-1")
    data = ledger(fleet, "staging")
    assert data["current"] == "1.1.0" and data["releases"]["1.2.0"]["masked"]
    assert data["nodes"]["staging-1"]["last_attempt"]["outcome"] == "rolled-back"
    # The mask commit reached the host over the network (it syncs after the rollback).
    head = git(fleet.central / "overlays" / "staging.git", "rev-parse", "HEAD")
    assert on(fleet, "staging-1", "git", "-C", "/var/db/repos/releaser-staging", "rev-parse",
              "HEAD").strip() == head


@slow
def test_on_call_rollback_with_the_database(fleet, capsys):
    assert cli(fleet, "rollback", "staging", "--restore-db", "--yes") == 0
    assert installed(fleet, "staging-1") == ["1.0.0"]
    runs_under_openrc_as_notes(fleet, "staging-1")
    health = served(fleet, "staging-1")
    assert health["version"] == "1.0.0" and health["database"]["schema_version"] == 1
    capsys.readouterr()
    assert cli(fleet, "status", "staging", "--json") == 0
    [env] = json.loads(capsys.readouterr().out)
    [node] = env["nodes"]
    assert node["installed"] == "1.0.0" and node["healthy"] is True


@slow
def test_down_leaves_no_container_bridge_or_process(fleet):
    state = fleet.state
    names = [b["name"] for b in state["lxc"]["containers"]]
    server_pid, _port = read_pidfile(Path(state["distserver"]["pidfile"]))
    fleet.down()
    assert not [n for n in names if lxc.exists(n)]
    assert not Path(f"/sys/class/net/{state['lxc']['bridge']['name']}").exists()
    assert not pid_alive(server_pid)
    fleet.down()  # again: nothing left to do, no error


# --------------------------------------------------------------------------- quick ones


@pytest.mark.parametrize("kwargs,message", [
    ({"hosts": "vagrant"}, "--hosts: 'vagrant' is not one of dir, lxc"),
    ({"hosts": "lxc", "ssh": True}, "--hosts lxc: its hosts are always reached over SSH"),
])
def test_bad_hosts_arguments_are_refused_before_anything_is_made(tmp_path, kwargs, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        init_sandbox(tmp_path / "sb", default_app(tmp_path), {"staging": 1}, **kwargs)
    assert not (tmp_path / "sb").exists()


def test_names_are_the_sandbox_folders_own(tmp_path):
    a, b = lxc.prefix(tmp_path / "a"), lxc.prefix(tmp_path / "b")
    assert a != b and a == lxc.prefix(tmp_path / "a")
    name = lxc.container_name(tmp_path / "a", "production-12")
    assert name.startswith(a + "-") and len(a + "br") <= 15  # IFNAMSIZ - 1


def test_lxc_nodes_are_written_as_hosts_reached_by_address(tmp_path):
    nodes = [SandboxNode("staging-1", "staging", None, 8080, "10.1.2.10", ssh_port=22)]
    text = render_config(default_app(tmp_path), "http://10.1.2.1:4000", nodes,
                         overlays={"staging": "releaser-staging"},
                         sync_uri="http://10.1.2.1:4000/git/{env}.git")
    (tmp_path / "releaser.toml").write_text(text)
    cfg = load_config(tmp_path / "releaser.toml")
    [node] = cfg.environment("staging").nodes
    assert (node.address, node.port, node.root) == ("10.1.2.10", 22, None)
    assert node.health_url == "http://127.0.0.1:8080/health"  # asked on the host
    assert cfg.ssh.known_hosts == tmp_path / "ssh" / "known_hosts"
    assert cfg.central.overlay_sync_uri("staging", "releaser-staging") == \
        "http://10.1.2.1:4000/git/staging.git"


def test_the_http_server_serves_overlays_to_git_read_only(tmp_path):
    central = CentralRepository(LocalRunner(host="central"), str(tmp_path / "central"))
    central.init()
    from releaser.central import overlay_git

    overlay_git.ensure_overlay(central, "staging", "releaser-staging")
    server = start_server(tmp_path / "central" / "distfiles", "127.0.0.1", 0,
                          pidfile=tmp_path / "pid", logfile=tmp_path / "log",
                          git_root=tmp_path / "central" / "overlays")
    try:
        url = f"{server.url}/git/staging.git"
        git(tmp_path, "clone", "-q", url, "clone")
        assert (tmp_path / "clone" / "profiles" / "repo_name").read_text().strip() == \
            "releaser-staging"
        assert git(tmp_path / "clone", "rev-parse", "HEAD") == \
            git(tmp_path / "central" / "overlays" / "staging.git", "rev-parse", "HEAD")
        (tmp_path / "clone" / "x").write_text("x")
        commit_all(tmp_path / "clone", "not from releaser")
        import subprocess

        push = subprocess.run(["git", "-C", str(tmp_path / "clone"), "push", "origin", "HEAD"],
                              capture_output=True, text=True)
        assert push.returncode != 0  # http-backend takes no push from anyone
        assert git(tmp_path / "clone", "rev-parse", "HEAD") != \
            git(tmp_path / "central" / "overlays" / "staging.git", "rev-parse", "HEAD")
        hidden = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                 f"{server.url}/git/.staging.git/info/refs"],
                                capture_output=True, text=True)
        assert hidden.stdout == "404"
    finally:
        stop_server(tmp_path / "pid")
