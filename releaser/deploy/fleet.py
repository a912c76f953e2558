"""Rolling a change over many nodes: canary, batches, a concurrency cap and a
failure threshold.

This module only schedules: it is given the nodes and a function that does
one node's work, and decides what runs when and when to stop.  It knows
nothing of Portage or SSH, so the policy is tested on its own and the same
scheduler serves promote and rollback.

- The canary stage (``canary`` nodes) runs first; any failure there halts
  before another node is touched.
- Then batches of ``batch_size`` nodes: a count, or a percentage of all the
  nodes (``"25%"``, rounded down, at least one); 0 puts all remaining nodes
  in one batch.  A stage starts only when the one before it has finished,
  and at most ``concurrency`` nodes of it work at once, so never more than
  one batch is out of service.
- ``max_fail`` is the failure threshold; reaching it does not halt,
  exceeding it does (Ansible's ``max_fail_percentage``: "the percentage set
  must be exceeded, not equaled"):

  - a count (``"2"``): the rollout halts once more than that many nodes
    failed in all;
  - a percentage (``"25%"``): as Ansible applies ``max_fail_percentage`` with
    ``serial``, per batch: the rollout halts once more than that share of
    the current batch failed.

  A failure within the threshold halts nothing: the node is reported failed
  and the rollout goes on.  Once the threshold is exceeded no node is
  started any more, not even the rest of the batch (nodes already working
  finish); the untouched nodes are reported as such.
- ``stop`` (an operator's SIGINT or SIGTERM, ``releaser.deploy.interrupts``):
  once set, no node is started any more; nodes already working finish.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

from releaser.errors import UsageError

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class RolloutPolicy:
    """How a change is rolled over nodes.  These defaults are the scheduler's
    neutral ones (everything in one stage); an environment's come from its
    ``PolicyConfig`` (releaser.config), which defaults to the safe ones."""

    concurrency: int = 4
    canary: int = 0
    batch_size: int | str = 0
    max_fail: str = "0"

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        if self.canary < 0:
            raise UsageError("--canary must not be negative")
        parse_batch_size(self.batch_size)
        parse_max_fail(self.max_fail)


def _count_or_percent(text: object) -> tuple[int, bool] | None:
    """``"2"`` -> (2, False); ``"25%"`` -> (25, True); None if neither.

    Only ASCII digits count: ``str.isdigit`` also accepts "²" (which ``int``
    refuses) and "٣" (which ``int`` reads as 3), neither of which a user meant.
    """
    value = str(text).strip()
    percent = value.endswith("%")
    number = value[:-1] if percent else value
    if not (number.isascii() and number.isdigit()) or (percent and int(number) > 100):
        return None
    return int(number), percent


def parse_max_fail(text: str) -> tuple[int, bool]:
    """``"2"`` -> (2, False); ``"25%"`` -> (25, True).  UsageError otherwise."""
    parsed = _count_or_percent(text)
    if parsed is None:
        raise UsageError(f"--max-fail {text!r}: give a count (2) or a percentage (25%)")
    return parsed


def parse_batch_size(value: int | str) -> tuple[int, bool]:
    """``2`` or ``"2"`` -> (2, False); ``"25%"`` -> (25, True).  UsageError otherwise."""
    parsed = None if isinstance(value, bool) else _count_or_percent(value)
    if parsed is None or (parsed[1] and parsed[0] == 0):
        raise UsageError(f"--batch-size {value!r}: give a count (2, 0 for all at once) or a "
                         "percentage of the nodes (25%)")
    return parsed


def batch_nodes(batch_size: int | str, total: int) -> int:
    """Nodes per batch for an environment of ``total`` nodes; 0: all at once."""
    number, percent = parse_batch_size(batch_size)
    return max(1, math.floor(total * number / 100)) if percent else number


def plan_stages(items: Sequence[T], policy: RolloutPolicy) -> list[list[T]]:
    """Canary stage first (if any), then batches."""
    items = list(items)
    size = batch_nodes(policy.batch_size, len(items))
    stages: list[list[T]] = []
    if policy.canary:
        stages.append(items[:policy.canary])
        items = items[policy.canary:]
    size = size or len(items)
    for start in range(0, len(items), size or 1):
        stages.append(items[start:start + size])
    return [s for s in stages if s]


@dataclass
class FleetRun(Generic[T, R]):
    results: list[tuple[T, R]] = field(default_factory=list)
    untouched: list[T] = field(default_factory=list)
    halted: str = ""  # why the rollout stopped (the threshold was exceeded), or ""


@dataclass
class _Threshold:
    """The policy's halting rule, fed one stage's results at a time."""

    policy: RolloutPolicy
    failures: int = 0

    def exceeded(self, stage_index: int, stage_size: int, stage_failures: int) -> str:
        """Why the rollout must halt now, or ``""``."""
        failures = self.failures + stage_failures
        number, percent = parse_max_fail(self.policy.max_fail)
        if self.policy.canary and stage_index == 0:
            if stage_failures:
                return f"the canary failed on {stage_failures} of {stage_size} node(s)"
        elif percent:
            if stage_failures * 100 > number * stage_size:
                return (f"{stage_failures} of {stage_size} node(s) of stage {stage_index + 1} "
                        f"failed, more than --max-fail {self.policy.max_fail} of a batch allows")
        elif failures > number:
            return (f"{failures} node(s) failed, more than --max-fail {self.policy.max_fail} "
                    "allows")
        return ""


def run_stages(stages: list[list[T]], work: Callable[[T], R], *, policy: RolloutPolicy,
               failed: Callable[[R], bool],
               on_stage: Callable[[int, list[T]], None] = lambda _i, _s: None,
               stop: threading.Event | None = None) -> FleetRun[T, R]:
    """Run ``work`` on every item, stage by stage, honouring the policy and ``stop``."""
    run: FleetRun[T, R] = FleetRun()
    threshold = _Threshold(policy)
    for index, stage in enumerate(stages):
        run.halted = run.halted or _stop_asked(stop)
        if run.halted:
            run.untouched.extend(stage)
            continue
        on_stage(index, stage)
        done, left, run.halted = _run_stage(
            stage, work, min(policy.concurrency, len(stage)), failed,
            lambda failures, i=index, n=len(stage): (_stop_asked(stop)
                                                     or threshold.exceeded(i, n, failures)))
        run.results.extend(done)
        run.untouched.extend(left)
        threshold.failures += sum(1 for _item, r in done if failed(r))
    if run.halted == STOPPED and not run.untouched:
        run.halted = ""  # the stop came after the last node had started: nothing was left
    return run


#: Why a run halted when its ``stop`` was set.
STOPPED = "stop requested: no further node was started"


def _stop_asked(stop: threading.Event | None) -> str:
    return STOPPED if stop is not None and stop.is_set() else ""


def _run_stage(stage: list[T], work: Callable[[T], R], workers: int, failed: Callable[[R], bool],
               exceeded: Callable[[int], str]) -> tuple[list[tuple[T, R]], list[T], str]:
    """One stage: start nodes as workers free up, none once the threshold is exceeded.

    Returns (results in stage order, nodes never started, why it halted or "").
    """
    results: dict[int, R] = {}
    running: dict[Future, int] = {}
    waiting = list(range(len(stage)))
    failures, halted = 0, ""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while waiting or running:
            while waiting and len(running) < workers and not halted:
                i = waiting.pop(0)
                running[pool.submit(work, stage[i])] = i
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                i = running.pop(future)
                results[i] = future.result()
                failures += 1 if failed(results[i]) else 0
            halted = halted or exceeded(failures)
    done = [(stage[i], results[i]) for i in sorted(results)]
    return done, [stage[i] for i in waiting], halted
