"""The per-environment lock on the central repository.

The lock is the file ``locks/ENV.lock`` holding its owner record (who, where,
since when, doing what, and a random token).  It is exclusive by
construction: the owner record is first written in full under a private name,
``locks/.ENV.lock.TOKEN`` (the *handle*), and the lock is then taken by
hard-linking the handle to ``ENV.lock`` (``ln -T``).  ``link(2)`` is atomic
and never replaces anything, locally and over SSH alike, so the lock never
exists without its owner, and of two runs exactly one gets it.

A run releases only a lock that holds its own token.  A lock is *stale*, and
taken over, when its lease has expired (from any machine: ``expires`` in the
owner record) or its run died on this same machine (its pid is gone), so
``kill -9`` never strands an environment: the dead run's handle is removed
first (``rm`` succeeds for one caller only, so one run alone claims it), and
the claimer then renames a link of its own handle over ``ENV.lock``.  The
takeover is recorded in the environment's ledger.  A lock whose lease is valid
and whose run is not known dead, or with no owner record (left by an older
releaser), is reported with what is known of its owner and never removed.

The lease.  A run's owner record carries ``expires`` (now + ``[central]
lock_lease``), and a daemon thread renews it every lease/3 while the run
holds the lock: it writes a new record with the same token under a private
name (``.ENV.lock.TOKEN.renew``) and renames it over ``ENV.lock`` (``mv -T``)
if ``ENV.lock`` still holds the token.  The race: between that check and the
rename, another run could take the lock over, and the rename would then
replace the new holder's record.  A takeover happens only once the lease has
expired, so the renewer renames only while at least a third of the lease is
left (it gives up, and says so, otherwise): a check-and-rename that takes
less than lease/3, with clocks within lease/3 of each other, can never
overlap a takeover.  After each renewal it reads the lock back; a lock no
longer its own (broken by an operator) stops the renewals and is reported
as lost.  ``ENV.lock`` is then no longer a link of the handle; the handle
stays the run's claim ticket (a takeover removes it) until release.

A maintenance window (``releaser lock acquire ENV --message M --lease 2h``)
is a lock held by no process (``pid`` null): nothing renews it, its lease is
the window, and only its owner (same user@host, or its token) releases it
early; anyone else needs ``--break REASON``, which is recorded.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from releaser.central.repository import CentralRepository
from releaser.errors import CommandError, LockHeld, UsageError
from releaser.processes import pid_alive

#: How many times acquire re-reads a lock that changes under it before giving up.
ATTEMPTS = 6
#: Pause between those attempts: another run is finishing a takeover or release.
RETRY_PAUSE = 0.2
#: The lease of a run's lock when ``[central] lock_lease`` is not set, in seconds.
DEFAULT_LEASE = 120.0


@dataclass
class EnvironmentLock:
    central: CentralRepository
    env: str
    command: str
    #: Seconds the owner record stays valid unless renewed.
    lease: float = DEFAULT_LEASE
    #: A maintenance window (``lock acquire``): no process holds it, nothing renews it.
    message: str | None = None
    maintenance: bool = False
    #: The owner record of a dead run whose lock this run took over, if any.
    taken_over: dict | None = None
    #: Why the renewals stopped while the lock was held (None: they did not).
    lost: str | None = None
    _token: str | None = field(default=None, repr=False)
    _renewer: threading.Thread | None = field(default=None, repr=False)
    _stop_renewing: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def path(self) -> str:
        return self.central.path("locks", f"{self.env}.lock")

    def _handle(self, token: str) -> str:
        return self.central.path("locks", f".{self.env}.lock.{token}")

    @property
    def token(self) -> str | None:
        """This lock's token while held (a maintenance window's owner keeps it)."""
        return self._token

    def _owner(self, token: str, since: str | None = None) -> dict:
        now = time.time()
        return {"user": getpass.getuser(), "host": socket.gethostname(),
                "pid": None if self.maintenance else os.getpid(),
                "since": since or _iso(now), "expires": _iso(now + self.lease, "milliseconds"),
                "lease": self.lease, "message": self.message,
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
            if self.maintenance:
                _record(self.central, self.env, "lock-acquired", why=self.message,
                        lease=self.lease, command=self.command)
        except BaseException:
            self.release()
            raise
        if not self.maintenance:
            self._start_renewing(token)
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
            why = _stale_reason(owner)
            if self._take_over(owner, handle):
                self.taken_over = {k: v for k, v in owner.items() if k != "token"}
                self.taken_over["why"] = why
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

    # --- the lease -------------------------------------------------------------
    def _start_renewing(self, token: str) -> None:
        self._stop_renewing.clear()
        self._renewer = threading.Thread(target=self._renew_loop, args=(token,),
                                         name=f"lock-lease-{self.env}", daemon=True)
        self._renewer.start()

    def _renew_loop(self, token: str) -> None:
        since = (self._read_owner_quietly() or {}).get("since")
        expires = time.time() + self.lease
        while not self._stop_renewing.wait(self.lease / 3):
            try:
                expires = self.renew(token, since, expires)
            except (CommandError, OSError) as exc:
                self.lost = f"renewing the lease failed: {exc}"
            if self.lost:
                return

    def renew(self, token: str, since: str | None, expires: float) -> float:
        """Extend the lease of the lock holding ``token``; the new expiry (as time.time()).

        Renews only while a third of the lease is left (see the module's note on
        the race) and only a lock still holding ``token``; sets ``lost`` otherwise.
        """
        if time.time() > expires - self.lease / 3:
            self.lost = "the lease ran too short to renew safely (the run was stalled)"
            return expires
        record = self._owner(token, since)
        fresh = f"{self._handle(token)}.renew"
        self.central.write_json(fresh, record)
        try:
            if (self._read_owner_quietly() or {}).get("token") != token:
                self.lost = "the lock is no longer this run's (broken or taken over)"
                return expires
            self.central.runner.run(["mv", "-T", "--", fresh, self.path])
        finally:
            self.central.runner.run(["rm", "-f", "--", fresh], check=False)
        if (self._read_owner_quietly() or {}).get("token") != token:
            self.lost = "the lock is no longer this run's (broken or taken over)"
        return _epoch(record["expires"])

    def _stop_renewal(self) -> None:
        self._stop_renewing.set()
        renewer, self._renewer = self._renewer, None
        if renewer is not None and renewer is not threading.current_thread():
            renewer.join()

    def release(self) -> None:
        """Give the lock back, only if it still holds this run's token."""
        self._stop_renewal()
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
        ledger.event("lock-taken-over", command=self.command, stale=self.taken_over,
                     why=self.taken_over.get("why"), user=getpass.getuser(),
                     host=socket.gethostname())
        ledger.save()

    # --- messages ----------------------------------------------------------------
    def _held_message(self, owner: dict) -> str:
        return (f"{self.env} is locked by {describe(owner)}; wait for it to finish, or if "
                f"that run is dead, wait for its lease to expire or break it with `releaser "
                f"lock release {self.env} --break REASON`")

    def _ownerless_message(self, what: str) -> str:
        return (f"{self.env} is locked: {self.path} {what}; if no releaser run is active on "
                f"{self.env}, remove it by hand (rm -r {self.path} on the central repository "
                "host)")


# --- the operator's side: ``releaser lock status|release`` ---------------------------
def lock_status(central: CentralRepository, env: str) -> dict | None:
    """The owner record of ``env``'s lock (with ``stale``: why it may be taken
    over, or None), or None when unlocked.  An unreadable lock is LockHeld."""
    owner = EnvironmentLock(central, env, "lock status")._read_owner()
    if owner is not None:
        owner = {**owner, "stale": _stale_reason(owner)}
    return owner


def release_own(central: CentralRepository, env: str, token: str | None = None) -> dict:
    """End this operator's maintenance window early; the owner record it removed.

    Own means: a window (held by no process) opened by this user on this host,
    or whose token is ``token``.  Anything else is refused: breaking another's
    lock needs ``break_lock`` and a reason.
    """
    owner = lock_status(central, env)
    if owner is None:
        raise UsageError(f"{env} is not locked")
    mine = (owner.get("user") == getpass.getuser() and owner.get("host") == socket.gethostname()
            and owner.get("pid", 0) is None)
    if not (mine or (token is not None and owner.get("token") == token)):
        raise LockHeld(f"{env} is locked by {describe(owner)}: not your maintenance window; "
                       f"break it with `releaser lock release {env} --break REASON`")
    _remove(central, env, owner)
    _record(central, env, "lock-released", owner=_public(owner))
    return owner


def break_lock(central: CentralRepository, env: str, reason: str) -> dict | None:
    """Remove ``env``'s lock, whoever holds it, for ``reason`` (recorded in the ledger).

    A live run whose lock is broken finds out at its next renewal and stops
    renewing; what it does meanwhile is the breaker's responsibility, hence
    the reason.  Returns the owner record removed (None: a lock with no
    readable owner record, removed as well).
    """
    if not reason or not reason.strip() or not reason.isprintable():
        raise UsageError("--break needs a reason, one non-empty line (it is recorded in "
                         "the ledger)")
    lock = EnvironmentLock(central, env, "lock release --break")
    try:
        owner = lock._read_owner()
    except LockHeld:  # an older releaser's lock, or a damaged record
        central.runner.run(["rm", "-rf", "--", lock.path])
        _record(central, env, "lock-broken", reason=reason, owner=None)
        return None
    if owner is None:
        raise UsageError(f"{env} is not locked")
    _remove(central, env, owner)
    _record(central, env, "lock-broken", reason=reason, owner=_public(owner))
    return owner


def _remove(central: CentralRepository, env: str, owner: dict) -> None:
    """Remove the lock ``owner`` holds: its handle first (the claim a takeover
    also makes, so no takeover of it is half done meanwhile), then the lock if
    it still holds that owner's token."""
    lock = EnvironmentLock(central, env, "lock release")
    token = owner.get("token")
    if isinstance(token, str) and _claimable(owner):
        central.runner.run(["rm", "-f", "--", lock._handle(token)])
    if (lock._read_owner_quietly() or {}).get("token") == token:
        central.runner.run(["rm", "-f", "--", lock.path])


def _public(owner: dict) -> dict:
    """An owner record without its token (the token lets one release the lock)."""
    return {k: v for k, v in owner.items() if k not in ("token", "stale")}


def _record(central: CentralRepository, env: str, kind: str, **info) -> None:
    from releaser.central.ledger import Ledger

    ledger = Ledger.load(central, env)
    ledger.event(kind, user=getpass.getuser(), host=socket.gethostname(), **info)
    ledger.save()


def _parse_owner(text: str) -> dict | None:
    try:
        owner = json.loads(text)
    except ValueError:
        return None
    return owner if isinstance(owner, dict) and owner else None


def describe(owner: dict) -> str:
    """Who holds a lock, since when, doing what, why, and until when, for messages."""
    pid = owner.get("pid", "?")
    held_by = "(maintenance window)" if pid is None else f"pid {pid}"
    text = (f"{owner.get('user', '?')}@{owner.get('host', '?')} {held_by} "
            f"({owner.get('command', '?')}) for {_age(owner.get('since'))}, since "
            f"{owner.get('since', '?')}")
    if owner.get("message"):
        text += f": {owner['message']!r}"
    if owner.get("expires"):
        text += f"; lease until {owner['expires']}"
    return text


def _claimable(owner: dict) -> bool:
    """The owner record carries a token (every lock of this releaser does) of the
    form its handle's name takes."""
    token = owner.get("token")
    return isinstance(token, str) and token.isalnum() and token.isascii()


def _stale_reason(owner: dict | None) -> str | None:
    """Why ``owner``'s lock may be taken over: its lease expired (seen from any
    machine), or its run died on this machine; None while it is live."""
    if not owner or not _claimable(owner):
        return None
    try:
        expires = _epoch(owner["expires"])
    except (KeyError, TypeError, ValueError):
        expires = None
    if expires is not None and time.time() >= expires:
        return f"lease expired at {owner['expires']}"
    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int) \
            and not isinstance(owner.get("pid"), bool) and not pid_alive(owner["pid"]):
        return f"pid {owner['pid']} is gone"
    return None


def _is_stale(owner: dict) -> bool:
    return _stale_reason(owner) is not None


def _iso(epoch: float, spec: str = "seconds") -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec=spec)


def _epoch(iso: str) -> float:
    then = datetime.fromisoformat(iso)
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    return then.timestamp()


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
