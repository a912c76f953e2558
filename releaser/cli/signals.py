"""SIGINT and SIGTERM while a promote or a rollback works on nodes.

The first one asks the run to stop (``releaser.deploy.interrupts``): no
further node is started, the nodes in flight finish (their commands run in
sessions of their own, so a Ctrl-C at the terminal did not reach them:
``releaser.hosts.runner``), the interruption goes to the ledger, the lock is
released, and the command exits 130.

A second one stops at once, as ``kill -9`` would: commands in flight on the
nodes run on to their end, the lock is left for the next run to take over,
and the node journal tells that run what to finish.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from types import FrameType
from typing import Iterator

from releaser.deploy.interrupts import StopRequest
from releaser.exitcodes import INTERRUPTED

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """A StopRequest that SIGINT and SIGTERM set, for the duration of the block.

    Handlers can only be installed from the main thread; elsewhere (a caller
    embedding releaser) the request is returned unset and signals keep their
    handlers.
    """
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handle(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            _say(f"releaser: {name} again: stopping at once; what runs on the nodes finishes "
                 "by itself, and the next run finishes the job\n")
            os._exit(INTERRUPTED)
        stop.request(name)
        _say(f"releaser: {name}: no further node will be started; finishing the nodes in "
             "flight (interrupt again to stop at once)\n")

    previous = {signum: signal.signal(signum, handle) for signum in SIGNALS}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _say(text: str) -> None:
    """Write to stderr from a signal handler: one system call, no Python buffer."""
    try:
        os.write(2, text.encode())
    except OSError:
        pass
