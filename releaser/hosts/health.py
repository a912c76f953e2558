"""The health gate: is the application on a node up, healthy, and the version we installed?

After every install or rollback the rollout asks the node's health endpoint
(the app's contract, ``releaser.appcontract``, says what it answers and
``HealthFacts`` reads it: the notes app answers ``{"status": "ok", "version":
..., "schema": ...}`` with 200, or 503 when it cannot serve its database).  A
freshly restarted service needs a moment before it listens, and the old
process may still answer for a moment after a restart, so the check polls:
connection refused, timeouts, 503, unparsable bodies and a wrong version are
all "not yet", retried until ``timeout``.  The answer is a ``HealthResult``
whose ``detail`` is the last reason in one line an operator can act on
("... answered version 1.0.0, expected 1.1.0", "... connection refused").

Two answers end the wait early instead of polling out ``timeout`` (30 s by
default, during which a broken node would stay in service): ``FAIL_AFTER_5XX``
server errors in a row (the new process runs and says it cannot serve), and a
service process that is gone (``process_gone``: the rollout passes a question
to the init system, so an app that crashed at start is not waited for).  The
same question is asked once more after a healthy answer, so the answer is
known to come while the process that was started still runs.

Network and HTTP problems never raise: a failed health check is a result the
rollout records (and may roll back on), not a crash.  Only a URL that cannot
be a health endpoint at all (not http/https) is a UsageError.

Proxies are ignored on purpose (``ProxyHandler({})``): an operator's
``http_proxy`` must not route a check of a node's 127.0.0.1 through a proxy
that would answer for it.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

from releaser.appcontract import HealthFacts
from releaser.errors import UsageError

#: Largest body read from a health endpoint; a health answer is a few hundred bytes.
MAX_BODY = 1024 * 1024
#: Upper bound of one HTTP attempt, so a hung server does not eat the whole timeout at once.
REQUEST_TIMEOUT = 5.0
#: Consecutive HTTP 5xx answers after which the check fails without waiting out its timeout.
FAIL_AFTER_5XX = 3

#: Asked by the check about the service process: None while it runs, else why it does not.
ProcessGone = Callable[[], "str | None"]


@dataclass(frozen=True)
class HealthResult:
    """The outcome of ``check_health``.

    ``status_code`` is the last HTTP status seen (None if nothing answered);
    ``version`` and ``schema`` come from the last JSON body (None if none);
    ``detail`` is one line; ``seconds`` the time spent polling; ``attempts``
    the number of requests made.
    """

    ok: bool
    status_code: int | None
    version: str | None
    schema: str | None
    detail: str
    seconds: float
    attempts: int = 1
    db_schema_version: int | None = None  # the database's schema version, as the app read it
    app_schema_version: int | None = None  # the schema version the running app expects


@dataclass(frozen=True)
class _Probe:
    ok: bool
    status_code: int | None
    version: str | None
    schema: str | None
    detail: str
    data: dict | None = None


def check_health(url: str, *, expect_version: str | None, timeout: float = 30,
                 interval: float = 0.5, request_timeout: float = REQUEST_TIMEOUT,
                 fail_after_5xx: int = FAIL_AFTER_5XX,
                 process_gone: ProcessGone | None = None) -> HealthResult:
    """Poll ``url`` until it answers healthy (and ``expect_version``, if given) or ``timeout``.

    Healthy means HTTP 200 with a JSON object whose ``status`` is ``"ok"``,
    answered while ``process_gone`` (if given) says the service process runs.
    ``fail_after_5xx`` server errors in a row, or ``process_gone`` naming a
    reason after a failed attempt, end the check at once.  At least one
    request is made even with ``timeout=0``.  Never raises for network or
    HTTP problems; see the module docstring.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"health check URL must be http:// or https://, got {url!r}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    started = time.monotonic()
    deadline = started + max(0.0, timeout)
    attempts = server_errors = 0
    while True:
        attempts += 1
        remaining = deadline - time.monotonic()
        probe = _probe(opener, url, expect_version, max(0.2, min(request_timeout, remaining)))
        server_errors = server_errors + 1 if (probe.status_code or 0) >= 500 else 0
        verdict = _verdict(probe, server_errors, fail_after_5xx, process_gone)
        now = time.monotonic()
        if verdict is not None or now + interval > deadline:
            ok, detail = verdict if verdict is not None else (False, probe.detail)
            facts = HealthFacts.read(probe.data)
            return HealthResult(ok, probe.status_code, probe.version, probe.schema,
                                detail, round(now - started, 3), attempts,
                                facts.db_schema_version, facts.app_schema_version)
        time.sleep(interval)


def _verdict(probe: _Probe, server_errors: int, fail_after_5xx: int,
             process_gone: ProcessGone | None) -> tuple[bool, str] | None:
    """(ok, detail) when this attempt settles the check, None to keep polling."""
    gone = process_gone() if process_gone is not None else None
    if gone is not None:
        return False, (f"{gone}; {probe.detail}" if not probe.ok
                       else f"{gone}, although {probe.detail}")
    if probe.ok:
        return True, probe.detail
    if fail_after_5xx and server_errors >= fail_after_5xx:
        return False, f"{probe.detail} ({server_errors} server errors in a row)"
    return None


def _probe(opener: urllib.request.OpenerDirector, url: str, expect_version: str | None,
           timeout: float) -> _Probe:
    """One request; every failure becomes a ``_Probe`` with a one-line reason."""
    request = urllib.request.Request(url, headers={"Accept": "application/json",
                                                   "Cache-Control": "no-cache"})
    try:
        with opener.open(request, timeout=timeout) as response:
            status_code = response.status
            body = response.read(MAX_BODY)
    except urllib.error.HTTPError as exc:
        try:
            body = exc.read(MAX_BODY)
        except (OSError, http.client.HTTPException):
            body = b""
        finally:
            exc.close()
        data = _json_object(body)
        facts = HealthFacts.read(data)
        return _Probe(False, exc.code, facts.version, facts.schema,
                      f"{url} answered HTTP {exc.code}{_explain(data)}", data)
    except urllib.error.URLError as exc:
        return _Probe(False, None, None, None, f"{url}: {_network_reason(exc.reason, timeout)}")
    except (OSError, http.client.HTTPException) as exc:
        return _Probe(False, None, None, None, f"{url}: {_network_reason(exc, timeout)}")

    data = _json_object(body)
    if data is None:
        return _Probe(False, status_code, None, None,
                      f"{url} answered HTTP {status_code} but not with a JSON health object")
    facts = HealthFacts.read(data)
    version, schema = facts.version, facts.schema
    if not facts.ok:
        return _Probe(False, status_code, version, schema,
                      f"{url} answered HTTP {status_code}{_explain(data)}", data)
    if expect_version is not None and version != expect_version:
        return _Probe(False, status_code, version, schema,
                      f"{url} answered version {version}, expected {expect_version}", data)
    return _Probe(True, status_code, version, schema,
                  f"{url} is healthy: version {version}, schema {schema}", data)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _explain(data: dict[str, Any] | None) -> str:
    """`` (status degraded, schema behind: <database error>)`` from a health body, or ``""``."""
    if data is None:
        return ""
    facts = HealthFacts.read(data)
    text = ", ".join(f"{key} {value}" for key, value in (
        ("status", facts.status), ("schema", facts.schema), ("version", facts.version))
        if value is not None)
    if facts.error:
        text = f"{text}: {facts.error}" if text else facts.error
    return f" ({text})" if text else ""


def _network_reason(reason: object, timeout: float) -> str:
    """A short operator-facing reason for a failed connection."""
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout:g} s"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve host name ({reason.strerror})"
    if isinstance(reason, http.client.RemoteDisconnected):  # a ConnectionResetError too
        return "connection closed without an answer"
    if isinstance(reason, ConnectionResetError):
        return "connection reset"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror[0].lower() + reason.strerror[1:]
    return str(reason) or type(reason).__name__


__all__ = ["FAIL_AFTER_5XX", "HealthResult", "ProcessGone", "check_health"]
