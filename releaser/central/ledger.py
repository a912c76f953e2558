"""The release ledger of an environment: what was published, what each node
runs, what was healthy, and every event in order.

Two files on the central repository:

- ``ledger/ENV.jsonl``, the audit log: every event, one JSON line each, only
  ever appended (``releaser.central.audit``).  Each says who, when, what, why
  and on which nodes; ``releaser history`` shows it.
- ``ledger/ENV.json``, the current state: the releases and their state, each
  node's last phase and the intent of an install under way (the journal a
  killed run is finished from), the version the environment is on, the order
  it went through versions.  Small (it holds no events) and rewritten
  atomically while the environment's lock is held.

Events are kept in memory until ``save`` (the outcome of a run is one save),
except a node's journal and intents, which are written at once: a run killed
after them leaves them for the next.  A save appends the events first, then
rewrites the state only if it changed, so recording an event (a lock broken
by an operator while the holder runs) never rewrites the state under the
holder.  An older ledger, one JSON document holding its events, is migrated on
first load: its events move to the log, a copy of it stays as ``ENV.v1.json``.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator

from releaser.build import versions as versioning
from releaser.central.audit import Actor, AuditLog, now
from releaser.central.repository import CentralRepository
from releaser.errors import CommandError, ReleaserError
from releaser.hosts.transfer import CORRUPT, NOT_PLACED

#: A release's state in one environment.
PUBLISHED, HEALTHY, FAILED, WITHDRAWN = "published", "healthy", "failed", "withdrawn"
#: A promote stopped by the operator (SIGINT, SIGTERM) before every node was started;
#: its ``interrupted`` event says which nodes were done.  The next promote finishes it.
INTERRUPTED = "interrupted"

#: The state file's format: 2 keeps the events in the audit log beside it.
STATE_FORMAT = 2
#: The versions the environment was put on, newest last, kept in the state for
#: rollback's "previous healthy version"; older ones stay in the audit log.
HISTORY_KEPT = 200


@dataclass
class Ledger:
    central: CentralRepository
    env: str
    data: dict = field(default_factory=dict)
    actor: Actor = field(default_factory=Actor.here)
    _pending: list = field(default_factory=list, repr=False)
    _dirty: bool = field(default=False, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _batching: bool = field(default=False, repr=False)

    @property
    def path(self) -> str:
        """The state file."""
        return self.central.path("ledger", f"{self.env}.json")

    @property
    def log(self) -> AuditLog:
        return AuditLog(self.central, self.env)

    @classmethod
    def load(cls, central: CentralRepository, env: str, actor: Actor | None = None) -> "Ledger":
        """The environment's state; ``actor`` (default: this user on this host) signs
        every event recorded through it."""
        ledger = cls(central, env, actor=actor or Actor.here())
        data = central.read_json(ledger.path, None) or {}
        if "events" in data:
            data = ledger._migrate(data)
        ledger.data = data
        for key in ("releases", "nodes"):
            data.setdefault(key, {})
        data.setdefault("history", [])
        data["format"] = STATE_FORMAT
        return ledger

    def _migrate(self, old: dict) -> dict:
        """An older ledger (one document with its events): the events go to the
        audit log (unless a concurrent migration put them there first), the
        document is kept as ``ENV.v1.json``, the state is rewritten without them."""
        events = [{"env": self.env, **e} for e in old["events"] if isinstance(e, dict)]
        self.central.write_json(self.central.path("ledger", f"{self.env}.v1.json"), old)
        if self.log.create_from(events):
            self.log.append([self._stamped("ledger-migrated", events=len(events))])
        state = {k: v for k, v in old.items() if k != "events"}
        state["history"] = [e["version"] for e in events if e.get("kind") == "current"
                            and e.get("version")][-HISTORY_KEPT:]
        state["format"] = STATE_FORMAT
        self.central.write_json(self.path, state)
        return state

    def save(self) -> None:
        """Append the events recorded since the last save, then the state if it changed."""
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        """The events, then the state if it changed, in one command (one round trip
        to an SSH central): the state's write runs only once the append succeeded."""
        pending, self._pending = self._pending, []
        append = self.log.append_step(pending)
        try:
            if self._dirty:
                self.central.write_json(self.path, self.data, first=append)
                self._dirty = False
            elif append is not None:
                self.central.runner.run(append[0], input=append[1])
        except CommandError as exc:
            if append is not None and exc.returncode not in (NOT_PLACED, CORRUPT):
                self._pending[:0] = pending  # not appended: kept for the next save
            raise
        except BaseException:
            self._pending[:0] = pending  # outcome unknown: an event is never dropped
            raise

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """The writes-at-once (journal, attempt notes) made in the block, as one write
        at its end.

        Why: a rollout journals a phase and notes what it did right after; one
        write (one round trip) keeps the two together, so a run killed between
        them cannot leave one without the other.  The ledger is held meanwhile
        (the block does no I/O): other threads' writes wait for it.
        """
        with self._lock:
            outer, self._batching = self._batching, True
            try:
                yield
            finally:
                self._batching = outer
            if not outer:
                self._flush()

    def _changed(self) -> None:
        self._dirty = True

    def journal(self, node: str, **info) -> None:
        """Record a node's phase and write the ledger at once (safe from worker threads).

        This is the per-node journal: after a crash or ``kill -9`` the next
        run reads the phase each node reached.
        """
        with self._lock:
            entry = self.data["nodes"].setdefault(node, {})
            entry.update(info, at=now(), by=f"{self.actor.user}@{self.actor.host}")
            self.event("node", node=node, **info)
            self._changed()
            if not self._batching:
                self._flush()

    # --- releases ------------------------------------------------------------
    def spelling(self, version: str) -> str | None:
        """``version`` as this ledger records it (Portage's equality), or None."""
        return versioning.find(version, self.data["releases"])

    def release(self, version: str) -> dict | None:
        known = self.spelling(version)
        return None if known is None else self.data["releases"][known]

    def _entry(self, version: str) -> dict:
        """The entry of ``version`` under the spelling already recorded, made if new."""
        key = self.spelling(version) or version
        self._changed()
        return self.data["releases"].setdefault(key, {"first_seen": now()})

    def set_release(self, version: str, state: str, **info) -> None:
        """A release's new state; ``nodes`` (the nodes concerned) goes to the event only."""
        nodes = info.pop("nodes", None)
        entry = self._entry(version)
        entry.update(info, state=state, updated=now())
        if state == HEALTHY:
            entry["healthy_at"] = now()
        self.event("release", version=version, state=state, **info,
                   **({"nodes": nodes} if nodes is not None else {}))

    def note_release(self, version: str, **info) -> None:
        """Add facts to a release's entry without changing its state."""
        self._entry(version).update(info)
        self.event("release-note", version=version, **info)

    @property
    def current(self) -> str | None:
        """The version every node of the environment should run."""
        return self.data.get("current")

    def set_current(self, version: str, reason: str, nodes: list[str] | None = None) -> None:
        """The environment is now on ``version`` (``reason``: promote, rollback)."""
        self.data["current"] = version
        self.data["history"] = (self.data["history"] + [version])[-HISTORY_KEPT:]
        self.data.pop("interrupted", None)
        self._changed()
        self.event("current", version=version, via=reason,
                   **({"nodes": nodes} if nodes is not None else {}))

    def record_interrupted(self, command: str, signal: str, done: dict, untouched: list[str],
                           **info) -> None:
        """An operator stopped a run: which nodes were done, which never started.

        Kept in the state until a run puts the environment on a version, so
        ``releaser status`` shows the unfinished run and its nodes.
        """
        self.data["interrupted"] = {"command": command, "signal": signal, "done": done,
                                    "untouched": untouched, "at": now(),
                                    "by": f"{self.actor.user}@{self.actor.host}", **info}
        self._changed()
        self.event("interrupted", command=command, signal=signal, done=done,
                   untouched=untouched, nodes=sorted([*done, *untouched]), **info)

    @property
    def interrupted(self) -> dict | None:
        """The run an operator stopped since the environment was last put on a version."""
        return self.data.get("interrupted")

    def record_schema(self, version: str, schema_version: int | None) -> None:
        """The schema version the app of ``version`` expects (rollback compares it)."""
        if schema_version is None:
            return
        with self._lock:
            self._entry(version)["schema_version"] = schema_version

    def schema_of(self, version: str) -> int | None:
        return (self.release(version) or {}).get("schema_version")

    def versions(self, state: str | None = None) -> list[str]:
        """Versions (oldest first by Portage's order) in ``state``, or all."""
        found = [v for v, e in self.data["releases"].items() if state is None or e["state"] == state]
        return sorted(found, key=_version_key)

    def current_history(self) -> list[str]:
        """Every version the environment was put on, oldest first (promote and rollback)."""
        return list(self.data["history"])

    def ever_healthy(self) -> list[str]:
        return sorted((v for v, e in self.data["releases"].items() if e.get("healthy_at")),
                      key=_version_key)

    # --- nodes ---------------------------------------------------------------
    def node(self, name: str) -> dict:
        return self.data["nodes"].get(name, {})

    def at_boot(self, node: str) -> str | None:
        """The service the rollout put in ``node``'s default runlevel, or None."""
        return self.node(node).get("at_boot")

    def set_at_boot(self, node: str, service: str) -> None:
        """``service`` is in ``node``'s default runlevel (written with the next save):
        later rollouts need not ask the host again."""
        with self._lock:
            self.data["nodes"].setdefault(node, {})["at_boot"] = service
            self._changed()

    # --- a node's attempt: the intent written before its install ---------------
    def begin_attempt(self, node: str, *, target: str, before: str | None, backups: dict,
                      process: dict | None = None) -> None:
        """Before a node's install: what it ran (version, service process), the target,
        the backups taken.  Written at once, so a run killed from here on leaves it for
        the next run to finish (``releaser.deploy.rollout``)."""
        attempt = {"target": target, "before": before, "backups": backups, "process": process,
                   "installed": False, "started": now()}
        self._attempt_write(node, "attempt-begin", attempt, lambda entry: entry.update(
            attempt=attempt))

    def note_attempt(self, node: str, **facts) -> None:
        """Add what the attempt has done (installed, rolling back...) and write at once."""
        self._attempt_write(node, "attempt-note", facts,
                            lambda entry: entry.setdefault("attempt", {}).update(facts))

    def end_attempt(self, node: str, outcome: str, detail: str = "") -> None:
        """The attempt is settled (healthy, rolled back, or never touched the node)."""
        def end(entry: dict) -> None:
            attempt = entry.pop("attempt", None) or {}
            entry["last_attempt"] = {**attempt, "outcome": outcome, "detail": detail,
                                     "ended": now()}
        self._attempt_write(node, "attempt-end", {"outcome": outcome}, end)

    def attempt(self, node: str) -> dict | None:
        """The attempt a run began on ``node`` and did not settle (it was killed), or None."""
        return self.node(node).get("attempt")

    def last_attempt(self, node: str) -> dict | None:
        """The last settled attempt on ``node`` (target, before, outcome, detail), or None."""
        return self.node(node).get("last_attempt")

    def in_flight(self) -> str | None:
        """The newest version an unsettled attempt left on some node, or None.

        Nodes may run it although it never became healthy there; ``current``
        is then still the version the environment was healthy on before it.
        A version withdrawn since (by ``releaser rollback``) is no longer in flight.
        """
        targets = [a["target"] for e in self.data["nodes"].values()
                   if (a := e.get("attempt")) and a.get("target")
                   and (self.release(a["target"]) or {}).get("state") != WITHDRAWN]
        return sorted(targets, key=_version_key)[-1] if targets else None

    def _attempt_write(self, node: str, kind: str, info: dict, change: Callable[[dict], None]) -> None:
        with self._lock:
            change(self.data["nodes"].setdefault(node, {}))
            self.event(kind, node=node, **info)
            self._changed()
            if not self._batching:
                self._flush()

    # --- events --------------------------------------------------------------
    def event(self, kind: str, **info) -> None:
        """Record an event (written by the next ``save``), signed by the ledger's actor."""
        with self._lock:
            self._pending.append(self._stamped(kind, **info))

    def _stamped(self, kind: str, **info) -> dict:
        return {"at": now(), "env": self.env, "kind": kind, **self.actor.stamp(), **info}

    def events(self, kind: str | None = None) -> list[dict]:
        """Every event of the audit log (of ``kind``), oldest first, then the unsaved ones."""
        with self._lock:
            found = self.log.read() + list(self._pending)
        return [e for e in found if kind is None or e.get("kind") == kind]

    def side_step(self, step: str, action: Callable[[], object]) -> str | None:
        """Run a step that comes after the outcome is saved (mask, retention).

        Its failure must not undo what the run established: the error is
        recorded as an event and returned as one line for the report, and the
        caller goes on.  None when the step succeeded.
        """
        try:
            action()
        except ReleaserError as exc:
            self.event("side-step-failed", step=step, error=str(exc))
            return f"{step} failed: {exc}"
        return None


_version_key = versioning.sort_key
