#!/usr/bin/env python3
"""Benchmark: releaser's speed as ratios, each the median of --runs runs (with min and max).

In one run, on SSH sandbox nodes (each a real sshd, real Portage behind it):

- build: ``releaser build`` against ``git archive | gzip -n`` of the same tree;
- one node: a releaser promote against the raw commands it runs there, as
  a shell script would run them (``emaint sync``, ``quickpkg`` of the
  running version, the app's ``dump`` and ``verify-dump``, ``emerge =NEW``,
  ``rc-service restart``, GETs of /health until it answers on NEW), and
  against Portage's three alone (sync, quickpkg, emerge), with a per-phase
  profile of the promote (from its progress lines);
- install mode: the per-node install phase and the whole promote, source
  against binhost (``install = "binary"``) on the same node;
- rollback: ``releaser rollback`` against a raw ``emerge --usepkgonly`` of
  the old version, alone and followed by the restart it needs to serve;
- fan-out: ``--concurrency 1`` against the default at each of --sizes.

Timings go to the terminal only, never into tests.  The machine's load is
printed first: the figures mean little on a busy machine.

Run: ``.venv/bin/python bench/speed_bench.py [--sizes 1,4,8,16] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from releaser.appcontract import DUMP, VERIFY_DUMP  # noqa: E402
from releaser.build.builder import build_release  # noqa: E402
from releaser.config import load_config  # noqa: E402
from releaser.deploy.promote import promote  # noqa: E402
from releaser.hosts import portage_commands as portage_tools  # noqa: E402
from releaser.hosts.bootstrap import bootstrap  # noqa: E402
from releaser.hosts.health import check_health  # noqa: E402
from releaser.hosts.node import connect  # noqa: E402
from tests.sandboxes import Sandbox, add_migration  # noqa: E402

CP = "www-apps/notes"


class Figures:
    """Samples by name; ``ratio`` prints median, min and max of a/b over paired runs."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = defaultdict(list)

    def add(self, name: str, seconds: float) -> None:
        self.samples[name].append(seconds)

    def line(self, name: str) -> str:
        s = self.samples[name]
        return f"{name:38s} median {statistics.median(s):7.3f}s  (min {min(s):.3f}, max {max(s):.3f}, n={len(s)})"

    def print_samples(self) -> None:
        """Every sample's median, min and max, then the heading of the ratios."""
        print("\nsamples:")
        for name in self.samples:
            print("  " + self.line(name))
        print("\nratios (median of paired runs):")

    def ratio(self, label: str, a: str, b: str, target: str = "") -> str:
        pairs = [x / y for x, y in zip(self.samples[a], self.samples[b]) if y > 0]
        if not pairs:
            return f"{label}: no samples"
        return (f"{label:44s} {statistics.median(pairs):6.2f}x  (min {min(pairs):.2f}, "
                f"max {max(pairs):.2f})  {target}")


class Profile:
    """Wall time per promote phase, from the progress lines' timestamps."""

    NODE_LINE = re.compile(r"^[\w.-]+: (\w[\w-]*)")

    def __init__(self) -> None:
        self.phases: dict[str, list[float]] = defaultdict(list)
        self._last: tuple[float, str] | None = None

    def __call__(self, message: str) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.phases[self._last[1]].append(now - self._last[0])
        words = message.split()
        match = self.NODE_LINE.match(message)
        if message.startswith("binhost:"):
            key = "overlay publish (after the binhost package)"
        elif message.startswith("  ") and " from commit " in message:
            key = "lock, ledger, binhost package (binary mode), overlay publish"
        else:
            key = f"node {match.group(1)}" if match else (words[0] if words else "?")
        self._last = (now, key)

    def close(self) -> None:
        self._last = None

    def report(self, runs: int) -> list[str]:
        rows = sorted(((sum(v) / runs, k) for k, v in self.phases.items()), reverse=True)
        return [f"    {k:28s} {t:6.3f}s per promote" for t, k in rows if t >= 0.005]


def promote_timed(sb: Sandbox, figures: Figures, name: str, profile: Profile | None = None,
                  **kw) -> None:
    progress = profile or (lambda _m: None)
    t0 = time.perf_counter()
    report = promote(sb.config, "staging", progress=progress, **kw)
    figures.add(name, time.perf_counter() - t0)
    if profile:
        profile.close()
    assert report.ok, report.to_dict()


def set_binary(sb: Sandbox) -> None:
    text = sb.config_path.read_text()
    sb.config_path.write_text(text.replace("[environments.staging]\n",
                                           '[environments.staging]\ninstall = "binary"\n', 1))
    sb.config = load_config(sb.config_path)
    assert bootstrap(sb.config, "staging").ok


def build_figures(sb: Sandbox, figures: Figures, runs: int, tmp: Path) -> None:
    for i in range(runs):
        t0 = time.perf_counter()
        build_release(sb.config, out=tmp / f"out{i}")
        figures.add("build (releaser build)", time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run(f"git archive --format=tar HEAD app | gzip -n > {tmp}/a{i}.tar.gz",
                       shell=True, cwd=sb.source, check=True)
        figures.add("build (git archive | gzip -n)", time.perf_counter() - t0)


def raw_sequence(sb: Sandbox, node, env, running: str, new: str, figures: Figures) -> None:
    """The commands a promote runs on the node, by hand, timed: Portage's three, and all.

    The dump and its verification are the app's own maintenance commands with
    the variables releaser passes (``AppContract``); the health GETs poll
    every 0.5 s, as releaser's gate does, until the node answers on ``new``.
    """
    contract = sb.config.app.contract
    root = str(env.nodes[0].root or "/").rstrip("/")
    database = root + env.database.path
    dump_file = f"{root}{contract.dump_dir(env.database.path)}/raw-{running}-{new}.db"
    code = {"PYTHONPATH": root + contract.install_dir}
    t0 = time.perf_counter()
    portage_tools.sync(node.runner, env.overlay)
    t_sync = time.perf_counter() - t0
    t = time.perf_counter()
    portage_tools.quickpkg(node.runner, f"{CP}-{running}")
    t_quickpkg = time.perf_counter() - t
    t = time.perf_counter()
    node.runner.run(contract.command(DUMP, dump_file),
                    env=contract.environment(code["PYTHONPATH"], database))
    node.runner.run(contract.command(VERIFY_DUMP, dump_file), env=code)
    t_dump = time.perf_counter() - t
    t = time.perf_counter()
    portage_tools.emerge(node.runner, f"{CP}-{new}")
    t_emerge = time.perf_counter() - t
    node.runner.run(["rc-service", contract.service, "restart"])
    assert check_health(env.nodes[0].health_url, expect_version=new, timeout=30).ok
    total = time.perf_counter() - t0
    figures.add("one node: raw sync+quickpkg+emerge", t_sync + t_quickpkg + t_emerge)
    figures.add("one node: raw, every command promote runs", total)
    figures.add("install: raw emerge from source", t_emerge)
    figures.add("raw: dump + verify-dump", t_dump)


def one_node(base: Path, runs: int, figures: Figures) -> list[str]:
    """Raw vs releaser, source vs binhost, rollback vs raw, on one SSH node.

    Each source round: releaser promotes vN (measured, profiled); the raw
    rollback (``emerge --usepkgonly`` of 1.0.0) and back; ``releaser
    rollback`` to 1.0.0; then the raw upgrade of the next version, published
    but not promoted (sync, quickpkg, emerge).  Then binhost rounds.
    """
    from releaser.central.publish import ReleaseFiles, publish
    from releaser.central.repository import CentralRepository
    from releaser.deploy.rollback import execute_rollback, plan_rollback

    sb = Sandbox(base / "one", {"staging": 1}, ssh=True)
    env = sb.config.environment("staging")
    number = 2
    out: list[str] = []
    try:
        build_figures(sb, figures, runs, base)
        assert promote(sb.config, "staging").ok  # v1: first install, not measured
        central = CentralRepository.from_config(sb.config)
        source_profile, binary_profile = Profile(), Profile()
        for _ in range(runs):
            add_migration(sb.source, f"v{number}.0.0", number=number)
            promote_timed(sb, figures, "one node: releaser promote (source)", source_profile)
            node = connect(sb.config, env.nodes[0])
            new, old = f"{CP}-{number}.0.0", f"{CP}-1.0.0"
            portage_tools.quickpkg(node.runner, new)
            t0 = time.perf_counter()
            portage_tools.emerge(node.runner, old, usepkgonly=True)
            t1 = time.perf_counter()
            node.restart("notes")
            figures.add("rollback: raw emerge --usepkgonly", t1 - t0)
            figures.add("rollback: raw emerge --usepkgonly + restart", time.perf_counter() - t0)
            portage_tools.emerge(node.runner, new, usepkgonly=True)
            node.restart("notes")
            t0 = time.perf_counter()
            report = execute_rollback(sb.config, central,
                                      plan_rollback(sb.config, central, "staging", to="1.0.0"))
            figures.add("rollback: releaser rollback", time.perf_counter() - t0)
            assert report.ok, report.to_dict()
            number += 1
            add_migration(sb.source, f"v{number}.0.0", number=number)
            built = build_release(sb.config, ref="HEAD")
            publish(central, "staging", env.overlay,
                    ReleaseFiles(built.release, built.release_dir), built.tarball)
            raw_sequence(sb, node, env, "1.0.0", f"{number}.0.0", figures)  # after the rollback
            node.close()
            number += 1
        for s in source_profile.phases.get("node install", []):
            figures.add("install: releaser, source", s)
        out += ["  per-phase profile, source mode (one node):", *source_profile.report(runs)]
        set_binary(sb)
        for _ in range(runs):
            add_migration(sb.source, f"v{number}.0.0", number=number)
            promote_timed(sb, figures, "one node: releaser promote (binary)", binary_profile)
            number += 1
        for s in binary_profile.phases.get("node install", []):
            figures.add("install: releaser, binary", s)
        out += ["  per-phase profile, binhost mode (one node):", *binary_profile.report(runs)]
        return out
    finally:
        sb.down()


def fan_out(base: Path, n: int, runs: int, figures: Figures) -> None:
    sb = Sandbox(base / f"n{n}", {"staging": n}, ssh=True)
    try:
        promote(sb.config, "staging")
        number = 2
        for _ in range(runs):
            for name, concurrency in ((f"fleet {n}: serial", 1), (f"fleet {n}: default", None)):
                add_migration(sb.source, f"v{number}.0.0", number=number)
                promote_timed(sb, figures, name, concurrency=concurrency)
                number += 1
        set_binary(sb)  # the same fleet in binhost mode, default policy
        for _ in range(runs):
            add_migration(sb.source, f"v{number}.0.0", number=number)
            promote_timed(sb, figures, f"fleet {n}: default, binhost")
            number += 1
    finally:
        sb.down()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,4,8,16")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"load average at start: {os.getloadavg()}, cores: {os.cpu_count()}", flush=True)
    figures = Figures()
    with tempfile.TemporaryDirectory(prefix="releaser-speed-bench-") as tmp:
        profile = one_node(Path(tmp), args.runs, figures)
        for n in sizes:
            fan_out(Path(tmp), n, args.runs, figures)
            print(f"  fleet of {n} done, load {os.getloadavg()[0]:.2f}", flush=True)
    print(f"load average at end: {os.getloadavg()}")
    figures.print_samples()
    f = figures
    print("  " + f.ratio("releaser vs raw, one node (every command)",
                         "one node: releaser promote (source)",
                         "one node: raw, every command promote runs", "target <= 1.15x"))
    print("  " + f.ratio("releaser vs Portage's sync+quickpkg+emerge",
                         "one node: releaser promote (source)",
                         "one node: raw sync+quickpkg+emerge", "(the issue's first figure)"))
    for n in sizes:
        print("  " + f.ratio(f"serial / default at {n}", f"fleet {n}: serial",
                             f"fleet {n}: default", "target >= 1.9x at 8 and 16"))
    for n in sizes:
        print("  " + f.ratio(f"binhost vs source promote, fleet of {n}",
                             f"fleet {n}: default, binhost", f"fleet {n}: default"))
    print("  " + f.ratio("binhost vs source install, per node", "install: releaser, binary",
                         "install: releaser, source", "target <= 0.6x"))
    print("  " + f.ratio("binhost vs source promote, one node",
                         "one node: releaser promote (binary)",
                         "one node: releaser promote (source)"))
    print("  " + f.ratio("rollback vs raw emerge --usepkgonly", "rollback: releaser rollback",
                         "rollback: raw emerge --usepkgonly", "target <= 1.2x"))
    print("  " + f.ratio("rollback vs raw emerge --usepkgonly + restart",
                         "rollback: releaser rollback",
                         "rollback: raw emerge --usepkgonly + restart"))
    print("  " + f.ratio("build vs git archive | gzip -n", "build (releaser build)",
                         "build (git archive | gzip -n)", "target <= 1.5x + Manifest"))
    print("\n".join(profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
