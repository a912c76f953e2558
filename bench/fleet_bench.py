#!/usr/bin/env python3
"""Benchmark: promote over SSH to 1, 4, 8 and 16 sandbox nodes, serial against parallel.

For each fleet size N an SSH sandbox with N staging nodes (each a real sshd on
its own 127.0.0.x address, real Portage behind it) receives releases
alternately with ``--concurrency 1`` and with the default concurrency; the
script prints the wall times, their ratio, and, on one node, releaser's
overhead against the raw Portage commands a shell script would run for the
same upgrade (``emaint sync``, ``quickpkg`` of the running version,
``emerge =NEW``), timed on the same node in the same run.

Run: ``.venv/bin/python bench/fleet_bench.py [--sizes 1,4,8,16] [--rounds 1]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from releaser.central.repository import CentralRepository  # noqa: E402
from releaser.hosts import portage_commands as portage_tools  # noqa: E402
from releaser.hosts.node import connect  # noqa: E402
from releaser.build.builder import build_release  # noqa: E402
from releaser.deploy.promote import promote  # noqa: E402
from releaser.central.publish import ReleaseFiles, publish  # noqa: E402
from tests.sandboxes import Sandbox, add_migration  # noqa: E402

CP = "www-apps/notes"


def promote_timed(sb: Sandbox, concurrency: int | None) -> float:
    t0 = time.perf_counter()
    report = promote(sb.config, "staging", concurrency=concurrency)
    seconds = time.perf_counter() - t0
    assert report.ok, report.to_dict()
    return seconds


def fleet_size(n: int, rounds: int, base: Path) -> tuple[float, float]:
    sb = Sandbox(base / f"n{n}", {"staging": n}, ssh=True)
    try:
        promote_timed(sb, None)  # first install: not measured (no backups to take)
        serial, parallel, number = [], [], 2
        for _ in range(rounds):
            for bucket, concurrency in ((serial, 1), (parallel, None)):
                add_migration(sb.source, f"v{number}.0.0", number=number)
                bucket.append(promote_timed(sb, concurrency))
                number += 1
        return statistics.median(serial), statistics.median(parallel)
    finally:
        sb.down()


def raw_versus_releaser(base: Path, rounds: int) -> tuple[float, float]:
    """One node: the raw Portage upgrade sequence, then releaser's promote of the next version."""
    sb = Sandbox(base / "raw", {"staging": 1}, ssh=True)
    try:
        promote_timed(sb, None)
        raw, full, number = [], [], 2
        node_cfg = sb.config.environment("staging").nodes[0]
        for _ in range(rounds):
            add_migration(sb.source, f"v{number}.0.0", number=number)
            # publish only (no node work) so the raw sequence has something to install
            built = build_release(sb.config, ref="HEAD")
            publish(CentralRepository.from_config(sb.config), "staging",
                    sb.config.environment("staging").overlay,
                    ReleaseFiles(built.release, built.release_dir), built.tarball)
            node = connect(sb.config, node_cfg)
            running = node.installed_version(CP)
            t0 = time.perf_counter()
            portage_tools.sync(node.runner, "releaser-staging")
            portage_tools.quickpkg(node.runner, f"{CP}-{running}")
            portage_tools.emerge(node.runner, f"{CP}-{number}.0.0")
            raw.append(time.perf_counter() - t0)
            node.restart("notes")
            node.close()
            number += 1
            add_migration(sb.source, f"v{number}.0.0", number=number)
            full.append(promote_timed(sb, None))
            number += 1
        return statistics.median(raw), statistics.median(full)
    finally:
        sb.down()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,4,8,16")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="releaser-fleet-bench-") as tmp:
        base = Path(tmp)
        rows = []
        for n in sizes:
            serial, parallel = fleet_size(n, args.rounds, base)
            rows.append((n, serial, parallel))
            print(f"{n:3d} node(s): --concurrency 1 {serial:7.2f}s   default {parallel:7.2f}s   "
                  f"speed-up {serial / parallel:4.2f}x", flush=True)
        raw, full = raw_versus_releaser(base, args.rounds)
    print("\nupgrade of one SSH node (median):")
    print(f"  raw Portage sequence (sync, quickpkg, emerge)   {raw:6.2f}s")
    print(f"  releaser promote (build, publish, back up, install, restart, health, ledger) "
          f"{full:6.2f}s")
    print(f"  overhead {100 * (full - raw) / raw:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
