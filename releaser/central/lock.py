"""The per-environment lock on the central repository.

The lock is the file ``locks/ENV.lock`` holding its owner record (who, where,
since when, doing what, and a random token).  It is exclusive by
construction: the owner record is first written in full under a private name,
``locks/.ENV.lock.TOKEN`` (the *handle*), and the lock is then taken by
hard-linking the handle to ``ENV.lock`` (``ln -T``).  ``link(2)`` is atomic
and never replaces anything, locally and over SSH alike, so the lock never
exists without its owner, and of two runs exactly one gets it.

A run releases only a lock that holds its own token.  A lock left by a run
that died on this same machine (its pid is gone) is taken over, so ``kill -9``
never strands an environment: the dead run's handle is removed first (``rm``
succeeds for one caller only, so one run alone claims it), and the claimer then
renames a link of its own handle over ``ENV.lock``.  The takeover is recorded in
the environment's ledger.  A lock held by a live
run, by another machine, or with no owner record (left by an older releaser)
is reported with what is known of its owner and never removed.
"""

from __future__ import annotations

import getpass
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from releaser.central.repository import CentralRepository
from releaser.errors import CommandError, LockHeld
from releaser.processes import pid_alive

#: How many times acquire re-reads a lock that changes under it before giving up.
ATTEMPTS = 6
#: Pause between those attempts: another run is finishing a takeover or release.
RETRY_PAUSE = 0.2


@dataclass
class EnvironmentLock:
    central: CentralRepository
    env: str
    command: str
    #: The owner record of a dead run whose lock this run took over, if any.
    taken_over: dict | None = None
    _token: str | None = field(default=None, repr=False)

    @property
    def path(self) -> str:
        return self.central.path("locks", f"{self.env}.lock")

    def _handle(self, token: str) -> str:
        return self.central.path("locks", f".{self.env}.lock.{token}")

    def _owner(self, token: str) -> dict:
        return {"user": getpass.getuser(), "host": socket.gethostname(), "pid": os.getpid(),
                "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "command": self.command, "token": token}

    # --- taking and giving back ------------------------------------------------
    def acquire(self) -> "EnvironmentLock":
        """Take the lock, or raise LockHeld naming its holder.

        An unwritable central repository is a CommandError (or OSError), never
        LockHeld: only an existing lock means "held".
        """
        token = uuid.uuid4().hex
        handle = self._handle(token)
        self.central.write_json(handle, self._owner(token))
        try:
            self._acquire(handle)
        except BaseException:
            self.central.runner.run(["rm", "-f", "--", handle], check=False)
            raise
        self._token = token
        try:
            if self.taken_over:
                self._record_takeover()
        except BaseException:
            self.release()
            raise
        return self

    def _acquire(self, handle: str) -> None:
        failure = None
        for attempt in range(ATTEMPTS):
            if attempt:
                time.sleep(RETRY_PAUSE)
            linked = self.central.runner.run(["ln", "-T", "--", handle, self.path], check=False)
            if linked.ok:
                return
            if not self.central.exists(self.path):
                failure = linked  # not "exists": unwritable, or released meanwhile: retry
                continue
            failure = None
            owner = self._read_owner()
            if owner is None:
                continue  # released between our link and our read
            if not _is_stale(owner):
                raise LockHeld(self._held_message(owner))
            if self._take_over(owner, handle):
                self.taken_over = {k: v for k, v in owner.items() if k != "token"}
                return
        if failure is not None:
            raise CommandError(failure.argv, failure.returncode, failure.stdout,
                               failure.stderr, self.central.runner.host)
        owner = self._read_owner()
        if owner is None:
            raise LockHeld(f"{self.env}: could not take the lock at {self.path}: other runs "
                           "kept taking it meanwhile; try again")
        raise LockHeld(self._held_message(owner) + " (that run is dead and another run is "
                       "taking its lock over, or died doing so)")

    def _take_over(self, owner: dict, handle: str) -> bool:
        """Replace the stale lock of ``owner`` by ours; False if another run claimed it first.

        Claiming (removing the dead run's handle) succeeds for one run only, and
        a lock whose handle is gone is changed by nobody else: the claimer then
        renames a link of its own handle over it, so the lock is never absent
        and never anyone else's in between.
        """
        claimed = self.central.runner.run(["rm", "--", self._handle(owner["token"])],
                                          check=False)
        if not claimed.ok:
            return False
        swap = f"{handle}.swap"
        self.central.runner.run(["ln", "-T", "--", handle, swap])
        try:
            self.central.runner.run(["mv", "-T", "--", swap, self.path])
        finally:
            self.central.runner.run(["rm", "-f", "--", swap], check=False)
        return True

    def release(self) -> None:
        """Give the lock back, only if it still holds this run's token."""
        token, self._token = self._token, None
        if token is None:
            return
        owner = self._read_owner_quietly()
        if owner is not None and owner.get("token") == token:
            self.central.runner.run(["rm", "-f", "--", self.path], check=False)
        self.central.runner.run(["rm", "-f", "--", self._handle(token)], check=False)

    def __enter__(self) -> "EnvironmentLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # --- reading the owner -----------------------------------------------------
    def _read_owner(self) -> dict | None:
        """The lock's owner record; None if there is no lock.

        A lock without a readable owner record (an older releaser's lock
        directory, a damaged file) is held by someone unknown: LockHeld, with
        how to remove it by hand.
        """
        result = self.central.runner.run(["cat", "--", self.path], check=False)
        if result.ok:
            owner = _parse_owner(result.stdout)
            if owner is None:
                raise LockHeld(self._ownerless_message("holds no readable owner record"))
            return owner
        if not self.central.exists(self.path):
            return None
        if not self.central.runner.run(["test", "-d", self.path], check=False).ok:
            raise CommandError(result.argv, result.returncode, result.stdout, result.stderr,
                               self.central.runner.host)
        # An older releaser's lock: a directory holding owner.json, or nothing yet.
        legacy = _parse_owner(self.central.read_text(f"{self.path}/owner.json") or "")
        if legacy is None:
            raise LockHeld(self._ownerless_message("is a lock directory with no owner record"))
        raise LockHeld(self._held_message(legacy) + " (a lock of an older releaser: if that run "
                       f"is dead, remove it with rm -r {self.path} on the central host)")

    def _read_owner_quietly(self) -> dict | None:
        try:
            return self._read_owner()
        except LockHeld:
            return None

    def _record_takeover(self) -> None:
        from releaser.central.ledger import Ledger

        ledger = Ledger.load(self.central, self.env)
        ledger.event("lock-taken-over", command=self.command, stale=self.taken_over)
        ledger.save()

    # --- messages ----------------------------------------------------------------
    def _held_message(self, owner: dict) -> str:
        return (f"{self.env} is locked by {owner.get('user', '?')}@{owner.get('host', '?')} "
                f"pid {owner.get('pid', '?')} ({owner.get('command', '?')}) for "
                f"{_age(owner.get('since'))}, since {owner.get('since', '?')}; wait for it to "
                f"finish, or if that run is dead, remove {self.path} on the central "
                "repository host")

    def _ownerless_message(self, what: str) -> str:
        return (f"{self.env} is locked: {self.path} {what}; if no releaser run is active on "
                f"{self.env}, remove it by hand (rm -r {self.path} on the central repository "
                "host)")


def _parse_owner(text: str) -> dict | None:
    import json

    try:
        owner = json.loads(text)
    except ValueError:
        return None
    return owner if isinstance(owner, dict) and owner else None


def _is_stale(owner: dict) -> bool:
    """A lock whose owner ran on this machine, whose process is gone, and that can be
    claimed (it carries a token: every lock of this releaser does)."""
    token = owner.get("token")
    if not isinstance(token, str) or not token.isalnum() or not token.isascii():
        return False
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    return not pid_alive(owner["pid"])


def _age(since) -> str:
    """How long ago ``since`` (ISO 8601) was, as ``1h02m03s``; ``?`` when unknown."""
    try:
        then = datetime.fromisoformat(since)
    except (TypeError, ValueError):
        return "?"
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    seconds = max(0, int((datetime.now(timezone.utc) - then).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours}h{minutes:02d}m{secs:02d}s" if hours else
            f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")
