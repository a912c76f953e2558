"""``releaser history [ENV]``: what happened, who did it, why, on which nodes.

Read from the environments' audit logs (``releaser.central.audit``), merged in
time order, optionally from a moment on (``--since``: an ISO date or time, or
a duration back from now such as ``2h`` or ``7d``) and the newest N
(``--limit``).  Each event becomes one line for people; ``--json`` gives the
events as recorded.
"""

from __future__ import annotations

import heapq
from datetime import datetime, timedelta, timezone

from releaser.central.audit import AuditLog
from releaser.central.repository import CentralRepository
from releaser.config import validate
from releaser.errors import UsageError


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """A moment from ``--since``: ``2026-05-01``, ``2026-05-01T10:00``, or ``2h``/``7d`` ago."""
    now = now or datetime.now(timezone.utc)
    try:
        return now - timedelta(seconds=validate.duration(value))
    except validate.Invalid:
        pass
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise UsageError(f"--since {value!r}: give an ISO date or time (2026-05-01, "
                         "2026-05-01T10:00) or a duration back from now (30m, 2h, 7d)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _moment(event: dict) -> datetime:
    try:
        moment = datetime.fromisoformat(str(event.get("at")))
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def history(central: CentralRepository, envs: list[str], *, since: datetime | None = None,
            limit: int | None = None) -> list[dict]:
    """The events of ``envs``, oldest first: from ``since`` on, the newest ``limit``."""
    if limit is not None and limit < 1:
        raise UsageError("--limit must be at least 1")
    # Without --since only the last ``limit`` lines of each log can be among the newest.
    last = limit if since is None else None
    # Each log stays in the order it was written (the truth if clocks disagree);
    # the environments' logs are merged by time.
    logs = [[e for e in AuditLog(central, env).read(last=last)
             if since is None or _moment(e) >= since] for env in envs]
    events = list(heapq.merge(*logs, key=_moment))
    return events[-limit:] if limit else events


#: Facts shown after an event's kind, in this order, when the event carries them.
_FACTS = ("version", "state", "target", "bad", "node", "phase", "command", "signal")


def describe(event: dict) -> str:
    """One line: when, where, who, what, on which nodes, why."""
    who = f"{event.get('user', '?')}@{event.get('host', '?')}"
    facts = [f"{k}={event[k]}" for k in _FACTS if event.get(k) not in (None, "", [], {})]
    nodes = event.get("nodes")
    if isinstance(nodes, dict):
        nodes = sorted(nodes)
    if nodes:
        facts.append(f"nodes={','.join(map(str, nodes))}")
    if event.get("kind") == "lock-taken-over" and isinstance(event.get("stale"), dict):
        stale = event["stale"]
        facts.append(f"from={stale.get('user', '?')}@{stale.get('host', '?')}")
    why = event.get("why") or event.get("reason")
    line = (f"{event.get('at', '?')}  {event.get('env', '?')}  {who}  "
            f"{event.get('kind', '?')}  {' '.join(facts)}").rstrip()
    return f"{line}  why: {why}" if why else line
