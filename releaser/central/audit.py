"""An environment's audit log on the central repository: one JSON event per line,
only ever appended (``ledger/ENV.jsonl``).

Why append-only: the log of a long-lived environment grows without bound, and an
operator at night must be able to trust it.  Rewriting a whole document per
event costs more with every event and loses history to any bug in the
rewrite; an append writes only the new line.

How a line is appended, on a local or an SSH central alike: one ``dd`` that
opens the log with ``O_APPEND``, reads exactly the bytes sent on its stdin
(``iflag=fullblock``) and writes them with a single ``write(2)``, then
``fsync``s (``conv=fsync``).  One ``write`` with ``O_APPEND`` lands whole at the
end even when two processes append at once (a lock broken by an operator while
the holder still records), so lines never interleave.  Nothing is interpolated
into a shell: the path is an argv element, the events travel on stdin.

A line torn by a power loss mid-write is skipped when read, and the next
append ends it first (``APPEND_SCRIPT``, in the same command: no round trip
of its own), so the events after it stay whole.

Every event says who (``user``, ``host``), when (``at``), what (``kind`` and
its facts), why (``why``: the operator's ``--reason``, or what forced a takeover) and, where it
concerns nodes, which (``node`` or ``nodes``).
"""

from __future__ import annotations

import getpass
import json
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from releaser.central.repository import CentralRepository


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Actor:
    """Who acts, in which run and why: stamped on every event the run records."""

    user: str
    host: str
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    reason: str | None = None

    @classmethod
    def here(cls, reason: str | None = None) -> "Actor":
        """The operator running this process, on this machine."""
        return cls(getpass.getuser(), socket.gethostname(), reason=reason)

    def stamp(self) -> dict:
        stamp = {"user": self.user, "host": self.host, "run": self.run}
        if self.reason:
            stamp["why"] = self.reason
        return stamp


#: POSIX sh, run as ``sh -c APPEND_SCRIPT releaser-append LOG NBYTES``: end a last
#: line a power loss cut short (so the new events start a line of their own), then
#: append exactly NBYTES of stdin in one ``write(2)`` with ``O_APPEND`` and fsync.
APPEND_SCRIPT = """\
log=$1 n=$2
if [ -s "$log" ] && [ -n "$(tail -c 1 -- "$log")" ]; then printf '\\n' >> "$log" || exit 1; fi
exec dd of="$log" oflag=append conv=notrunc,fsync bs="$n" count=1 iflag=fullblock status=none
"""


def encode(event: dict) -> str:
    """One event as one line: compact, ASCII only (a byte count is a character count)."""
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=True) + "\n"


@dataclass
class AuditLog:
    central: CentralRepository
    env: str

    @property
    def path(self) -> str:
        return self.central.path("ledger", f"{self.env}.jsonl")

    def append(self, events: list[dict]) -> int:
        """Append ``events`` in one write; return the bytes written (0 for none)."""
        return self._write("".join(encode(e) for e in events))

    def append_step(self, events: list[dict]) -> tuple[list[str], str] | None:
        """The append of ``events`` as ``(argv, input)`` (None for none), for a caller
        that runs it in the same command as a write of its own (the ledger's state).

        The ``dd`` reads exactly its bytes of stdin (``iflag=fullblock``,
        ``count=1``), so whatever follows on that stdin is left to the next command.
        """
        return self._step("".join(encode(e) for e in events))

    def _step(self, data: str) -> tuple[list[str], str] | None:
        if not data:
            return None
        return ["sh", "-c", APPEND_SCRIPT, "releaser-append", self.path, str(len(data))], data

    def _write(self, data: str) -> int:
        step = self._step(data)
        if step is not None:
            self.central.runner.run(step[0], input=step[1])
        return len(data)

    def read(self, *, last: int | None = None) -> list[dict]:
        """The events, oldest first (only the ``last`` N when given).

        A line that does not parse (a torn write after a power loss) is
        skipped, never fatal: the rest of the history stays readable.
        """
        if not self.central.exists(self.path):
            return []
        argv = ["cat", "--", self.path] if last is None else \
            ["tail", "-n", str(int(last)), "--", self.path]
        text = self.central.runner.run(argv).stdout
        return [e for e in map(_parse, text.splitlines()) if e is not None]

    def size(self) -> int:
        """Bytes in the log (0 when there is none yet)."""
        result = self.central.runner.run(["stat", "-c", "%s", "--", self.path], check=False)
        return int(result.stdout.strip()) if result.ok else 0

    def create_from(self, events: list[dict]) -> bool:
        """Write a whole log at once (migrating an old ledger), only where none exists.

        Placed under a temporary name, then hard-linked to the final name
        (``ln`` never replaces): of two runs migrating at once, one wins and
        the other's copy is dropped, so no event is written twice.
        """
        from releaser.hosts.transfer import temp_name

        tmp = temp_name(self.path)
        self.central.write_text(tmp, "".join(encode(e) for e in events))
        try:
            return self.central.runner.run(["ln", "-T", "--", tmp, self.path], check=False).ok
        finally:
            self.central.runner.run(["rm", "-f", "--", tmp], check=False)


def _parse(line: str) -> dict | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None
