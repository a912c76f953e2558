"""The rollout scheduler: canary, batches, concurrency cap, failure threshold."""

import threading

import pytest

from releaser.errors import UsageError
from releaser.deploy.fleet import RolloutPolicy, allowed_failures, plan_stages, run_stages


def test_stages_canary_then_batches():
    nodes = list("abcdefg")
    assert plan_stages(nodes, RolloutPolicy(canary=1, batch_size=2)) == [
        ["a"], ["b", "c"], ["d", "e"], ["f", "g"]]
    assert plan_stages(nodes, RolloutPolicy()) == [nodes]
    assert plan_stages(nodes, RolloutPolicy(canary=10)) == [nodes]


@pytest.mark.parametrize("text,total,expected", [("0", 8, 0), ("2", 8, 2), ("25%", 8, 2),
                                                  ("25%", 3, 0), ("100%", 5, 5)])
def test_allowed_failures(text, total, expected):
    assert allowed_failures(text, total) == expected


@pytest.mark.parametrize("bad", ["-1", "x", "150%", "1.5", "", "%", "+1", "1e2",
                                 "\u00b2", "\u00b2%", "\u0663", "\uff11"])
def test_bad_max_fail(bad):
    with pytest.raises(UsageError, match="give a count"):
        RolloutPolicy(max_fail=bad)


def test_canary_failure_touches_nothing_else():
    policy = RolloutPolicy(canary=1, batch_size=2, max_fail="50%")
    done = []
    run = run_stages(plan_stages(list("abcde"), policy), lambda n: done.append(n) or n != "a",
                     policy=policy, failed=lambda ok: not ok)
    assert done == ["a"] and run.untouched == list("bcde")
    assert "canary" in run.halted


def test_threshold_halts_before_next_batch():
    policy = RolloutPolicy(batch_size=2, max_fail="1")
    fail = {"a", "c"}
    run = run_stages(plan_stages(list("abcdef"), policy), lambda n: n not in fail,
                     policy=policy, failed=lambda ok: not ok)
    assert [n for n, _ in run.results] == list("abcd")
    assert run.untouched == ["e", "f"] and "more than --max-fail 1" in run.halted


def test_halting_result_stops_after_its_batch():
    policy = RolloutPolicy(batch_size=2, max_fail="100%")
    run = run_stages(plan_stages(list("abcd"), policy), lambda n: n,
                     policy=policy, failed=lambda r: r == "b", halts=lambda r: r == "b")
    assert run.untouched == ["c", "d"] and "rolled back" in run.halted


@pytest.mark.parametrize("concurrency", [1, 3])
def test_concurrency_cap_is_reached_and_never_exceeded(concurrency):
    """The barrier lets work through only when ``concurrency`` nodes are in it at once, so
    reaching the cap is shown without timing; a pool wider than the cap would show in
    the peak and in the threads used."""
    active, peak, threads, lock = [0], [0], set(), threading.Lock()
    together = threading.Barrier(concurrency, timeout=60)

    def work(_n):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            threads.add(threading.get_ident())
        together.wait()  # BrokenBarrierError: fewer than `concurrency` ran at once
        with lock:
            active[0] -= 1
        return True

    policy = RolloutPolicy(concurrency=concurrency)
    run = run_stages(plan_stages(list(range(9)), policy), work, policy=policy,
                     failed=lambda ok: not ok)
    assert peak[0] == concurrency and len(threads) == concurrency
    assert len(run.results) == 9 and not run.halted


def test_a_max_fail_that_is_no_ascii_number_is_one_clear_line(tmp_path, capsys):
    from releaser.cli import main

    from .conftest import write_config
    from .test_cli import STAGING

    config = write_config(tmp_path / "releaser.toml", tmp_path / "src", extra=STAGING)
    assert main(["-c", str(config), "central", "init"]) == 0
    capsys.readouterr()
    assert main(["-c", str(config), "promote", "staging", "--max-fail", "\u00b2"]) == 2
    assert capsys.readouterr().err == ("releaser: error: --max-fail '\u00b2': give a count (2) "
                                       "or a percentage (25%)\n")
