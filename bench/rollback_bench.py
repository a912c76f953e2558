#!/usr/bin/env python3
"""Benchmark: releaser rollback against the raw Portage operations, on one node in one run.

Prints three figures measured on the same sandbox node, and their ratios:

- ``releaser rollback`` of the whole environment (plan, a binary package of
  the running version, ``emerge --usepkgonly`` of the target, restart, health
  check, masking commit, ledger);
- a raw ``emerge --usepkgonly =TARGET`` (the floor: what Portage alone costs);
- re-installing the old version from source (``emerge =TARGET``), what a team
  without binary packages would do.

Run: ``.venv/bin/python bench/rollback_bench.py [--rounds N]``.
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
from releaser.sandbox import noderoot  # noqa: E402
from releaser.hosts import portage_commands as portage_tools  # noqa: E402
from releaser.deploy.promote import promote  # noqa: E402
from releaser.deploy.rollback import execute_rollback, plan_rollback  # noqa: E402
from releaser.hosts.runner import LocalRunner  # noqa: E402
from releaser.hosts.services import OpenRC  # noqa: E402
from tests.sandboxes import Sandbox, add_migration  # noqa: E402

CP = "www-apps/notes"


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="releaser-bench-") as tmp:
        sb = Sandbox(Path(tmp), {"staging": 1})
        try:
            return run(sb, args.rounds)
        finally:
            sb.down()


def run(sb: Sandbox, rounds: int) -> int:
    config = sb.config
    root = sb.node_root("staging-1")
    runner = LocalRunner(env=noderoot.portage_env(root))
    central = CentralRepository.from_config(config)
    raw_bin, raw_src, releaser = [], [], []
    for i in range(rounds):
        version_from = f"{i + 2}.0.0"
        target = "1.0.0"  # every round rolls back to the first release
        if i == 0:
            assert promote(config, "staging").ok
        add_migration(sb.source, f"v{version_from}", number=i + 2)
        assert promote(config, "staging").ok
        target_cpv = f"{CP}-{target}"
        from_cpv = f"{CP}-{version_from}"
        portage_tools.quickpkg(runner, from_cpv)  # so the raw rounds can go forward again
        raw_bin.append(timed(lambda: portage_tools.emerge(runner, target_cpv, usepkgonly=True)))
        portage_tools.emerge(runner, from_cpv, usepkgonly=True)
        raw_src.append(timed(lambda: portage_tools.emerge(runner, target_cpv)))
        portage_tools.emerge(runner, from_cpv, usepkgonly=True)
        OpenRC().restart(runner, "notes")

        def releaser_rollback():
            plan = plan_rollback(config, central, "staging", to=target)
            report = execute_rollback(config, central, plan)
            assert report.ok, report.to_dict()
        releaser.append(timed(releaser_rollback))
        print(f"round {i + 1}: {version_from} -> {target}: releaser {releaser[-1]:.2f}s, "
              f"raw --usepkgonly {raw_bin[-1]:.2f}s, from source {raw_src[-1]:.2f}s")
    r, b, s = (statistics.median(x) for x in (releaser, raw_bin, raw_src))
    print(f"\nmedian of {rounds} round(s), one node, same run:")
    print(f"  releaser rollback (full, safe path)   {r:6.2f} s")
    print(f"  raw emerge --usepkgonly =TARGET       {b:6.2f} s   releaser/raw = {r / b:.2f}x")
    print(f"  raw emerge =TARGET (from source)      {s:6.2f} s   releaser/source = {r / s:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
