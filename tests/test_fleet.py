"""The rollout scheduler: canary, batches, concurrency cap, failure threshold.

The seam is the work function: these tests give ``run_stages`` a fake one
and look only at what was started, what came back and why the run halted.
"""

import threading

import pytest

from releaser.config import PolicyConfig
from releaser.deploy.fleet import (RolloutPolicy, batch_nodes, parse_batch_size, plan_stages,
                                   run_stages)
from releaser.errors import UsageError


def _defaults() -> RolloutPolicy:
    """The policy an environment gets when its releaser.toml says nothing."""
    d = PolicyConfig()
    return RolloutPolicy(concurrency=d.concurrency, canary=d.canary, batch_size=d.batch_size,
                         max_fail=d.max_fail)


def test_stages_canary_then_batches():
    nodes = list("abcdefg")
    assert plan_stages(nodes, RolloutPolicy(canary=1, batch_size=2)) == [
        ["a"], ["b", "c"], ["d", "e"], ["f", "g"]]
    assert plan_stages(nodes, RolloutPolicy()) == [nodes]
    assert plan_stages(nodes, RolloutPolicy(canary=10)) == [nodes]


@pytest.mark.parametrize("total,stages", [
    (1, [["n0"]]),
    (2, [["n0"], ["n1"]]),
    (4, [["n0"], ["n1"], ["n2"], ["n3"]]),
    (8, [["n0"], ["n1", "n2"], ["n3", "n4"], ["n5", "n6"], ["n7"]]),
])
def test_default_policy_is_one_canary_then_quarters(total, stages):
    """The defaults keep most of the environment serving: one canary, then a quarter at a time."""
    nodes = [f"n{i}" for i in range(total)]
    assert plan_stages(nodes, _defaults()) == stages
    assert max(len(s) for s in stages) <= max(1, total // 4)


@pytest.mark.parametrize("size,total,expected", [("25%", 4, 1), ("25%", 3, 1), ("25%", 8, 2),
                                                 ("50%", 5, 2), ("100%", 5, 5), (2, 9, 2),
                                                 ("3", 9, 3), (0, 9, 0)])
def test_batch_size_count_or_share_of_the_nodes(size, total, expected):
    assert batch_nodes(size, total) == expected


@pytest.mark.parametrize("bad", [-1, "-1", "x", "0%", "150%", "1.5", "", True, "\u00b2"])
def test_bad_batch_size(bad):
    with pytest.raises(UsageError, match="--batch-size"):
        parse_batch_size(bad)


@pytest.mark.parametrize("bad", ["-1", "x", "150%", "1.5", "", "%", "+1", "1e2",
                                 "\u00b2", "\u00b2%", "\u0663", "\uff11"])
def test_bad_max_fail(bad):
    with pytest.raises(UsageError, match="give a count"):
        RolloutPolicy(max_fail=bad)


def _run(nodes, policy, failing, concurrency_log=None):
    """run_stages over ``nodes`` with a work function failing on ``failing``; (started, run)."""
    started: list[str] = []
    lock = threading.Lock()

    def work(node):
        with lock:
            started.append(node)
        return node not in failing

    run = run_stages(plan_stages(nodes, policy), work, policy=policy, failed=lambda ok: not ok)
    return started, run


def test_canary_failure_touches_nothing_else():
    started, run = _run(list("abcde"), RolloutPolicy(canary=1, batch_size=2, max_fail="50%"),
                        {"a"})
    assert started == ["a"] and run.untouched == list("bcde")
    assert "canary" in run.halted


def test_count_threshold_reached_goes_on_exceeded_halts():
    policy = RolloutPolicy(batch_size=2, max_fail="1", concurrency=1)
    started, run = _run(list("abcdef"), policy, {"b"})
    assert started == list("abcdef") and not run.halted  # one failure: within --max-fail 1
    started, run = _run(list("abcdef"), policy, {"b", "c"})
    assert started == list("abc") and run.untouched == ["d", "e", "f"]
    assert "2 node(s) failed, more than --max-fail 1" in run.halted


def test_a_failure_within_the_threshold_does_not_halt():
    """A node that failed (rolled back, say) within --max-fail: the rollout goes on."""
    started, run = _run(list("abcd"), RolloutPolicy(canary=1, batch_size=1, max_fail="1"), {"c"})
    assert started == list("abcd") and not run.halted and not run.untouched
    assert [ok for _n, ok in run.results] == [True, True, False, True]


@pytest.mark.parametrize("max_fail,failing,halts", [
    ("50%", {"a"}, False),        # 1 of 2 is 50%: equalled, not exceeded
    ("49%", {"a"}, True),         # 1 of 2 exceeds 49% (Ansible: 49, not 50, to abort on half)
    ("50%", {"a", "b"}, True),    # 2 of 2
    ("0%", {"c"}, True),
    ("100%", {"a", "b", "c", "d"}, False),
])
def test_percentage_applies_to_each_batch_as_ansible(max_fail, failing, halts):
    """max_fail_percentage with serial: per batch, and it must be exceeded, not equalled."""
    policy = RolloutPolicy(batch_size=2, max_fail=max_fail, concurrency=2)
    started, run = _run(list("abcd"), policy, failing)
    assert bool(run.halted) is halts, run.halted
    if halts:
        first_bad = min(i for i, n in enumerate("abcd") if n in failing) // 2
        assert len(started) == 2 * (first_bad + 1) and "of a batch allows" in run.halted
    else:
        assert started and sorted(started) == list("abcd")


def test_percentage_failures_of_earlier_batches_do_not_add_up():
    """Two batches each with one failure of two: 50% each, never more than 50%."""
    started, run = _run(list("abcd"), RolloutPolicy(batch_size=2, max_fail="50%"), {"a", "c"})
    assert sorted(started) == list("abcd") and not run.halted


def test_no_node_of_a_batch_starts_once_the_threshold_is_exceeded():
    """A batch wider than the concurrency: once a failure exceeds the threshold, the
    batch's nodes not yet started stay untouched (its good nodes are not upgraded)."""
    started, run = _run(list("abcd"), RolloutPolicy(batch_size=4, concurrency=1), {"b"})
    assert started == ["a", "b"] and run.untouched == ["c", "d"]
    assert [n for n, _ok in run.results] == ["a", "b"]


def test_never_more_than_one_batch_at_once():
    """Every node of a stage must have finished before a node of the next one starts.

    The nodes of a stage wait for each other (a barrier), so each stage is
    really out of service at once; a scheduler starting the next stage early
    would show a node starting while another stage's node is active."""
    events, lock = [], threading.Lock()
    policy = RolloutPolicy(canary=1, batch_size=2, concurrency=4)
    stages = plan_stages(list("abcdefg"), policy)
    stage_of = {n: i for i, s in enumerate(stages) for n in s}
    barriers = [threading.Barrier(len(s), timeout=60) for s in stages]

    def work(node):
        with lock:
            events.append(("start", node))
        barriers[stage_of[node]].wait()
        with lock:
            events.append(("end", node))
        return True

    run = run_stages(stages, work, policy=policy, failed=lambda ok: not ok)
    assert len(run.results) == 7 and not run.halted
    active: set = set()
    for kind, node in events:
        if kind == "start":
            assert {stage_of[n] for n in active} <= {stage_of[node]}, (node, active)
            active.add(node)
        else:
            active.discard(node)


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

    from .conftest import unsigned_notice, write_config
    from .test_cli import STAGING

    config = write_config(tmp_path / "releaser.toml", tmp_path / "src", extra=STAGING)
    assert main(["-c", str(config), "central", "init"]) == 0
    capsys.readouterr()
    assert main(["-c", str(config), "promote", "staging", "--max-fail", "\u00b2"]) == 2
    assert capsys.readouterr().err == (unsigned_notice("staging") +
                                       "releaser: error: --max-fail '\u00b2': give a count (2) "
                                       "or a percentage (25%)\n")


def test_an_environment_without_a_policy_gets_the_safe_defaults(tmp_path):
    from releaser.config import load_config

    from .conftest import write_config
    from .test_cli import STAGING

    config = load_config(write_config(tmp_path / "releaser.toml", tmp_path / "src", extra=STAGING))
    policy = config.environment("staging").policy
    assert (policy.canary, policy.batch_size, policy.max_fail) == (1, "25%", "0")


@pytest.mark.parametrize("value,accepted", [('"25%"', "25%"), ("3", 3), ("0", 0), ('"-1"', None),
                                            ('"0%"', None), ("-2", None), ('"half"', None)])
def test_policy_batch_size_in_releaser_toml(tmp_path, value, accepted):
    from releaser.config import load_config
    from releaser.errors import ConfigError

    from .conftest import write_config
    from .test_cli import STAGING

    path = write_config(tmp_path / "releaser.toml", tmp_path / "src",
                        extra=STAGING + f"policy = {{ batch_size = {value} }}\n")
    if accepted is None:
        with pytest.raises(ConfigError, match=r"policy\.batch_size.*give a count"):
            load_config(path)
    else:
        assert load_config(path).environment("staging").policy.batch_size == accepted
