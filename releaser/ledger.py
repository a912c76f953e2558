"""The release ledger of an environment: what was published, what each node
runs, what was healthy, every event in order.

Stored on the central repository as ``ledger/ENV.json`` and rewritten
atomically while the environment's lock is held, so every run sees the
whole, consistent history of the runs before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from . import versioning
from .central import CentralRepository

#: A release's state in one environment.
PUBLISHED, HEALTHY, FAILED, WITHDRAWN = "published", "healthy", "failed", "withdrawn"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Ledger:
    central: CentralRepository
    env: str
    data: dict = field(default_factory=dict)

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
        self.central.write_json(self.path, self.data)

    # --- releases ------------------------------------------------------------
    def release(self, version: str) -> dict | None:
        return self.data["releases"].get(version)

    def set_release(self, version: str, state: str, **info) -> None:
        entry = self.data["releases"].setdefault(version, {"first_seen": now()})
        entry.update(info, state=state, updated=now())
        if state == HEALTHY:
            entry["healthy_at"] = now()
        self.event("release", version=version, state=state, **info)

    @property
    def current(self) -> str | None:
        """The version every node of the environment should run."""
        return self.data.get("current")

    def set_current(self, version: str, reason: str) -> None:
        self.data["current"] = version
        self.event("current", version=version, reason=reason)

    def versions(self, state: str | None = None) -> list[str]:
        """Versions (oldest first by Portage's order) in ``state``, or all."""
        found = [v for v, e in self.data["releases"].items() if state is None or e["state"] == state]
        return sorted(found, key=_version_key)

    def ever_healthy(self) -> list[str]:
        return sorted((v for v, e in self.data["releases"].items() if e.get("healthy_at")),
                      key=_version_key)

    # --- nodes ---------------------------------------------------------------
    def node(self, name: str) -> dict:
        return self.data["nodes"].get(name, {})

    def set_node(self, name: str, **info) -> None:
        entry = self.data["nodes"].setdefault(name, {})
        entry.update(info, at=now())
        self.event("node", node=name, **info)

    # --- events --------------------------------------------------------------
    def event(self, kind: str, **info) -> None:
        self.data["events"].append({"at": now(), "kind": kind, **info})


def _version_key(version: str):
    from functools import cmp_to_key

    return cmp_to_key(versioning.compare)(version)
