#!/usr/bin/env python3
"""Benchmark: what the clients of a 4-node environment see during a promote with the default policy.

A directory sandbox of four staging nodes (real Portage, the real notes app on
its own loopback port per node) is put on a first release; then, while the
next release is promoted with the environment's *default* rollout policy
(nothing set in releaser.toml, no command-line override), every node gets a
bounded write load: ``--requests`` ``POST /notes`` at ``--rate`` per second,
loopback only, each with a short timeout, after which the load stops by
itself.

From the answers it prints:

- the failed requests, in all and per node, and how long each node was out of
  service (from its first failed request to its next answered one);
- the most nodes out of service at once, and the longest window in which more
  than one node was;
- the longest window in which nodes of more than one batch (the stages the
  policy makes: canary, then batches) were out of service at once: a rollout
  that keeps most of the environment serving keeps this at zero.

``--release bad`` promotes a release that exits at start (its migration fails)
instead of a good one.

Run: ``.venv/bin/python bench/downtime_bench.py [--rate 10] [--requests 900] [--release good|bad]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from releaser.build.builder import build_release  # noqa: E402
from releaser.deploy.fleet import plan_stages  # noqa: E402
from releaser.deploy.promote import effective_policy, promote  # noqa: E402
from tests.conftest import commit_all, git  # noqa: E402
from tests.sandboxes import Sandbox  # noqa: E402

ENV = "staging"
#: Seconds one request may take before it counts as failed.
REQUEST_TIMEOUT = 1.0


@dataclass
class NodeLoad:
    """The answers one node gave: (monotonic time sent, answered with 201)."""

    name: str
    url: str
    answers: list[tuple[float, bool]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(1 for _t, ok in self.answers if not ok)

    def outages(self) -> list[tuple[float, float]]:
        """[start, end) of each run of failed requests: first failure to the next success."""
        spans, start = [], None
        for t, ok in self.answers:
            if not ok and start is None:
                start = t
            elif ok and start is not None:
                spans.append((start, t))
                start = None
        if start is not None:
            spans.append((start, self.answers[-1][0]))
        return spans


def write_load(load: NodeLoad, count: int, rate: float, t0: float) -> None:
    """``count`` POSTs at ``rate`` per second from ``t0``; a late request is sent at once."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for i in range(count):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent = time.monotonic()
        body = json.dumps({"title": f"bench {load.name} {i}", "body": ""}).encode()
        request = urllib.request.Request(load.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with opener.open(request, timeout=REQUEST_TIMEOUT) as response:
                ok = response.status == 201
        except (urllib.error.URLError, OSError):
            ok = False
        load.answers.append((sent, ok))


def longest_overlap(spans_by_group: dict[str, list[tuple[float, float]]],
                    more_than: int = 1) -> tuple[float, int]:
    """(longest window in which more than ``more_than`` groups had a span open,
    the most groups open at once)."""
    events = sorted([(s, 1, g) for g, spans in spans_by_group.items() for s, _e in spans] +
                    [(e, -1, g) for g, spans in spans_by_group.items() for _s, e in spans],
                    key=lambda ev: (ev[0], ev[1]))
    open_count: dict[str, int] = {}
    longest, most, since = 0.0, 0, None
    for t, step, group in events:
        open_count[group] = open_count.get(group, 0) + step
        groups = sum(1 for n in open_count.values() if n > 0)
        most = max(most, groups)
        if groups > more_than and since is None:
            since = t
        elif groups <= more_than and since is not None:
            longest, since = max(longest, t - since), None
    return longest, most


def next_release(sb: Sandbox, bad: bool) -> str:
    """Commit and tag the release to promote: a harmless change, or one that cannot start."""
    if bad:
        schema = sb.source / "app" / "notes" / "schema.py"
        text = schema.read_text()
        at = text.rindex("\n]")
        schema.write_text(text[:at] + '\n    (2, "additive", """INSERT INTO no_such_table VALUES (1);"""),'
                          + text[at:])
    else:
        (sb.source / "app" / "CHANGES").write_text("1.1.0: a release that changes nothing\n")
    commit_all(sb.source, "next release", when="2026-02-01T00:00:00+00:00")
    git(sb.source, "tag", "v1.1.0")
    return "1.1.0"


def run(sb: Sandbox, rate: float, count: int, bad: bool) -> dict:
    config = sb.config
    env = config.environment(ENV)
    report = promote(config, ENV)
    assert report.ok, report.to_dict()
    version = next_release(sb, bad)
    build_release(config, ref="HEAD", reuse=True)  # the build is not what clients wait for

    policy = effective_policy(env)
    stages = plan_stages(list(env.nodes), policy)
    stage_of = {n.name: i for i, stage in enumerate(stages) for n in stage}
    loads = [NodeLoad(n.name, n.health_url.rsplit("/", 1)[0] + "/notes") for n in env.nodes]
    t0 = time.monotonic() + 0.5
    threads = [threading.Thread(target=write_load, args=(load, count, rate, t0), daemon=True)
               for load in loads]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    result = promote(config, ENV)
    promote_span = (started, time.monotonic())
    for thread in threads:
        thread.join()

    by_node = {load.name: load.outages() for load in loads}
    by_stage: dict[str, list[tuple[float, float]]] = {}
    for name, spans in by_node.items():
        by_stage.setdefault(str(stage_of[name]), []).extend(spans)
    nodes_window, most_nodes = longest_overlap(by_node)
    stages_window, most_stages = longest_overlap(by_stage)
    return {
        "version": version, "release": "bad" if bad else "good", "ok": result.ok,
        "results": {n.node: n.status for n in result.nodes},
        "promote_seconds": round(promote_span[1] - promote_span[0], 2),
        "load_covered_promote": all(load.answers and load.answers[-1][0] >= promote_span[1]
                                    for load in loads),
        "policy": {"canary": policy.canary, "batch_size": policy.batch_size,
                   "max_fail": policy.max_fail, "concurrency": policy.concurrency},
        "stages": [[n.name for n in stage] for stage in stages],
        "requests": sum(len(load.answers) for load in loads),
        "failed": sum(load.failed for load in loads),
        "per_node": {load.name: {"failed": load.failed,
                                 "out_of_service_s": round(sum(e - s for s, e in by_node[load.name]), 2)}
                     for load in loads},
        "most_nodes_out_at_once": most_nodes,
        "longest_more_than_one_node_out_s": round(nodes_window, 2),
        "most_batches_out_at_once": most_stages,
        "longest_more_than_one_batch_out_s": round(stages_window, 2),
    }


def show(figures: dict) -> None:
    policy = figures["policy"]
    print(f"promote of a {figures['release']} release {figures['version']} to 4 nodes with the "
          f"default policy (canary {policy['canary']}, batch_size {policy['batch_size']}, "
          f"max_fail {policy['max_fail']}, concurrency {policy['concurrency']}): "
          f"{'ok' if figures['ok'] else 'NOT ok'} in {figures['promote_seconds']} s")
    print(f"  stages: {' | '.join(', '.join(s) for s in figures['stages'])}")
    print(f"  results: {', '.join(f'{k} {v}' for k, v in figures['results'].items())}")
    print(f"failed requests: {figures['failed']} of {figures['requests']}")
    for name, node in figures["per_node"].items():
        print(f"  {name}: {node['failed']} failed, out of service {node['out_of_service_s']} s")
    print(f"most nodes out of service at once: {figures['most_nodes_out_at_once']}; longest "
          f"window with more than one node out: {figures['longest_more_than_one_node_out_s']} s")
    print(f"longest window with more than one batch out of service: "
          f"{figures['longest_more_than_one_batch_out_s']} s "
          f"(most batches out at once: {figures['most_batches_out_at_once']})")
    if not figures["load_covered_promote"]:
        print("note: the load ended before the promote did; raise --requests")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second per node")
    parser.add_argument("--requests", type=int, default=900, help="requests per node")
    parser.add_argument("--release", choices=("good", "bad"), default="good")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if args.rate <= 0 or args.requests < 1:
        parser.error("--rate must be above 0 and --requests at least 1")
    with tempfile.TemporaryDirectory(prefix="releaser-downtime-bench-") as tmp:
        sb = Sandbox(Path(tmp), {ENV: 4})
        try:
            figures = run(sb, args.rate, args.requests, args.release == "bad")
        finally:
            sb.down()
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        show(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
