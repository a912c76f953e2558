"""SSHRunner against real sandbox sshds on 127.0.0.2 / 127.0.0.3.

No mocks: real OpenSSH ``sshd`` daemons (releaser.sandbox.sshd), real paramiko/Fabric
clients (releaser.hosts.ssh).  Ports are taken from the kernel's free ones, so these
tests collide neither with a system sshd nor with each other.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from releaser.errors import CommandError, HostKeyError, SSHDError, UnreachableError
from releaser.hosts.ssh import HostSpec, SSHRunner, remote_command
from releaser.sandbox.sshd import (
    SSHD,
    SandboxSSHD,
    free_port,
    generate_client_key,
    known_hosts_line,
    write_known_hosts,
)

pytestmark = pytest.mark.skipif(
    not (os.path.exists(SSHD) and shutil.which("ssh-keygen") and os.geteuid() == 0),
    reason="needs root and Debian's openssh-server (/usr/sbin/sshd)",
)

NODE_ENV = {
    "node1": {
        "PATH": "/opt/releaser sandbox/node1/bin:/usr/local/bin:/usr/bin:/bin",
        "PORTAGE_CONFIGROOT": "/tmp/fleet/node1/root/",
        "ROOT": "/tmp/fleet/node1/root/",
        "EPREFIX": "",
        "RELEASER_NODE": "node1",
        "TRICKY": "it's \"quoted\" $HOME %h #not-a-comment \\back",
    },
    "node2": {
        "PATH": "/usr/bin:/bin",
        "PORTAGE_CONFIGROOT": "/tmp/fleet/node2/root/",
        "ROOT": "/tmp/fleet/node2/root/",
        "RELEASER_NODE": "node2",
    },
}
ADDRESSES = {"node1": "127.0.0.2", "node2": "127.0.0.3"}


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client_key(tmp_path_factory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("client") / "id_ed25519"
    return path, generate_client_key(path)


def _start(request, state_dir: Path, name: str, pubkey: str) -> SandboxSSHD:
    address = ADDRESSES[name]
    sshd = SandboxSSHD(state_dir, address, authorized_key=pubkey, port=free_port(address),
                       env=NODE_ENV[name])
    request.addfinalizer(sshd.stop)  # registered before start: runs even if a test fails
    return sshd.start()


@pytest.fixture(scope="module")
def fleet(request, tmp_path_factory, client_key) -> dict[str, SandboxSSHD]:
    """Two running sandbox nodes, kept for the module."""
    base = tmp_path_factory.mktemp("fleet")
    return {name: _start(request, base / name, name, client_key[1]) for name in ADDRESSES}


@pytest.fixture(scope="module")
def known_hosts(tmp_path_factory, fleet) -> Path:
    path = tmp_path_factory.mktemp("trust") / "known_hosts"
    return write_known_hosts(path, [(s.address, s.port, s.host_public_key) for s in fleet.values()])


@pytest.fixture
def make_runner(request, client_key):
    """Build SSHRunners (for a SandboxSSHD or an (address, port)) closed at teardown."""

    def make(target: SandboxSSHD | tuple[str, int], known_hosts: Path, *, name: str = "",
             identity: Path | None = None, connect_timeout: float = 5.0) -> SSHRunner:
        address, port = (target.address, target.port) if isinstance(target, SandboxSSHD) else target
        runner = SSHRunner(HostSpec(
            address=address, port=port, user="root",
            identity_file=identity or client_key[0], known_hosts=known_hosts,
            connect_timeout=connect_timeout, name=name,
        ))
        request.addfinalizer(runner.close)
        return runner

    return make


@pytest.fixture
def node1(fleet, known_hosts, make_runner) -> SSHRunner:
    return make_runner(fleet["node1"], known_hosts, name="node1")


@pytest.fixture
def node2(fleet, known_hosts, make_runner) -> SSHRunner:
    return make_runner(fleet["node2"], known_hosts, name="node2")


def _alive(pid: int) -> bool:
    """True if pid is a live (non-zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# --------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------


def test_remote_command_is_shlex_joined():
    assert remote_command(["echo", "a;b", "$(id)"]) == "echo 'a;b' '$(id)'"
    wrapped = remote_command(["ls", "x y"], env={"K": "secret value"})
    assert wrapped.startswith("sh -c ") and wrapped.endswith(" releaser-env ls 'x y'")
    assert "secret" not in wrapped and "K" not in wrapped.split("releaser-env")[1]
    assert remote_command(["true"], timeout=3) == "timeout -k 5 3 true"
    with pytest.raises(ValueError):
        remote_command(["true"], env={"A B": "1"})
    with pytest.raises(ValueError):
        remote_command([])


def test_metacharacters_arrive_verbatim(node1):
    args = ["a;b", "$(id)", "x y", "*", "`uname`", "$HOME", "'", '"', "\\", "a\nb", ""]
    marker = f"/tmp/releaser-test-should-not-exist-{os.getpid()}"
    args.append(f"; touch {marker}")
    result = node1.run(["printf", "<%s>\n", *args])
    assert result.stdout == "".join(f"<{a}>\n" for a in args)
    assert not Path(marker).exists()
    assert node1.run(["echo", "a;b", "$(id)", "x y", "*"]).stdout == "a;b $(id) x y *\n"


def test_setenv_reaches_remote_command_exactly(fleet, node1, node2):
    for name, runner in (("node1", node1), ("node2", node2)):
        seen = dict(line.split("=", 1) for line in runner.run(["env", "-0"]).stdout.split("\0") if line)
        for key, value in NODE_ENV[name].items():
            assert seen.get(key) == value, key
        # The node has its own HOME, so the developer's ~/.bashrc cannot touch PATH.
        assert seen["HOME"] == str(fleet[name].home_dir)


ENV_VALUES = {
    "EXTRA": "a b;$(id)",
    "ROOT": "/override/",
    "QUOTES": "it's \"quoted\" `uname` $HOME \\n \\",
    "LINES": "first line\n  second line  \n\n$(touch /tmp/releaser-env-ran)\n",
    "EMPTY": "",
    "SECRET": "s3cr3t-value-never-in-argv",
}


def test_env_values_arrive_exactly_and_stdin_follows_them(node1):
    printed = node1.run(["sh", "-c", "env -0; cat"], env=ENV_VALUES,
                        input="the command's own input\n").stdout
    *pairs, rest = printed.split("\0")
    seen = dict(pair.split("=", 1) for pair in pairs)
    assert {k: seen.get(k) for k in ENV_VALUES} == ENV_VALUES
    assert rest == "the command's own input\n"
    assert not Path("/tmp/releaser-env-ran").exists()
    # Without input the command still gets EOF right after the variables.
    assert node1.run(["cat"], env={"K": "v"}, timeout=10).stdout == ""


def test_env_values_are_in_no_argv_and_no_error_message(node1):
    secret = ENV_VALUES["SECRET"]
    # Every command line on the host while the command runs, then the value it was given.
    out = node1.run(["sh", "-c", 'ps -eo args; printf "[%s]" "$SECRET"'],
                    env={"SECRET": secret}).stdout
    listing, _, given = out.rpartition("\n")
    assert "ps -eo args" in listing and secret not in listing
    assert given == f"[{secret}]"
    with pytest.raises(CommandError) as info:
        node1.run(["sh", "-c", "echo failed >&2; exit 4"], env={"SECRET": secret})
    err = info.value
    assert err.returncode == 4 and "exited 4: failed" in str(err)
    assert secret not in str(err) and secret not in " ".join(err.argv)


def test_failing_command_raises_command_error(node1):
    with pytest.raises(CommandError) as info:
        node1.run(["sh", "-c", "echo partial; echo boom >&2; exit 7"])
    err = info.value
    assert (err.returncode, err.stdout, err.stderr, err.host) == (7, "partial\n", "boom\n", "node1")
    assert "exited 7: boom" in str(err)
    result = node1.run(["sh", "-c", "exit 3"], check=False)
    assert result.returncode == 3 and not result.ok


def test_stdin_input_and_no_stdin_never_hangs(node1):
    assert node1.run(["cat"], input="line 1\nline ü\n").stdout == "line 1\nline ü\n"
    # EOF at once: a hang would end in the timeout's CommandError (124)
    assert node1.run(["cat"], timeout=10).stdout == ""
    big = "x" * 3_000_000  # more than the SSH window: needs concurrent feed/drain
    assert node1.run(["wc", "-c"], input=big).stdout.strip() == str(len(big))


def test_large_output_on_both_streams(node1):
    result = node1.run(["sh", "-c", "head -c 2000000 /dev/zero | tr '\\0' o; "
                        "head -c 2000000 /dev/zero | tr '\\0' e >&2"])
    assert len(result.stdout) == 2_000_000 and len(result.stderr) == 2_000_000


def test_timeout_stops_remote_command(node1):
    marker = f"{time.time_ns() % 10**6}.5"  # a sleep length no one else uses
    with pytest.raises(CommandError) as info:
        node1.run(["sleep", marker], timeout=1, check=False)
    assert info.value.returncode == 124 and "timed out after 1s" in info.value.stderr
    assert node1.run(["pgrep", "-f", f"sleep {marker}"], check=False).returncode == 1


# --------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------


def test_put_get_binary_round_trip(node1, tmp_path):
    data = bytes(range(256)) * 64 + os.urandom(1_500_000)
    local = tmp_path / "blob.bin"
    local.write_bytes(data)
    remote_dir = f"{tmp_path}/remote/deep er/dir"
    remote = f"{remote_dir}/blob.bin"
    node1.put(local, remote)
    digest = hashlib.sha256(data).hexdigest()
    assert node1.run(["sha256sum", remote]).stdout.split()[0] == digest
    # Only the final name is left: the temporary upload name was renamed away.
    assert node1.run(["ls", "-A", remote_dir]).stdout == "blob.bin\n"
    node1.put(local, remote)  # replacing an existing file works too
    back = tmp_path / "back" / "blob.bin"
    node1.get(remote, back)
    assert hashlib.sha256(back.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in back.parent.iterdir()) == ["blob.bin"]


def test_get_missing_remote_file_is_command_error(node1, tmp_path):
    with pytest.raises(CommandError, match="No such file"):
        node1.get(f"{tmp_path}/does-not-exist", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------
# trust and reachability
# --------------------------------------------------------------------------


def test_changed_host_key_is_refused_and_nothing_runs(fleet, make_runner, tmp_path):
    node1, node2 = fleet["node1"], fleet["node2"]
    wrong = write_known_hosts(tmp_path / "known_hosts",
                              [(node1.address, node1.port, node2.host_public_key)])
    marker = tmp_path / "ran"
    runner = make_runner(node1, wrong, name="node1")
    with pytest.raises(HostKeyError) as info:
        runner.run(["touch", str(marker)])
    message = str(info.value)
    assert "CHANGED" in message and "node1" in message and str(wrong) in message
    assert "\n" not in message
    assert not marker.exists()


def test_unknown_host_is_refused(fleet, make_runner, tmp_path):
    only_node2 = write_known_hosts(tmp_path / "known_hosts", [
        (fleet["node2"].address, fleet["node2"].port, fleet["node2"].host_public_key)])
    marker = tmp_path / "ran"
    runner = make_runner(fleet["node1"], only_node2, name="node1")
    with pytest.raises(HostKeyError, match=r"^host node1 \(127\.0\.0\.2:\d+\): host key not in .*; refusing"):
        runner.run(["touch", str(marker)])
    assert not marker.exists()


def test_same_key_on_other_port_is_not_trusted(fleet, make_runner, tmp_path):
    # Pinned as [addr]:port: the same key for the address on port 22 must not match.
    node1 = fleet["node1"]
    port22 = write_known_hosts(tmp_path / "known_hosts", [(node1.address, 22, node1.host_public_key)])
    assert port22.read_text().startswith(f"{node1.address} ssh-ed25519 ")
    with pytest.raises(HostKeyError, match="not in"):
        make_runner(node1, port22).run(["true"])


def test_users_ssh_files_are_ignored(fleet, make_runner, tmp_path, monkeypatch):
    """~/.ssh/known_hosts is no trust source; ~/.ssh/config cannot redirect the host."""
    node1 = fleet["node1"]
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "known_hosts").write_text(node1.known_hosts_line() + "\n")
    (home / ".ssh" / "config").write_text("Host *\n  HostName 127.0.0.9\n  Port 9\n  User nobody\n")
    monkeypatch.setenv("HOME", str(home))
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyError, match="not in"):
        make_runner(node1, empty).run(["true"])
    pinned = write_known_hosts(tmp_path / "pinned", [(node1.address, node1.port, node1.host_public_key)])
    assert make_runner(node1, pinned).run(["id", "-un"]).stdout == "root\n"


def test_unauthorized_key_is_unreachable(fleet, known_hosts, make_runner, tmp_path):
    stranger = tmp_path / "stranger"
    generate_client_key(stranger)
    with pytest.raises(UnreachableError, match="authentication failed for user root"):
        make_runner(fleet["node1"], known_hosts, identity=stranger).run(["true"])


def test_silent_port_times_out(known_hosts, make_runner):
    # Accepts TCP, never speaks SSH: the connect timeout must bound the handshake.
    with socket.socket() as silent:
        silent.bind(("127.0.0.2", 0))
        silent.listen()
        port = silent.getsockname()[1]
        with pytest.raises(UnreachableError, match=rf"^host 127\.0\.0\.2 \(127\.0\.0\.2:{port}\): "
                           "SSH handshake failed"):
            make_runner(("127.0.0.2", port), known_hosts, connect_timeout=1).run(["true"])


def test_stopped_sshd_is_unreachable_quickly(request, tmp_path, client_key, make_runner):
    sshd = _start(request, tmp_path / "node", "node2", client_key[1])
    known = write_known_hosts(tmp_path / "known_hosts", [(sshd.address, sshd.port, sshd.host_public_key)])
    connected = make_runner(sshd, known, name="node2")
    assert connected.run(["echo", "up"]).stdout == "up\n"
    pid = sshd.pid
    sshd.stop()
    assert not _alive(pid)
    assert not sshd.running
    for runner in (connected, make_runner(sshd, known, name="node2")):
        with pytest.raises(UnreachableError) as info:
            runner.run(["echo", "up"])
        assert str(info.value) == f"host node2 (127.0.0.3:{sshd.port}): connection refused"


def test_parallel_runs_across_hosts(fleet, known_hosts, make_runner, tmp_path):
    """Eight commands on two hosts at once: each waits on the host until all eight have
    started (a shared folder is their barrier), so they can only finish by running
    concurrently; in a row, the first would give up waiting and fail."""
    runners = [make_runner(fleet[name], known_hosts, name=name)
               for name in ("node1", "node2") * 4]
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    wait_for_all = ('touch "$2/$1"; i=0; while [ "$(ls "$2" | wc -l)" -lt 8 ]; do '
                    'i=$((i+1)); [ "$i" -gt 1200 ] && exit 9; sleep 0.05; done; '
                    'printf "%s %s" "$RELEASER_NODE" "$1"')

    def job(index: int) -> tuple[str, str]:
        runner = runners[index]
        out = runner.run(["sh", "-c", wait_for_all, "sh", str(index), str(barrier)])
        return runner.host, out.stdout

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(job, range(8)))
    assert results == [(r.host, f"{r.host} {i}") for i, r in enumerate(runners)]
    assert threading.active_count() < 40


# --------------------------------------------------------------------------
# sandbox sshd helpers
# --------------------------------------------------------------------------


def test_known_hosts_line_format():
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIexample comment here"
    assert known_hosts_line("127.0.0.2", 2222, key) == "[127.0.0.2]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIexample"
    assert known_hosts_line("127.0.0.2", 22, key) == "127.0.0.2 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIexample"


def test_generate_client_key_is_idempotent(tmp_path):
    first = generate_client_key(tmp_path / "k")
    assert first.startswith("ssh-ed25519 ")
    assert generate_client_key(tmp_path / "k") == first
    assert (tmp_path / "k").stat().st_mode & 0o077 == 0


def test_sandbox_refuses_busy_port_and_bad_input(fleet, tmp_path, client_key):
    busy = fleet["node1"]
    with pytest.raises(SSHDError, match="already in use"):
        SandboxSSHD(tmp_path / "n", busy.address, authorized_key=client_key[1], port=busy.port).start()
    with pytest.raises(SSHDError, match="loopback"):
        SandboxSSHD(tmp_path / "n", "10.0.0.1", authorized_key=client_key[1])
    with pytest.raises(SSHDError, match="invalid environment variable"):
        SandboxSSHD(tmp_path / "n", "127.0.0.4", authorized_key=client_key[1],
                    port=free_port("127.0.0.4"), env={"BAD NAME": "x"}).start()


def test_host_key_survives_restart(request, tmp_path, client_key):
    sshd = _start(request, tmp_path / "node", "node1", client_key[1])
    before = sshd.host_public_key
    sshd.stop()
    sshd.start()
    assert sshd.host_public_key == before


def test_sshd_config_check_failure_is_reported(tmp_path, client_key):
    state = tmp_path / "node"
    state.mkdir()
    (state / "ssh_host_ed25519_key").write_text("not a key\n")
    (state / "ssh_host_ed25519_key.pub").write_text("ssh-ed25519 AAAAnotakey\n")
    sshd = SandboxSSHD(state, "127.0.0.4", authorized_key=client_key[1], port=free_port("127.0.0.4"))
    with pytest.raises(SSHDError, match=r"sshd rejected .*sshd_config: .*host ?key"):
        sshd.start()
    assert sshd.pid is None


def test_start_replaces_daemon_left_by_earlier_run(request, tmp_path, client_key):
    old = _start(request, tmp_path / "node", "node1", client_key[1])
    again = SandboxSSHD(old.state_dir, old.address, authorized_key=client_key[1], port=old.port)
    request.addfinalizer(again.stop)
    again.start()
    assert not _alive(old.pid) and again.running and again.pid != old.pid


# --------------------------------------------------------------------------
# one connection per host per run
# --------------------------------------------------------------------------


def test_a_pool_hands_out_one_runner_per_host_and_closes_it(fleet, known_hosts, client_key):
    from releaser.hosts.ssh_pool import runner_for, shared_connections

    def spec(name):
        return HostSpec(address=fleet[name].address, port=fleet[name].port,
                        identity_file=client_key[0], known_hosts=known_hosts, name=name)

    assert runner_for(spec("node1")) is not runner_for(spec("node1"))  # no pool: no sharing
    with shared_connections():
        first = runner_for(spec("node1"))
        with shared_connections():  # a nested run shares the outer pool
            assert runner_for(spec("node1")) is first
        assert runner_for(spec("node2")) is not first
        with ThreadPoolExecutor(4) as pool:  # the fleet's workers: channels side by side
            outputs = list(pool.map(lambda i: runner_for(spec("node1")).run(
                ["sh", "-c", "sleep 0.2; echo $1", "sh", str(i)]).stdout, range(8)))
        assert outputs == [f"{i}\n" for i in range(8)]
        connection = first._conn
        first.close()  # a user's close leaves the pool's connection open
        assert first._conn is connection and connection.is_connected
    assert first._conn is None  # the pool closed it with the run
    assert first.run(["true"]).ok  # and a later use reconnects


def test_put_makes_a_folder_once_and_again_once_it_was_removed(node1, tmp_path):
    made = []
    original = node1.run

    def run(argv, **kwargs):
        if argv[0] == "mkdir":
            made.append(argv[-1])
        return original(argv, **kwargs)

    node1.run = run
    local = tmp_path / "a.txt"
    local.write_text("a\n")
    folder = f"{tmp_path}/remote-once"
    node1.put(local, f"{folder}/a.txt")
    node1.put(local, f"{folder}/b.txt")
    assert made == [folder]
    original(["rm", "-r", "--", folder])
    node1.put(local, f"{folder}/c.txt")
    assert made == [folder, folder]
    assert original(["cat", f"{folder}/c.txt"]).stdout == "a\n"
