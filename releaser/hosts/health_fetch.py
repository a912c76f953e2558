"""One GET of a health endpoint: the part of the health check that runs where it is asked from.

The health check (``releaser.hosts.health``) polls, judges answers and
fails fast; this module only fetches, once, and says what came back.  It
runs in one of two places, so it is self-contained and uses the standard
library only:

- from the operator's machine, in process (``fetch``), when the app is
  reachable from there (``health_check = "operator"``);
- on the node, where the app listens (``health_check = "node"``, the
  default): its source is sent to the node's own ``python3 -I -S -c SOURCE
  URL TIMEOUT`` through the node's Runner, and prints ``fetch``'s answer as
  one JSON line.  Python 3 is on every Gentoo host (Portage runs on it, and
  ``releaser host bootstrap`` checks it), so the node needs nothing more:
  no curl, no wget.  ``-I`` keeps the host's ``PYTHON*`` variables and user
  site out of it, ``-S`` the site packages (and half of the start-up time).

An answer is a dict: ``{"status": 200, "body": BASE64}`` when an HTTP
answer came (any status), or ``{"status": None, "error": KIND, "reason":
TEXT}`` when none did, ``KIND`` being one of ``FAILURES``.  The body travels
base64-encoded so that any bytes come back as they were sent.

Proxies are ignored on purpose (``ProxyHandler({})``): an ``http_proxy``
must not route a check of 127.0.0.1 through a proxy that would answer for it.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import sys
import urllib.error
import urllib.request

#: Largest body read from a health endpoint; a health answer is a few hundred bytes.
MAX_BODY = 1024 * 1024
#: Why no HTTP answer came: the ``error`` of an answer without a status.
REFUSED, TIMEOUT, RESOLVE, CLOSED, RESET, OTHER = (
    "refused", "timeout", "resolve", "closed", "reset", "other")
FAILURES = (REFUSED, TIMEOUT, RESOLVE, CLOSED, RESET, OTHER)


def fetch(url: str, timeout: float, max_body: int = MAX_BODY) -> dict:
    """GET ``url`` once within ``timeout`` seconds; the answer (see the module docstring).

    Never raises for a network or HTTP problem: that is an answer too.
    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"Accept": "application/json",
                                                   "Cache-Control": "no-cache"})
    try:
        with opener.open(request, timeout=timeout) as response:
            return _answer(response.status, response.read(max_body))
    except urllib.error.HTTPError as exc:
        try:
            body = exc.read(max_body)
        except (OSError, http.client.HTTPException):
            body = b""
        finally:
            exc.close()
        return _answer(exc.code, body)
    except urllib.error.URLError as exc:
        return _failure(exc.reason)
    except (OSError, http.client.HTTPException) as exc:
        return _failure(exc)


def _answer(status: int, body: bytes) -> dict:
    return {"status": status, "body": base64.b64encode(body).decode("ascii")}


def _failure(reason: object) -> dict:
    """The kind of a failed connection, and the system's words for it."""
    if isinstance(reason, ConnectionRefusedError):
        kind = REFUSED
    elif isinstance(reason, (TimeoutError, socket.timeout)):
        kind = TIMEOUT
    elif isinstance(reason, socket.gaierror):
        kind = RESOLVE
    elif isinstance(reason, http.client.RemoteDisconnected):  # a ConnectionResetError too
        kind = CLOSED
    elif isinstance(reason, ConnectionResetError):
        kind = RESET
    else:
        kind = OTHER
    text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    return {"status": None, "error": kind, "reason": text}


def main(argv: list) -> int:
    """``python3 -I -S -c SOURCE URL TIMEOUT``: print the answer as one JSON line."""
    url, timeout = argv[0], float(argv[1])
    print(json.dumps(fetch(url, timeout)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
