"""``releaser doctor``: each planted problem is found, once, with its fix.

One SSH sandbox of three nodes (central and nodes behind real sshds): first
ready, then with a stale lock, a killed run's temporary, a leaked process of the
app, a node that lost its bootstrap, a reinstalled host (new host key) and a
host that is down.  A central on a nearly full tmpfs (a mount namespace of its
own) is refused by doctor and by promote's fast check before anything is built.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time

import pytest

from releaser.cli import main
from releaser.exitcodes import NOT_READY

from .conftest import write_config
from .sandboxes import Sandbox
from .test_history import plant_foreign_stale_lock


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    sandbox = Sandbox(tmp_path_factory.mktemp("doctor"), {"staging": 3}, ssh=True)
    yield sandbox
    sandbox.down()


def doctor(sb, capsys, *args) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(["-c", str(sb.config_path), "doctor", "staging", *args])
    return code, capsys.readouterr().out.splitlines()


def test_a_ready_environment(sb, capsys):
    code, lines = doctor(sb, capsys)
    assert code == 0, lines
    assert lines[1] == "staging: ready"
    assert any("ok: central (central:" in x and "writable" in x for x in lines), lines
    assert "  ok: lock: free" in lines
    for node in ("staging-1", "staging-2", "staging-3"):
        assert any(x.startswith(f"  ok: {node}: reachable, prepared (Portage 3.")
                   and " MB free; git, python3" in x for x in lines), lines
    assert not any("NOT READY" in x or "warning" in x for x in lines), lines


def test_every_planted_problem_is_found_with_its_fix(sb, capsys):
    plant_foreign_stale_lock(sb)
    temporary = sb.central / "distfiles" / ".notes-9.tar.gz.partial-0123456789ab"
    temporary.write_bytes(b"half")
    two_hours_ago = time.time() - 7200
    os.utime(temporary, (two_hours_ago, two_hours_ago))
    # staging-1: a process of the app its init system does not know, and a lost bootstrap file
    root = sb.node_root("staging-1")
    leaked = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "-m",
                               "notes", "serve"], cwd=root)
    (root / "etc/portage/make.conf/90-releaser.conf").unlink()
    # staging-2 is reinstalled: a new host key behind the same address
    daemon = sb.sshd("staging-2")
    daemon.stop()
    daemon.host_key_path.unlink()
    daemon.host_key_path.with_name(daemon.host_key_path.name + ".pub").unlink()
    daemon.start()
    # staging-3 is down
    sb.sshd("staging-3").stop()
    try:
        code, lines = doctor(sb, capsys)
        _code, as_json = doctor(sb, capsys, "--json")
    finally:
        leaked.kill()
        leaked.wait()
    assert code == NOT_READY, lines
    assert lines[1] == "staging: NOT READY"

    def finding(*parts) -> str:
        found = [x for x in lines if all(p in x for p in parts)]
        assert len(found) == 1, (parts, "\n".join(lines))
        return found[0]

    finding("warning: lock: stale lock of deploy@build-7", "lease expired",
            "fix: the next promote or rollback takes it over")
    finding("warning: central: 1 half-written temporary", temporary.name,
            "fix: the next promote removes them")
    finding("NOT READY: staging-1: process(es) of the app its init system does not know",
            f"{leaked.pid} (", f"fix: stop them (kill {leaked.pid})")
    finding("NOT READY: staging-1: not prepared: ", "90-releaser.conf",
            "fix: `releaser host bootstrap staging staging-1`")
    finding("NOT READY: staging-2: host key changed:", "fix: if the host was reinstalled")
    finding("NOT READY: staging-3: unreachable:", "connection refused", "fix: check the host")
    assert not any("staging-2: unreachable" in x for x in lines)

    [diagnosis] = json.loads("\n".join(as_json))
    assert diagnosis["ready"] is False
    where = sorted((f["where"], f["severity"]) for f in diagnosis["findings"])
    assert where == [("central", "warning"), ("lock", "warning"), ("staging-1", "blocking"),
                     ("staging-1", "blocking"), ("staging-2", "blocking"),
                     ("staging-3", "blocking")]
    assert all(f["fix"] for f in diagnosis["findings"])


def test_a_live_lock_blocks_and_fast_skips_the_nodes(sb, capsys):
    assert main(["-c", str(sb.config_path), "lock", "acquire", "staging", "-m",
                 "db upgrade"]) == 0
    try:
        code, lines = doctor(sb, capsys, "--fast")
        assert code == NOT_READY
        assert any(x.startswith("  NOT READY: lock: staging is locked by") and "'db upgrade'"
                   in x for x in lines), lines
        assert not any("staging-3" in x for x in lines)  # no node was contacted
    finally:
        assert main(["-c", str(sb.config_path), "lock", "release", "staging"]) == 0


def test_an_unreachable_central_is_its_own_finding(sb, capsys):
    """Last on this sandbox: the central host goes down."""
    sb.sshd("central").stop()
    code, lines = doctor(sb, capsys, "--fast")
    assert code == NOT_READY
    [line] = [x for x in lines if "NOT READY: central: " in x]
    assert "connection refused" in line and "fix: check that 127.0.0." in line, line


def test_a_full_central_is_refused_by_doctor_and_by_promote_before_any_build(tmp_path,
                                                                          app_repo):
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("mount namespaces are not available here")
    node = f'{{name = "s1", app_url = "http://127.0.0.1:9", root = "{tmp_path / "s1"}"}}'
    config = write_config(tmp_path / "releaser.toml", app_repo,
                          extra=f'\n[build]\nout = "{tmp_path / "out"}"\n\n'
                                f'[environments.staging]\nnodes = [{node}]\n')
    central = tmp_path / "central"
    central.mkdir()
    releaser = [sys.executable, "-m", "releaser", "-c", str(config)]
    script = ('mount -t tmpfs -o size=8m tmpfs "$1" && shift && "$@" central init >/dev/null && '
              '"$@" doctor staging --fast; echo "doctor=$?"; "$@" promote staging; '
              'echo "promote=$?"')
    done = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(central), *releaser],
                          capture_output=True, text=True)
    assert "doctor=7" in done.stdout, (done.stdout, done.stderr)
    assert "NOT READY: central (central:" in done.stdout and "MB free (at least 64 MB" \
        in done.stdout, done.stdout
    assert "promote=1" in done.stdout, done.stdout
    assert "releaser: error: staging is not ready: central" in done.stderr, done.stderr
    assert done.stderr.count("releaser: error:") == 1
    assert not (tmp_path / "out").exists()  # refused before building anything


def test_a_missing_signing_key_and_an_expiring_or_expired_exception(tmp_path, app_repo,
                                                                    capsys):
    from .test_trust_exceptions import YESTERDAY, config_with, unsigned_dev

    soon = (datetime.date.today() + datetime.timedelta(days=3)).isoformat()
    path = config_with(tmp_path, app_repo, unsigned_dev(soon))
    assert main(["-c", str(path), "central", "init"]) == 0
    capsys.readouterr()
    assert main(["-c", str(path), "doctor", "--fast"]) == NOT_READY
    out = capsys.readouterr().out
    assert ("NOT READY: signing key: environment staging has no release key in "
            f"{tmp_path / 'gnupg'}") in out and "fix: `releaser keys init staging`" in out
    assert "warning: exceptions: unsigned-overlay in dev" in out
    assert "expires in 3 day(s)" in out and "fix: renew it" in out
    assert "dev: ready" in out  # unsigned by its exception: no key needed

    expired = config_with(tmp_path, app_repo, unsigned_dev(YESTERDAY))
    assert main(["-c", str(expired), "doctor"]) == 2
    out = capsys.readouterr().out
    assert out.startswith("NOT READY: configuration: ") and f"expired on {YESTERDAY}" in out
    assert "fix: correct it" in out


def test_a_service_taken_out_of_the_default_runlevel_is_a_warning_with_its_fix(tmp_path,
                                                                                 capsys):
    """Promote adds the service to the runlevel once and asks no more: doctor finds it gone."""
    from releaser.deploy.promote import promote
    from releaser.hosts.runner import LocalRunner
    from releaser.sandbox.noderoot import portage_env

    sandbox = Sandbox(tmp_path, {"staging": 1})
    try:
        assert promote(sandbox.config, "staging").ok
        code, lines = doctor(sandbox, capsys)
        assert code == 0 and not any("runlevel" in x for x in lines), lines
        runner = LocalRunner(env=portage_env(sandbox.node_root("staging-1")))
        assert runner.run(["rc-update", "del", "notes", "default"], check=False).ok
        code, lines = doctor(sandbox, capsys)
        assert code == 0, lines  # a warning: the app serves, it would not come back at boot
        [line] = [x for x in lines if "runlevel" in x]
        assert line == ("  warning: staging-1: notes is installed but not in the default "
                        "runlevel: it will not start at boot; fix: rc-update add notes default "
                        "(on the node)"), lines
    finally:
        sandbox.down()
