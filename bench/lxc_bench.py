#!/usr/bin/env python3
"""Benchmark: ``sandbox init --hosts lxc`` cold and cached, and promote to 4 LXC hosts
against 4 directory nodes.

1. ``init`` of 4 LXC hosts (staging=4) with an empty image cache (``--cold``:
   a fresh ``$RELEASER_LXC_CACHE``, so debootstrap builds the base root
   filesystem), then again with the image cached.  Each sandbox is taken down.
2. A promote of the first release (install, restart under OpenRC, health on
   the host) and of an upgrade (backups taken) to 4 LXC hosts, and the same
   two promotes to a 4-node directory sandbox.

Run as root: ``.venv/bin/python bench/lxc_bench.py [--cold]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from releaser.deploy.promote import promote  # noqa: E402
from tests.sandboxes import Sandbox, add_migration  # noqa: E402

NODES = {"staging": 4}


def timed(what: str, fn):
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    print(f"{what:<48} {seconds:7.1f} s", flush=True)
    return result, seconds


def promotes(sb: Sandbox, label: str) -> None:
    report, _ = timed(f"promote 1.0.0 to 4 {label}", lambda: promote(sb.config, "staging"))
    assert report.ok, report.to_dict()
    add_migration(sb.source, "v1.1.0")
    report, _ = timed(f"promote 1.1.0 (backups) to 4 {label}",
                      lambda: promote(sb.config, "staging"))
    assert report.ok, report.to_dict()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true",
                        help="also time an init with an empty image cache (debootstrap)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lxc-bench-") as tmp:
        base = Path(tmp)
        if args.cold:
            os.environ["RELEASER_LXC_CACHE"] = str(base / "cache")
            sb, _ = timed("sandbox init --hosts lxc, 4 hosts, cold cache",
                          lambda: Sandbox(base / "cold", NODES, hosts="lxc"))
            sb.down()
        sb, _ = timed("sandbox init --hosts lxc, 4 hosts, cached image",
                      lambda: Sandbox(base / "lxc", NODES, hosts="lxc"))
        try:
            promotes(sb, "LXC hosts")
        finally:
            timed("sandbox down (4 LXC hosts)", sb.down)
        sb, _ = timed("sandbox init, 4 directory nodes", lambda: Sandbox(base / "dir", NODES))
        try:
            promotes(sb, "directory nodes")
        finally:
            sb.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
