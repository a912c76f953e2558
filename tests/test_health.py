"""check_health against a real HTTP server (a thread) answering what a test sets."""

from __future__ import annotations

import socket

import pytest

from releaser.errors import UsageError
from releaser.hosts.health import HealthResult, check_health
from tests.health_server import scripted_health_server


@pytest.fixture
def app():
    """A server whose successive answers are ``state["answers"]`` (the last one repeats)."""
    with scripted_health_server() as (state, url):
        yield state, url


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_healthy_with_expected_version(app):
    state, url = app
    result = check_health(url, expect_version="1.0.0", timeout=5)
    assert isinstance(result, HealthResult)
    assert result.ok and result.status_code == 200
    assert (result.version, result.schema) == ("1.0.0", "current")
    assert result.attempts == 1
    assert "healthy" in result.detail


def test_any_version_when_none_expected(app):
    _, url = app
    assert check_health(url, expect_version=None, timeout=5).ok


class _Clock:
    """health's clock, advanced only by its own sleeps: attempts are counted, not timed."""

    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_wrong_version_retries_until_timeout(app, monkeypatch):
    from releaser.hosts import health

    state, url = app
    clock = _Clock()
    monkeypatch.setattr(health, "time", clock)
    result = check_health(url, expect_version="1.1.0", timeout=1.0, interval=0.25)
    assert not result.ok
    assert result.detail == f"{url} answered version 1.0.0, expected 1.1.0"
    assert result.version == "1.0.0" and result.status_code == 200
    # asked at 0, 0.25, 0.5, 0.75 and 1.0 s; one more would come after the timeout
    assert result.attempts == state["hits"] == 5 and clock.sleeps == [0.25] * 4
    assert result.seconds == 1.0


def test_becomes_healthy_after_a_restart(app):
    state, url = app
    state["answers"] = [
        (503, {"status": "error", "schema": "behind", "version": "1.1.0"}),
        (200, {"status": "ok", "version": "1.0.0", "schema": "current"}),
        (200, {"status": "ok", "version": "1.1.0", "schema": "current"}),
    ]
    result = check_health(url, expect_version="1.1.0", timeout=10, interval=0.05)
    assert result.ok and result.version == "1.1.0" and result.attempts == 3


def test_503_detail_names_schema_and_database_error(app):
    state, url = app
    state["answers"] = [(503, {"status": "error", "schema": "unknown", "version": "1.0.0",
                               "database": {"reachable": False, "error": "unable to open database file"}})]
    result = check_health(url, expect_version=None, timeout=0.3, interval=0.1)
    assert not result.ok and result.status_code == 503 and result.schema == "unknown"
    assert result.detail.startswith(f"{url} answered HTTP 503 (")
    assert "schema unknown" in result.detail and "unable to open database file" in result.detail
    assert "\n" not in result.detail


def test_not_json(app):
    state, url = app
    state["answers"] = [(200, b"<html>proxy error</html>")]
    result = check_health(url, expect_version=None, timeout=0, interval=0.1)
    assert not result.ok and result.attempts == 1
    assert "not with a JSON health object" in result.detail


def test_connection_refused_never_raises():
    url = f"http://127.0.0.1:{_free_port()}/health"
    result = check_health(url, expect_version="1.0.0", timeout=0.5, interval=0.1)
    assert not result.ok and result.status_code is None and result.version is None
    assert result.detail == f"{url}: connection refused"


def test_silent_server_times_out():
    with socket.socket() as listener:  # accepts (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/health"
        result = check_health(url, expect_version=None, timeout=0.6, interval=0.1, request_timeout=0.3)
    assert not result.ok
    assert "no answer within" in result.detail


def test_proxy_settings_are_ignored(app, monkeypatch):
    _, url = app
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{_free_port()}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert check_health(url, expect_version="1.0.0", timeout=2).ok


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/health", "127.0.0.1:8080/health", "http:///health"])
def test_url_must_be_http(url):
    with pytest.raises(UsageError):
        check_health(url, expect_version=None)


def test_consecutive_server_errors_fail_without_waiting_out_the_timeout(app, monkeypatch):
    """A new process answering 500 is not kept in service for the whole timeout."""
    from releaser.hosts import health

    state, url = app
    state["answers"] = [(500, {"status": "error", "version": "1.1.0"})]
    clock = _Clock()
    monkeypatch.setattr(health, "time", clock)
    result = check_health(url, expect_version="1.1.0", timeout=30, interval=0.5)
    assert not result.ok and result.status_code == 500
    assert result.attempts == state["hits"] == health.FAIL_AFTER_5XX == 3
    assert clock.now == 1.0 and result.detail.endswith("(3 server errors in a row)")


def test_a_server_error_between_good_answers_is_not_consecutive(app, monkeypatch):
    from releaser.hosts import health

    state, url = app
    state["answers"] = [(503, {"status": "error"}), (503, {"status": "error"}),
                        (200, {"status": "ok", "version": "1.0.0"}),
                        (503, {"status": "error"}), (503, {"status": "error"}),
                        (200, {"status": "ok", "version": "1.1.0"})]
    monkeypatch.setattr(health, "time", _Clock())
    result = check_health(url, expect_version="1.1.0", timeout=30, interval=0.5)
    assert result.ok and result.attempts == 6


def test_a_dead_process_fails_at_once(monkeypatch):
    """Connection refused and the init system says the process is gone: no more waiting."""
    from releaser.hosts import health

    url = f"http://127.0.0.1:{_free_port()}/health"
    asked = []

    def gone():
        asked.append(1)
        return None if len(asked) < 2 else "notes pid 42 is not running any more"

    monkeypatch.setattr(health, "time", _Clock())
    result = check_health(url, expect_version="1.1.0", timeout=30, interval=0.5,
                          process_gone=gone)
    assert not result.ok and result.attempts == 2 == len(asked)
    assert result.detail == f"notes pid 42 is not running any more; {url}: connection refused"


def test_a_healthy_answer_counts_only_while_the_started_process_runs(app):
    """The answer may come from another process (the old one, a restarted one): not healthy."""
    _, url = app
    result = check_health(url, expect_version="1.0.0", timeout=5,
                          process_gone=lambda: "notes now runs pid 7, not pid 6 that was started")
    assert not result.ok and result.attempts == 1
    assert result.detail.startswith("notes now runs pid 7, not pid 6 that was started, although ")
    assert check_health(url, expect_version="1.0.0", timeout=5, process_gone=lambda: None).ok
