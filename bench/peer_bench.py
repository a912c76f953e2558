#!/usr/bin/env python3
"""Benchmark: releaser promote against its Ansible peer (bench/ansible_peer/site.yml), side by side.

On one SSH sandbox of N staging nodes per --sizes (each node a real sshd on
its own 127.0.0.x address, real Portage behind it), --runs times each and
alternately: ``releaser promote`` of the next version (default policy,
timed whole: build, publish, verified backups, journal, health gate), then
the playbook for the version after it (published first with releaser's
build + publish, not timed, as ``speed_bench.py`` does for its raw
sequence).  The playbook does per node what the promote does there (sync,
quickpkg, dump + verify-dump, emerge, restart, health check) with the same
rollout (canary then batches of 25%, ``forks`` = the policy's concurrency,
``max_fail_percentage: 0``).  After each playbook run every node is checked
through releaser's own node code: it runs the new version and is healthy on
it, so the figure cannot come from a playbook that did less than it says.

ansible-core comes from PyPI into the benchmark's own venv
(``bench/.venv-ansible``, created here when missing, git-ignored): it is
never a dependency of releaser.  Timings go to the terminal only.

Run: ``.venv/bin/python bench/peer_bench.py [--sizes 4,16] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from releaser.appcontract import AppContract  # noqa: E402
from releaser.build.builder import build_release  # noqa: E402
from releaser.central.publish import ReleaseFiles, publish  # noqa: E402
from releaser.central.repository import CentralRepository  # noqa: E402
from releaser.config import Config  # noqa: E402
from releaser.deploy.promote import promote  # noqa: E402
from releaser.hosts.node import connect  # noqa: E402
from speed_bench import Figures  # noqa: E402
from tests.sandboxes import Sandbox, add_migration  # noqa: E402

PEER = BENCH / "ansible_peer"
PLAYBOOK = PEER / "site.yml"
ANSIBLE_CFG = PEER / "ansible.cfg"
VENV = BENCH / ".venv-ansible"
ENV = "staging"
#: How the peer's callback (ansible_peer/callback_plugins/peer_timing.py) gives a task's time.
TIMING = "PEER-TIMING "


def ansible_playbook() -> Path:
    """``ansible-playbook`` of the benchmark's own venv, installed from PyPI if missing."""
    exe = VENV / "bin" / "ansible-playbook"
    if not exe.exists():
        print(f"installing ansible-core into {VENV} (pip, once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "ansible-core"], check=True)
    return exe


def node_python(sb: Sandbox, name: str) -> str:
    """The ``python3`` a node's login PATH gives (sshd's SetEnv), as for releaser's commands."""
    path = sb.state["ssh"]["sshd"][name]["env"]["PATH"]
    found = shutil.which("python3", path=path)
    assert found, f"no python3 on {name}'s PATH {path}"
    return found


def inventory(sb: Sandbox, env: str = ENV) -> dict:
    """The inventory of ``env``'s nodes: how releaser reaches them, as Ansible variables.

    Host keys are pinned by the sandbox's known_hosts with strict checking,
    and nothing of this machine's ssh configuration is read (``-F /dev/null``,
    no agent, the one key), as releaser's SSH runner does.
    """
    config: Config = sb.config
    environment = config.environment(env)
    contract: AppContract = config.app.contract
    ssh_args = shlex.join([
        "-F", "/dev/null", "-o", f"UserKnownHostsFile={config.ssh.known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
        "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
        "-o", f"ConnectTimeout={config.ssh.connect_timeout:g}"])
    hosts = {}
    for node in environment.nodes:
        hosts[node.name] = {
            "ansible_host": node.address, "ansible_port": node.port,
            "ansible_user": config.ssh.user,
            "ansible_ssh_private_key_file": str(config.ssh.identity_file),
            "ansible_ssh_common_args": ssh_args,
            "ansible_python_interpreter": node_python(sb, node.name),
            "node_root": str(node.root or "/").rstrip("/"),
            "health_url": node.health_url,
        }
    db_path = environment.database.path
    return {"nodes": {"hosts": hosts, "vars": {
        "overlay": environment.overlay, "category": config.app.category, "pn": config.app.name,
        "app_module": contract.module, "app_install_dir": contract.install_dir,
        "service": contract.service, "database_env": contract.database_env,
        "database_path": db_path, "dump_dir": contract.dump_dir(db_path),
        "health_timeout": environment.policy.health_timeout,
    }}}


def run_playbook(sb: Sandbox, version: str, work: Path, playbook: Path,
                 profile: dict[str, list[float]]) -> float:
    """Run the peer for ``version`` on the sandbox's nodes; its wall time (inventory not
    timed).  Each task's wall time (its callback's PEER-TIMING lines) goes to ``profile``."""
    work.mkdir(parents=True, exist_ok=True)
    inv = work / "inventory.yml"
    inv.write_text(yaml.safe_dump(inventory(sb), sort_keys=False))
    control = Path(tempfile.mkdtemp(prefix="ap-", dir="/tmp"))  # short: a socket path
    env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE_CFG),
           "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control), "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
           "ANSIBLE_HOME": str(work / "ansible-home"), "ANSIBLE_NOCOLOR": "1"}
    forks = sb.config.environment(ENV).policy.concurrency
    argv = [str(playbook), "-i", str(inv), str(PLAYBOOK), "--forks", str(forks),
            "-e", f"new_version={version}"]
    log = work / f"playbook-{version}.log"
    try:
        with log.open("w") as out:
            t0 = time.perf_counter()
            done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                  stdin=subprocess.DEVNULL)
            seconds = time.perf_counter() - t0
    finally:
        # Stop the ControlPersist masters this run opened (ours only: this directory).
        for sock in control.iterdir():
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "peer"],
                           capture_output=True)
        shutil.rmtree(control, ignore_errors=True)
    if done.returncode != 0:
        tail = log.read_text().splitlines()[-30:]
        raise AssertionError(f"playbook for {version} failed ({done.returncode}):\n"
                             + "\n".join(tail))
    for line in log.read_text().splitlines():
        if line.startswith(TIMING):
            spent, name = line[len(TIMING):].split(" ", 1)
            profile.setdefault(name, []).append(float(spent))
    return seconds


def check_nodes(sb: Sandbox, version: str) -> None:
    """Every node runs ``version`` and is healthy on it (releaser's own vdb read and health gate)."""
    cp = sb.config.app.cp
    for node_config in sb.config.environment(ENV).nodes:
        node = connect(sb.config, node_config)
        try:
            installed = node.installed_version(cp)
            assert installed == version, f"{node.name} runs {installed}, not {version}"
            health = node.health(version, timeout=10.0)
            assert health.ok, f"{node.name} not healthy on {version}: {health.detail}"
        finally:
            node.close()


def publish_next(sb: Sandbox, number: int) -> str:
    """Tag, build and publish ``number``.0.0 to the environment's overlay (not timed)."""
    add_migration(sb.source, f"v{number}.0.0", number=number)
    built = build_release(sb.config, ref="HEAD")
    central = CentralRepository.from_config(sb.config)
    publish(central, ENV, sb.config.environment(ENV).overlay,
            ReleaseFiles(built.release, built.release_dir), built.tarball)
    return built.release.version


def side_by_side(base: Path, n: int, runs: int, figures: Figures, playbook: Path,
                 logs: Path) -> list[str]:
    """``runs`` rounds on ``n`` nodes: releaser promote, then the playbook, each a new version
    (its inventory and log kept under ``logs``).  Returns the playbook's per-task profile."""
    profile: dict[str, list[float]] = {}
    sb = Sandbox(base / f"n{n}", {ENV: n}, ssh=True)
    try:
        assert promote(sb.config, ENV).ok  # 1.0.0: the first install, not measured
        number = 2
        for _ in range(runs):
            add_migration(sb.source, f"v{number}.0.0", number=number)
            t0 = time.perf_counter()
            report = promote(sb.config, ENV)
            figures.add(f"fleet {n}: releaser promote", time.perf_counter() - t0)
            assert report.ok, report.to_dict()
            check_nodes(sb, f"{number}.0.0")
            number += 1
            version = publish_next(sb, number)
            figures.add(f"fleet {n}: ansible playbook",
                        run_playbook(sb, version, logs / f"n{n}-ansible", playbook,
                                     profile))
            check_nodes(sb, version)
            number += 1
    finally:
        sb.down()
    rows = sorted(((sum(v) / runs, k) for k, v in profile.items()), reverse=True)
    return [f"  playbook per task at {n} nodes (wall, all batches):",
            *(f"    {t:6.3f}s  {k}" for t, k in rows)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4,16")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--logs", type=Path, default=None,
                        help="keep the inventories and playbook logs here (default: dropped)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    playbook = ansible_playbook()
    print(f"load average at start: {os.getloadavg()}, cores: {os.cpu_count()}", flush=True)
    figures = Figures()
    profiles: list[str] = []
    with tempfile.TemporaryDirectory(prefix="releaser-peer-bench-") as tmp:
        for n in sizes:
            profiles += side_by_side(Path(tmp), n, args.runs, figures, playbook,
                                     args.logs or Path(tmp))
            print(f"  fleet of {n} done, load {os.getloadavg()[0]:.2f}", flush=True)
    print(f"load average at end: {os.getloadavg()}")
    figures.print_samples()
    for n in sizes:
        print("  " + figures.ratio(f"releaser / ansible at {n} nodes",
                                   f"fleet {n}: releaser promote", f"fleet {n}: ansible playbook",
                                   "target <= 1.0x"))
    print("\n".join(profiles))
    return 0


if __name__ == "__main__":
    sys.exit(main())
