"""The release ledger of an environment: what was published, what each node
runs, what was healthy, every event in order.

Stored on the central repository as ``ledger/ENV.json`` and rewritten
atomically while the environment's lock is held, so every run sees the
whole, consistent history of the runs before it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from releaser.build import versions as versioning
from releaser.central.repository import CentralRepository
from releaser.errors import ReleaserError

#: A release's state in one environment.
PUBLISHED, HEALTHY, FAILED, WITHDRAWN = "published", "healthy", "failed", "withdrawn"
#: A promote stopped by the operator (SIGINT, SIGTERM) before every node was started;
#: its ``interrupted`` event says which nodes were done.  The next promote finishes it.
INTERRUPTED = "interrupted"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Ledger:
    central: CentralRepository
    env: str
    data: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def path(self) -> str:
        return self.central.path("ledger", f"{self.env}.json")

    @classmethod
    def load(cls, central: CentralRepository, env: str) -> "Ledger":
        ledger = cls(central, env)
        ledger.data = central.read_json(ledger.path, None) or {}
        ledger.data.setdefault("releases", {})
        ledger.data.setdefault("nodes", {})
        ledger.data.setdefault("events", [])
        return ledger

    def save(self) -> None:
        with self._lock:
            self.central.write_json(self.path, self.data)

    def journal(self, node: str, **info) -> None:
        """Record a node's phase and write the ledger at once (safe from worker threads).

        This is the per-node journal: after a crash or ``kill -9`` the next
        run reads the phase each node reached.
        """
        with self._lock:
            entry = self.data["nodes"].setdefault(node, {})
            entry.update(info, at=now())
            self.data["events"].append({"at": now(), "kind": "node", "node": node, **info})
            self.central.write_json(self.path, self.data)

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
        return self.data["releases"].setdefault(key, {"first_seen": now()})

    def set_release(self, version: str, state: str, **info) -> None:
        entry = self._entry(version)
        entry.update(info, state=state, updated=now())
        if state == HEALTHY:
            entry["healthy_at"] = now()
        self.event("release", version=version, state=state, **info)

    def note_release(self, version: str, **info) -> None:
        """Add facts to a release's entry without changing its state."""
        self._entry(version).update(info)
        self.event("release-note", version=version, **info)

    @property
    def current(self) -> str | None:
        """The version every node of the environment should run."""
        return self.data.get("current")

    def set_current(self, version: str, reason: str) -> None:
        self.data["current"] = version
        self.event("current", version=version, reason=reason)

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
        return [e["version"] for e in self.data["events"] if e["kind"] == "current"]

    def ever_healthy(self) -> list[str]:
        return sorted((v for v, e in self.data["releases"].items() if e.get("healthy_at")),
                      key=_version_key)

    # --- nodes ---------------------------------------------------------------
    def node(self, name: str) -> dict:
        return self.data["nodes"].get(name, {})

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
            self.data["events"].append({"at": now(), "kind": kind, "node": node, **info})
            self.central.write_json(self.path, self.data)

    # --- events --------------------------------------------------------------
    def event(self, kind: str, **info) -> None:
        self.data["events"].append({"at": now(), "kind": kind, **info})

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
