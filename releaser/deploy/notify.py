"""Webhook notifications of a promote's and a rollback's progress.

Each event (start, each stage, halt, automatic rollback, interruption,
finish) is POSTed as JSON to every URL of ``[environments.NAME.notify]
webhooks``, in the shape Slack and Mattermost incoming webhooks accept: a
``text`` line for people, and the same facts under ``releaser`` for machines.

A notification must never fail a rollout nor hold it up: events go on a queue
that one background thread delivers in order (each attempt bounded by
``timeout``, retried ``retries`` times), the run only enqueues them, and at
its end waits at most ``timeout`` for what is still queued; anything left is
abandoned and, with every failed delivery, reported as a warning.

No secret leaves this way: a payload carries only the facts given to
``send`` (environment, command, version, nodes, outcome, who), never the
configuration, and the webhook URLs themselves (which often embed a token)
appear in the warnings as scheme://host:port only.
"""

from __future__ import annotations

import getpass
import json
import queue
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import urlsplit

from releaser.config import NotifyConfig

#: Pause before retry N (times N): a receiver that is restarting gets a moment.
RETRY_PAUSE = 0.2
_DONE = object()


@dataclass
class Delivery:
    """What became of the events sent to one webhook."""

    url: str
    delivered: int = 0
    failed: int = 0
    last_error: str = ""

    @property
    def where(self) -> str:
        """The URL without path and query: those often hold the webhook's token."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


@dataclass
class Notifier:
    """Sends one run's events to the environment's webhooks in the background.

    Used as a context manager around the run: leaving it with an exception
    sends an ``error`` event, then waits (at most ``timeout``) for the queue.
    """

    config: NotifyConfig
    env: str
    command: str
    deliveries: list[Delivery] = field(default_factory=list)
    abandoned: int = 0
    _queue: queue.Queue = field(default_factory=queue.Queue, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.deliveries = [Delivery(url) for url in self.config.webhooks]
        if self.deliveries:
            self._thread = threading.Thread(target=self._deliver_all, daemon=True,
                                            name=f"notify-{self.env}")
            self._thread.start()

    def __enter__(self) -> "Notifier":
        return self

    def __exit__(self, kind, exc, _tb) -> None:
        if exc is not None:
            self.send("error", f"stopped by an error: {type(exc).__name__}",
                      error=type(exc).__name__)
        self.close()

    # --- the run's side ----------------------------------------------------------
    def send(self, event: str, text: str, **facts) -> None:
        """Queue ``event`` (``text`` for people, ``facts`` plain JSON values); never blocks."""
        if self._thread is None:
            return
        self._queue.put(self.payload(event, text, **facts))

    def payload(self, event: str, text: str, **facts) -> dict:
        details = {"event": event, "env": self.env, "command": self.command,
                   "user": getpass.getuser(), "host": socket.gethostname(),
                   "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **facts}
        return {"text": f"releaser {self.command} {self.env}: {text}", "releaser": details}

    def close(self) -> None:
        """Wait at most ``timeout`` for the queued events; count what is left as abandoned."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(_DONE)
        thread.join(self.config.timeout)
        if thread.is_alive():
            self.abandoned = sum(1 for item in list(self._queue.queue) if item is not _DONE) + 1

    def problems(self) -> list[str]:
        """One warning per webhook that missed events, and for events abandoned at the end."""
        lines = [f"notify: {d.where}: {d.failed} event(s) not delivered ({d.last_error})"
                 for d in self.deliveries if d.failed]
        if self.abandoned:
            lines.append(f"notify: {self.abandoned} event(s) still unsent when the run ended "
                         "were dropped")
        return lines

    # --- the background thread ------------------------------------------------------
    def _deliver_all(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            body = json.dumps(item).encode()
            for delivery in self.deliveries:
                self._deliver(delivery, body)

    def _deliver(self, delivery: Delivery, body: bytes) -> None:
        for attempt in range(self.config.retries + 1):
            if attempt:
                time.sleep(RETRY_PAUSE * attempt)
            try:
                post(delivery.url, body, self.config.timeout)
            except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts are OSError
                delivery.last_error = _reason(exc)
                continue
            delivery.delivered += 1
            return
        delivery.failed += 1


def post(url: str, body: bytes, timeout: float) -> None:
    """POST ``body`` as JSON; an answer other than 2xx is an error (HTTPError)."""
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "releaser"})
    with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 - http(s) only
        answer.read()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__
