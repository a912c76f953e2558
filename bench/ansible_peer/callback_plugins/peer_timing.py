"""Wall time per task of the Ansible peer, summed over the rollout's batches.

An aggregate callback (enabled in ../ansible.cfg): each task's time runs from
its start to the next task's start (or the end of the play), so a batch's
slowest host sets it, as it sets the rollout's wall time.  At the end it
prints one line per task, ``PEER-TIMING <seconds> <task name>``, which
bench/peer_bench.py reads to say where the peer's time goes.
"""

from __future__ import annotations

import time
from collections import defaultdict

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: peer_timing
    type: aggregate
    short_description: wall time per task, summed over batches
    description: Prints PEER-TIMING lines for bench/peer_bench.py.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "peer_timing"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._spent: dict[str, float] = defaultdict(float)
        self._current: tuple[str, float] | None = None

    def _close(self) -> None:
        if self._current is not None:
            name, started = self._current
            self._spent[name] += time.perf_counter() - started
            self._current = None

    def v2_playbook_on_task_start(self, task, is_conditional) -> None:
        self._close()
        self._current = (task.get_name(), time.perf_counter())

    def v2_playbook_on_stats(self, stats) -> None:
        self._close()
        for name, seconds in self._spent.items():
            self._display.display(f"PEER-TIMING {seconds:.3f} {name}")
