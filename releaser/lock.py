"""The per-environment lock on the central repository.

``mkdir`` is atomic on every filesystem and over SSH, so the lock is a
directory ``locks/ENV.lock`` holding ``owner.json`` (who, where, since when,
doing what).  A lock left by a run that died on this same machine (its pid is
gone) is taken over, so ``kill -9`` never strands an environment; a lock
held by a live run, or by another machine, is reported with its owner.
"""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timezone

from .central import CentralRepository
from .errors import LockHeld
from .processes import pid_alive


@dataclass
class EnvironmentLock:
    central: CentralRepository
    env: str
    command: str
    taken_over: dict | None = None

    @property
    def path(self) -> str:
        return self.central.path("locks", f"{self.env}.lock")

    def _owner(self) -> dict:
        return {"user": getpass.getuser(), "host": socket.gethostname(), "pid": os.getpid(),
                "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "command": self.command}

    def acquire(self) -> "EnvironmentLock":
        self.central.runner.run(["mkdir", "-p", "--", self.central.path("locks")])
        for _ in range(2):
            if self.central.runner.run(["mkdir", "--", self.path], check=False).ok:
                self.central.write_json(f"{self.path}/owner.json", self._owner())
                return self
            owner = self.central.read_json(f"{self.path}/owner.json", {}) or {}
            if not _is_stale(owner):
                raise LockHeld(
                    f"{self.env} is locked by {owner.get('user', '?')}@{owner.get('host', '?')} "
                    f"pid {owner.get('pid', '?')} since {owner.get('since', '?')} "
                    f"({owner.get('command', '?')}); wait for it to finish, or if that run "
                    f"is dead, remove {self.path} on the central repository host")
            self.taken_over = owner
            self.central.runner.run(["rm", "-rf", "--", self.path])
        raise LockHeld(f"{self.env}: could not take the lock at {self.path}")

    def release(self) -> None:
        self.central.runner.run(["rm", "-rf", "--", self.path], check=False)

    def __enter__(self) -> "EnvironmentLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _is_stale(owner: dict) -> bool:
    """A lock whose owner ran on this machine and whose process is gone."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return not owner  # an empty or unreadable owner: the holder died mid-acquire
    return not pid_alive(owner["pid"])
