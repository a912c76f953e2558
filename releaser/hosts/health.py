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

Where the question is asked from is the ``transport``, and only that differs
(one polling loop, one judgement, two ways to make one request):

- ``ON_NODE`` (``health_check = "node"``, the default): each attempt is one
  command on the node through its Runner (``NodeTransport``), the node's own
  ``python3`` fetching the URL as the node sees it (``releaser.hosts.
  health_fetch``), so an app listening on the host's 127.0.0.1 only is
  checked where it listens; over SSH the node's connection is reused.
- ``FROM_OPERATOR`` (``health_check = "operator"``): the request goes from
  releaser's own process (``OPERATOR``), for an app the operator can reach.

Network and HTTP problems never raise: a failed health check is a result the
rollout records (and may roll back on), not a crash.  A node that cannot be
reached at all (its SSH connection is lost) is not unhealthy but unreachable:
the Runner's ``UnreachableError`` or ``HostKeyError`` goes up as it is.  Only
a URL that cannot be a health endpoint at all (not http/https) is a UsageError.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol
from urllib.parse import urlsplit

from releaser.appcontract import HealthFacts
from releaser.errors import CommandError, UsageError, last_line
from releaser.hosts import health_fetch
from releaser.hosts.runner import Runner

#: Upper bound of one HTTP attempt, so a hung server does not eat the whole timeout at once.
REQUEST_TIMEOUT = 5.0
#: Consecutive HTTP 5xx answers after which the check fails without waiting out its timeout.
FAIL_AFTER_5XX = 3
#: ``health_check``: where the health endpoint is asked from (see the module docstring).
ON_NODE, FROM_OPERATOR = "node", "operator"
HEALTH_CHECKS = (ON_NODE, FROM_OPERATOR)
#: Time granted to one command on a node beyond its request's own timeout
#: (starting python3, an SSH round trip), before the Runner gives up on it.
COMMAND_SLACK = 10.0

#: Asked by the check about the service process: None while it runs, else why it does not.
ProcessGone = Callable[[], "str | None"]


class Transport(Protocol):
    """Makes one request of a health check (``health_fetch.fetch``'s answer) from somewhere."""

    def fetch(self, url: str, timeout: float) -> dict: ...

    def label(self, url: str) -> str:
        """How ``url`` is named in a detail: where it was asked from, if not from here."""


class _Operator:
    """The request made from releaser's own process."""

    def fetch(self, url: str, timeout: float) -> dict:
        return health_fetch.fetch(url, timeout)

    def label(self, url: str) -> str:
        return url


#: The operator's transport (``health_check = "operator"``).
OPERATOR: Transport = _Operator()


@dataclass(frozen=True)
class NodeTransport:
    """The request made on the node: one ``python3 -I -S -c`` per attempt, through the
    node's Runner (over SSH, its one connection)."""

    runner: Runner

    def fetch(self, url: str, timeout: float) -> dict:
        argv = ["python3", "-I", "-S", "-c", _fetch_program(), url, f"{timeout:g}"]
        try:
            result = self.runner.run(argv, check=False, timeout=timeout + COMMAND_SLACK)
        except CommandError as exc:  # not a lost connection: those go up (module docstring)
            if exc.returncode == 124:
                return _no_answer(health_fetch.TIMEOUT, "timed out")
            return _no_answer(health_fetch.OTHER, f"cannot run python3 on the node: "
                                                  f"{last_line(exc.stderr, exc.stdout)}")
        answer = _json_object(result.stdout.strip().encode()) if result.ok else None
        if answer is None:
            return _no_answer(health_fetch.OTHER, "python3 on the node gave no answer (exit "
                                                  f"{result.returncode}): "
                                                  f"{last_line(result.stderr, result.stdout)}")
        return answer

    def label(self, url: str) -> str:
        return f"{url} on {self.runner.host}"


@functools.lru_cache(maxsize=1)
def _fetch_program() -> str:
    """The source of ``health_fetch``, run by the node's python3."""
    return Path(health_fetch.__file__).read_text(encoding="utf-8")


def _no_answer(kind: str, reason: str) -> dict:
    return {"status": None, "error": kind, "reason": reason}


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
                 process_gone: ProcessGone | None = None,
                 transport: Transport = OPERATOR) -> HealthResult:
    """Poll ``url`` through ``transport`` until it answers healthy (and ``expect_version``,
    if given) or ``timeout``.

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
    started = time.monotonic()
    deadline = started + max(0.0, timeout)
    attempts = server_errors = 0
    while True:
        attempts += 1
        remaining = deadline - time.monotonic()
        request_time = max(0.2, min(request_timeout, remaining))
        probe = _judge(transport.fetch(url, request_time), transport.label(url),
                       expect_version, request_time)
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


def _judge(answer: dict, label: str, expect_version: str | None, timeout: float) -> _Probe:
    """What one answer of ``health_fetch.fetch`` (from wherever) says, in one line."""
    status_code = answer.get("status")
    if not isinstance(status_code, int) or isinstance(status_code, bool):
        return _Probe(False, None, None, None, f"{label}: {_network_reason(answer, timeout)}")
    data = _json_object(_body(answer))
    facts = HealthFacts.read(data)
    version, schema = facts.version, facts.schema
    if status_code != 200 or (data is not None and not facts.ok):
        return _Probe(False, status_code, version, schema,
                      f"{label} answered HTTP {status_code}{_explain(data)}", data)
    if data is None:
        return _Probe(False, status_code, None, None,
                      f"{label} answered HTTP {status_code} but not with a JSON health object")
    if expect_version is not None and version != expect_version:
        return _Probe(False, status_code, version, schema,
                      f"{label} answered version {version}, expected {expect_version}", data)
    return _Probe(True, status_code, version, schema,
                  f"{label} is healthy: version {version}, schema {schema}", data)


def _body(answer: dict) -> bytes:
    try:
        return base64.b64decode(str(answer.get("body", "")), validate=True)
    except (binascii.Error, ValueError):
        return b""


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


def _network_reason(answer: dict, timeout: float) -> str:
    """A short operator-facing reason for an attempt that got no HTTP answer."""
    kind, reason = answer.get("error"), str(answer.get("reason") or "no reason given")
    if kind == health_fetch.REFUSED:
        return "connection refused"
    if kind == health_fetch.TIMEOUT:
        return f"no answer within {timeout:g} s"
    if kind == health_fetch.RESOLVE:
        return f"cannot resolve host name ({reason})"
    if kind == health_fetch.CLOSED:
        return "connection closed without an answer"
    if kind == health_fetch.RESET:
        return "connection reset"
    return reason[0].lower() + reason[1:] if reason else reason


__all__ = ["FAIL_AFTER_5XX", "FROM_OPERATOR", "HEALTH_CHECKS", "HealthResult", "NodeTransport",
           "ON_NODE", "OPERATOR", "ProcessGone", "Transport", "check_health"]
