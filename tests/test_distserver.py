"""The sandbox distfiles server: a real detached process, fetched with urllib and curl."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from releaser.errors import DistServerError
from releaser.sandbox.distserver import (ServerInfo, pid_alive, read_pidfile, server_alive,
                                         start_server, stop_server)

PAYLOAD = bytes(range(256)) * 400 + b"tail"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def served(tmp_path: Path):
    """A started server over tmp/distfiles holding notes-1.0.0.tar.gz; always stopped after."""
    directory = tmp_path / "distfiles"
    directory.mkdir()
    (directory / "notes-1.0.0.tar.gz").write_bytes(PAYLOAD)
    pidfile = tmp_path / "run" / "distserver.pid"
    info = start_server(directory, pidfile=pidfile, logfile=tmp_path / "log" / "distserver.log")
    yield info, pidfile, tmp_path
    stop_server(pidfile)


@pytest.fixture
def sleeper():
    """An unrelated process (``sleep 30``) whose pid a stale pidfile can name."""
    proc = subprocess.Popen(["sleep", "30"])
    yield proc
    proc.kill()
    proc.wait()


def test_serves_files_byte_identically_and_404s_missing_ones(served):
    info, pidfile, _ = served
    assert isinstance(info, ServerInfo)
    assert info.port > 0 and info.url == f"http://127.0.0.1:{info.port}"
    assert read_pidfile(pidfile) == (info.pid, info.port)
    assert server_alive(pidfile)

    with NO_PROXY.open(f"{info.url}/notes-1.0.0.tar.gz", timeout=10) as response:
        assert response.status == 200
        assert response.read() == PAYLOAD
    with pytest.raises(urllib.error.HTTPError) as missing:
        NO_PROXY.open(f"{info.url}/notes-9.9.9.tar.gz", timeout=10)
    assert missing.value.code == 404
    missing.value.close()


def test_hidden_temporaries_are_neither_listed_nor_served(served):
    info, _, tmp = served
    directory = tmp / "distfiles"
    (directory / ".notes-1.0.1.tar.gz.partial-0123456789ab").write_bytes(b"half an upload")
    (directory / ".hidden").mkdir()
    (directory / ".hidden" / "notes-1.0.2.tar.gz").write_bytes(b"inside a hidden folder")
    (directory / "sub").mkdir()
    with NO_PROXY.open(f"{info.url}/", timeout=10) as response:
        listing = response.read().decode()
    assert "notes-1.0.0.tar.gz" in listing and 'href="sub/"' in listing
    assert "partial" not in listing and ".hidden" not in listing
    for path in ("/.notes-1.0.1.tar.gz.partial-0123456789ab",
                 "/%2Enotes-1.0.1.tar.gz.partial-0123456789ab",
                 "//.notes-1.0.1.tar.gz.partial-0123456789ab",
                 "/.hidden/notes-1.0.2.tar.gz", "/sub/../.hidden/notes-1.0.2.tar.gz",
                 "/.hidden/"):
        with pytest.raises(urllib.error.HTTPError) as hidden:
            NO_PROXY.open(f"{info.url}{path}", timeout=10)
        assert hidden.value.code == 404, path
        hidden.value.close()


def test_read_only(served):
    info, _, tmp = served
    request = urllib.request.Request(f"{info.url}/evil", data=b"x", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as refused:
        NO_PROXY.open(request, timeout=10)
    assert refused.value.code == 501
    refused.value.close()
    assert not (tmp / "distfiles" / "evil").exists()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_fetches_and_resumes_like_portage(served):
    info, _, tmp = served
    out = tmp / "fetched.tar.gz"
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    subprocess.run(["curl", "--fail", "--silent", "--show-error", "-o", str(out),
                    f"{info.url}/notes-1.0.0.tar.gz"], check=True, env=env, timeout=30)
    assert out.read_bytes() == PAYLOAD

    # Portage's RESUMECOMMAND: curl --continue-at - on a partial download.
    out.write_bytes(PAYLOAD[:1000])
    subprocess.run(["curl", "--fail", "--silent", "--show-error", "--continue-at", "-", "-o", str(out),
                    f"{info.url}/notes-1.0.0.tar.gz"], check=True, env=env, timeout=30)
    assert out.read_bytes() == PAYLOAD

    failed = subprocess.run(["curl", "--fail", "--silent", "-o", str(tmp / "nothing"),
                             f"{info.url}/missing.tar.gz"], env=env, timeout=30)
    assert failed.returncode == 22  # curl's "HTTP page not retrieved" (404 with --fail)


def test_stop_stops_and_second_stop_is_a_no_op(served):
    info, pidfile, tmp = served
    assert stop_server(pidfile) is True
    assert not pid_alive(info.pid)
    assert not pidfile.exists()
    assert not server_alive(pidfile)
    assert stop_server(pidfile) is False
    with pytest.raises(urllib.error.URLError):
        NO_PROXY.open(f"{info.url}/notes-1.0.0.tar.gz", timeout=5)
    assert "stopped" in (tmp / "log" / "distserver.log").read_text()


def test_stale_pidfile_never_kills_an_unrelated_process(tmp_path: Path, sleeper):
    pidfile = tmp_path / "distserver.pid"
    pidfile.write_text(f"{sleeper.pid} 8080\n")
    assert not server_alive(pidfile)
    assert stop_server(pidfile) is False
    assert sleeper.poll() is None, "stop_server killed a process that is not a distserver"
    assert not pidfile.exists()


def test_second_start_on_the_same_pidfile_is_refused(served):
    info, pidfile, tmp = served
    with pytest.raises(DistServerError, match="already runs"):
        start_server(tmp / "distfiles", pidfile=pidfile, logfile=tmp / "log" / "again.log")
    assert server_alive(pidfile)


def test_port_in_use_is_reported_with_the_reason(served):
    info, _, tmp = served
    pidfile = tmp / "other.pid"
    try:
        with pytest.raises(DistServerError, match="in use"):
            start_server(tmp / "distfiles", port=info.port, pidfile=pidfile, logfile=tmp / "other.log")
    finally:
        stop_server(pidfile)


def test_missing_directory_is_refused(tmp_path: Path):
    with pytest.raises(DistServerError, match="does not exist"):
        start_server(tmp_path / "nope", pidfile=tmp_path / "p", logfile=tmp_path / "l")


def test_module_runs_as_a_program():
    help_text = subprocess.run([sys.executable, "-m", "releaser.sandbox.distserver", "--help"],
                               capture_output=True, text=True, check=True).stdout
    assert "--pidfile" in help_text
