"""An operator's request to stop a promote or a rollback (SIGINT, SIGTERM).

A run that is told to stop must leave a state it can tell the truth about:
it starts no further node (``releaser.deploy.fleet.run_stages`` checks the
request before starting each one), lets the nodes in flight finish their
pipeline (healthy on the target, or rolled back from the backup taken for
them), records the interruption in the ledger, releases the lock, and ends
with exit status 130.  Running the same command again finishes the job.

Who sets the request is the command line's business (``releaser.cli.signals``):
the core only reads it.
"""

from __future__ import annotations

import threading


class StopRequest(threading.Event):
    """Set once the operator asked the run to stop; ``reason`` says how ("SIGINT")."""

    def __init__(self) -> None:
        super().__init__()
        self.reason = ""

    def request(self, reason: str) -> None:
        self.reason = self.reason or reason
        self.set()


def interrupted_by(stop: threading.Event | None, untouched: list) -> str:
    """The reason a run was interrupted (``"SIGINT"``), or "" when it was not.

    A stop asked for after the last node had started interrupts nothing: the
    run is complete and reported as such.
    """
    if stop is None or not stop.is_set() or not untouched:
        return ""
    return getattr(stop, "reason", "") or "stop requested"


def record_interruption(ledger, command: str, reason: str, run, progress, **info) -> None:
    """The interruption, in the ledger's events: the nodes done (and how), those never
    started.  ``run`` is the fleet's ``FleetRun`` of node outcomes."""
    done = {outcome.node: outcome.status for _node, outcome in run.results}
    untouched = [node.name for node in run.untouched]
    ledger.record_interrupted(command, reason, done, untouched, **info)
    progress(f"interrupted by {reason}: {len(done)} node(s) done, {len(untouched)} never "
             f"started ({', '.join(untouched)}); run the same command again to finish")
