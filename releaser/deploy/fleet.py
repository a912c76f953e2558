"""Rolling a change over many nodes: canary, batches, a concurrency cap and a
failure threshold.

This module only schedules: it is given the nodes and a function that does
one node's work, and decides what runs when and when to stop.  It knows
nothing of Portage or SSH, so the policy is tested on its own and the same
scheduler serves promote and rollback.

- The canary stage (``canary`` nodes) runs first; any failure there halts
  before another node is touched.
- Then batches of ``batch_size`` nodes (0: all remaining nodes at once).
- Within a stage at most ``concurrency`` nodes work at the same time.
- ``max_fail`` ("0", "2", "25%") is how many failed nodes the rollout
  tolerates; exceeding it halts before the next batch.
- A result may also ask to halt (a node rolled back after a failed health
  check): the current batch finishes, no new batch starts.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

from releaser.errors import UsageError

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class RolloutPolicy:
    concurrency: int = 4
    canary: int = 0
    batch_size: int = 0
    max_fail: str = "0"

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        if self.canary < 0 or self.batch_size < 0:
            raise UsageError("--canary and --batch-size must not be negative")
        parse_max_fail(self.max_fail)


def parse_max_fail(text: str) -> tuple[int, bool]:
    """``"2"`` -> (2, False); ``"25%"`` -> (25, True).  UsageError otherwise.

    Only ASCII digits count: ``str.isdigit`` also accepts "²" (which ``int``
    refuses) and "٣" (which ``int`` reads as 3), neither of which a user meant.
    """
    value = str(text).strip()
    percent = value.endswith("%")
    number = value[:-1] if percent else value
    if not (number.isascii() and number.isdigit()) or (percent and int(number) > 100):
        raise UsageError(f"--max-fail {text!r}: give a count (2) or a percentage (25%)")
    return int(number), percent


def allowed_failures(max_fail: str, total: int) -> int:
    """How many of ``total`` nodes may fail before the rollout halts."""
    number, percent = parse_max_fail(max_fail)
    return math.floor(total * number / 100) if percent else number


def plan_stages(items: Sequence[T], policy: RolloutPolicy) -> list[list[T]]:
    """Canary stage first (if any), then batches."""
    items = list(items)
    stages: list[list[T]] = []
    if policy.canary:
        stages.append(items[:policy.canary])
        items = items[policy.canary:]
    size = policy.batch_size or len(items)
    for start in range(0, len(items), size or 1):
        stages.append(items[start:start + size])
    return [s for s in stages if s]


@dataclass
class FleetRun(Generic[T, R]):
    results: list[tuple[T, R]] = field(default_factory=list)
    untouched: list[T] = field(default_factory=list)
    halted: str = ""  # why the rollout stopped early, or ""


def run_stages(stages: list[list[T]], work: Callable[[T], R], *, policy: RolloutPolicy,
               failed: Callable[[R], bool], halts: Callable[[R], bool] = lambda _r: False,
               on_stage: Callable[[int, list[T]], None] = lambda _i, _s: None) -> FleetRun[T, R]:
    """Run ``work`` on every item, stage by stage, honouring the policy."""
    total = sum(len(s) for s in stages)
    budget = allowed_failures(policy.max_fail, total)
    run: FleetRun[T, R] = FleetRun()
    failures = 0
    lock = threading.Lock()
    for index, stage in enumerate(stages):
        if run.halted:
            run.untouched.extend(stage)
            continue
        on_stage(index, stage)
        with ThreadPoolExecutor(max_workers=min(policy.concurrency, len(stage))) as pool:
            outcomes = list(pool.map(work, stage))
        with lock:
            run.results.extend(zip(stage, outcomes))
        stage_failures = sum(1 for r in outcomes if failed(r))
        failures += stage_failures
        is_canary = policy.canary and index == 0
        if is_canary and stage_failures:
            run.halted = f"the canary failed on {stage_failures} of {len(stage)} node(s)"
        elif failures > budget:
            run.halted = (f"{failures} node(s) failed, more than --max-fail {policy.max_fail} "
                          f"allows ({budget} of {total})")
        elif any(halts(r) for r in outcomes):
            run.halted = "a node failed its health check and was rolled back"
    return run
