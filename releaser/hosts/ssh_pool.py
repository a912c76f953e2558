"""One SSH connection per host for the length of a run (``shared_connections``).

Why: each new connection costs a TCP and SSH handshake and a key exchange
(~0.1 s); a promote reaches the central host from the doctor's check, the
promote itself and every node's worker, and a node from its plan and its
rollout.  Within ``shared_connections`` ``runner_for`` hands every user of a
host the same ``SSHRunner`` (its commands run side by side, one channel each);
the pool closes them all when the run ends.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

from releaser.hosts.ssh import HostSpec, SSHRunner


class ConnectionPool:
    """One SSHRunner per host (per ``HostSpec``) for the length of a run.

    Thread-safe: the fleet's workers ask for runners concurrently and share
    the central's.
    """

    def __init__(self) -> None:
        self._runners: dict[HostSpec, SSHRunner] = {}
        self._lock = threading.Lock()

    def runner(self, spec: HostSpec) -> SSHRunner:
        """The pool's runner for ``spec``, made on first ask."""
        with self._lock:
            runner = self._runners.get(spec)
            if runner is None:
                runner = self._runners[spec] = SSHRunner(spec, shared=True)
            return runner

    def close(self) -> None:
        """Close every connection of the pool."""
        with self._lock:
            runners, self._runners = list(self._runners.values()), {}
        for runner in runners:
            runner.disconnect()


_pool: ConnectionPool | None = None
_pool_users = 0
_pool_lock = threading.Lock()


@contextlib.contextmanager
def shared_connections() -> Iterator[ConnectionPool]:
    """Within the block, ``runner_for`` hands out one runner per host; closed at its end.

    Process-wide, so the fleet's worker threads see it too; nested or
    concurrent blocks share one pool, closed when the last of them ends.
    """
    global _pool, _pool_users
    with _pool_lock:
        if _pool is None:
            _pool = ConnectionPool()
        pool = _pool
        _pool_users += 1
    try:
        yield pool
    finally:
        with _pool_lock:
            _pool_users -= 1
            last = _pool_users == 0
            if last:
                _pool = None
        if last:
            pool.close()


def runner_for(spec: HostSpec) -> SSHRunner:
    """The runner for ``spec``: the pool's within ``shared_connections``, else a new one."""
    pool = _pool
    return pool.runner(spec) if pool is not None else SSHRunner(spec)
