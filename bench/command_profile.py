#!/usr/bin/env python3
"""Profile: every command a promote and a rollback run on one SSH sandbox node, with its time.

Where ``speed_bench.py`` gives ratios, this says where the time goes: it
wraps the runners (SSH and local) and ``subprocess.run`` for the length of
one promote (1.0.0 -> 2.0.0), one rollback plan and one rollback, and prints
per phase (the promote's progress lines) the wall time, the number of remote
commands, the SSH connections opened, and each command over ``--show``
seconds.  Figures go to the terminal only.

Run: ``.venv/bin/python bench/command_profile.py [--show 0.05] [--all]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from releaser.central.repository import CentralRepository  # noqa: E402
from releaser.deploy.promote import promote  # noqa: E402
from releaser.deploy.rollback import execute_rollback, plan_rollback  # noqa: E402
from releaser.hosts import runner as local_runner  # noqa: E402
from releaser.hosts import ssh  # noqa: E402
from tests.sandboxes import Sandbox, add_migration  # noqa: E402


class Recorder:
    """Calls recorded as (phase, kind, seconds, what), the phase set by progress lines."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float, str]] = []
        self.phase = "start"

    def progress(self, message: str) -> None:
        self.phase = message.strip()[:60]

    def wrap(self, owner, name: str, kind: str) -> None:
        original = getattr(owner, name)
        recorder = self

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                what = args[1] if owner is not subprocess and len(args) > 1 else (
                    args[0] if args else kwargs.get("args", ""))
                if isinstance(what, (list, tuple)):
                    what = " ".join(str(w) for w in what)
                recorder.calls.append((recorder.phase, kind, time.perf_counter() - t0,
                                       str(what).split("\n")[0][:110]))
        setattr(owner, name, timed)

    def report(self, title: str, seconds: float, show: float, everything: bool) -> None:
        runs = [c for c in self.calls if c[1] in ("ssh", "local", "subprocess", "put", "get")]
        opened = sum(1 for c in self.calls if c[1] == "connection")
        print(f"\n== {title}: {seconds:.2f} s wall, {len(runs)} commands/transfers, "
              f"{opened} SSH connections opened")
        per_phase: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
        order: list[str] = []
        for phase, _kind, spent, _what in runs:
            if phase not in per_phase:
                order.append(phase)
            per_phase[phase][0] += spent
            per_phase[phase][1] += 1
        for phase in order:
            spent, count = per_phase[phase]
            print(f"  {spent:6.2f} s in {count:3d} commands   {phase}")
        print("  commands:")
        for phase, kind, spent, what in runs:
            if everything or spent >= show:
                print(f"    {spent:6.3f} {kind:10s} {what}")
        self.calls.clear()
        self.phase = "start"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", type=float, default=0.05,
                        help="print each command slower than this (seconds)")
    parser.add_argument("--all", action="store_true", help="print every command")
    args = parser.parse_args()
    rec = Recorder()
    rec.wrap(ssh.SSHRunner, "run", "ssh")
    rec.wrap(ssh.SSHRunner, "put", "put")
    rec.wrap(ssh.SSHRunner, "get", "get")
    rec.wrap(ssh.SSHRunner, "_new_connection", "connection")
    rec.wrap(local_runner.LocalRunner, "run", "local")
    rec.wrap(subprocess, "run", "subprocess")
    with tempfile.TemporaryDirectory(prefix="releaser-profile-") as tmp:
        sb = Sandbox(Path(tmp) / "one", {"staging": 1}, ssh=True)
        try:
            assert promote(sb.config, "staging").ok
            add_migration(sb.source, "v2.0.0", number=2)
            rec.calls.clear()
            t0 = time.perf_counter()
            assert promote(sb.config, "staging", progress=rec.progress).ok
            rec.report("promote 1.0.0 -> 2.0.0", time.perf_counter() - t0, args.show, args.all)
            central = CentralRepository.from_config(sb.config)
            t0 = time.perf_counter()
            plan = plan_rollback(sb.config, central, "staging", to="1.0.0")
            rec.report("rollback plan", time.perf_counter() - t0, args.show, args.all)
            t0 = time.perf_counter()
            assert execute_rollback(sb.config, central, plan, progress=rec.progress).ok
            rec.report("rollback 2.0.0 -> 1.0.0", time.perf_counter() - t0, args.show, args.all)
        finally:
            sb.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
