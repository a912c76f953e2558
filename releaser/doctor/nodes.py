"""The doctor's node checks: each node reached over its runner (SSH with the pinned
key, or a sandbox folder), its bootstrap state and preflight from host bootstrap's
read-only probe, and processes of the app its init system does not know."""

from __future__ import annotations

import json
import posixpath
from typing import TYPE_CHECKING

from releaser.errors import HostKeyError, ReleaserError, last_line

if TYPE_CHECKING:
    from releaser.config import Config
    from releaser.doctor import Diagnosis
    from releaser.hosts.node import Node

#: Run on the node (``python3 -I -c``): the processes of the app other than the
#: one its pidfile names.  A process is the app's when its command line runs the
#: app's module (``-m MODULE serve``) or launcher (``.../NAME serve``); on a
#: folder root (a sandbox node) only those whose working directory is that root.
LEAKS = r'''
import json, os, sys
req = json.loads(sys.argv[1])
root = os.path.realpath(req["root"])
try:
    with open(req["pidfile"]) as f:
        known = int(f.read().split()[0])
except (OSError, ValueError, IndexError):
    known = None

def is_app(argv):
    if "serve" not in argv:
        return False
    if "-m" in argv[:-1] and argv[argv.index("-m") + 1] == req["module"]:
        return True
    return any(os.path.basename(a) == req["service"] for a in argv[:2])

found = []
for pid in os.listdir("/proc"):
    if not pid.isdigit() or int(pid) in (os.getpid(), os.getppid(), known):
        continue
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            argv = f.read().decode("utf-8", "replace").split("\0")[:-1]
        cwd = os.readlink("/proc/%s/cwd" % pid) if root != "/" else "/"
    except OSError:
        continue
    if root != "/" and cwd != root and not cwd.startswith(root + "/"):
        continue
    if argv and is_app(argv):
        found.append([int(pid), " ".join(argv)])
print(json.dumps(found))
'''


def node_checks(config: "Config", env: str, diagnosis: "Diagnosis") -> None:
    from releaser.hosts.node import connect

    for node_cfg in config.environment(env).nodes:
        try:
            node = connect(config, node_cfg)
            try:
                _check_node(config, env, node, diagnosis)
            finally:
                node.close()
        except HostKeyError as exc:
            _host_key(node_cfg.name, str(exc), diagnosis)
        except ReleaserError as exc:
            from releaser.doctor import Finding

            diagnosis.findings.append(Finding(
                node_cfg.name, f"unreachable: {exc}",
                "check the host is up, its sshd answers on the configured address and port, "
                "and releaser's key is authorised"))


def _host_key(name: str, message: str, diagnosis: "Diagnosis") -> None:
    from releaser.doctor import Finding

    if "CHANGED" in message:
        diagnosis.findings.append(Finding(
            name, f"host key changed: {message}",
            "if the host was reinstalled, check its new key out of band and replace its line "
            "in [ssh] known_hosts; otherwise treat it as an attack and do not connect"))
    else:
        diagnosis.findings.append(Finding(
            name, f"host key not pinned: {message}",
            "add the host's key (checked out of band) to [ssh] known_hosts"))


def _check_node(config: "Config", env: str, node: "Node", diagnosis: "Diagnosis") -> None:
    """Reached: bootstrap state and preflight, then leaked processes."""
    from releaser.doctor import WARNING, Finding

    node.runner.run(["true"])  # SSH connects on first use: a key or network error is raised here

    if _bootstrap_state(config, env, node, diagnosis):
        diagnosis.passed.append(f"{node.name}: reachable, prepared ({_portage_and_disk(node)}"
                                "; git, python3 and the app's dependencies)")
    _runlevel(config, node, diagnosis)
    try:
        leaked = _leaked_processes(config, node)
    except ReleaserError as exc:
        diagnosis.findings.append(Finding(node.name, str(exc), "check python3 and /proc on "
                                          "the node", WARNING))
        return
    if leaked:
        pids = ", ".join(f"{pid} ({cmd[:60]})" for pid, cmd in leaked)
        diagnosis.findings.append(Finding(
            node.name, f"process(es) of the app its init system does not know: {pids}",
            f"stop them (kill {' '.join(str(p) for p, _ in leaked)}); they hold the app's "
            "port or database against the service"))


def _runlevel(config: "Config", node: "Node", diagnosis: "Diagnosis") -> None:
    """An installed app whose service is not in the default runlevel does not start at boot.

    Promote adds it once, on a node's first healthy install, and asks no more
    after that (the ledger says it is there): a service taken out by hand since
    is found here, not by the next upgrade.
    """
    from releaser.doctor import WARNING, Finding
    from releaser.hosts.services import DEFAULT_RUNLEVEL, OpenRC

    if node.installed_version(config.app.cp) is None:
        return
    service = config.app.contract.service
    try:
        enabled = OpenRC().enabled(node.runner, service)
    except ReleaserError as exc:
        diagnosis.findings.append(Finding(node.name, str(exc), "check OpenRC's rc-update on "
                                          "the node", WARNING))
        return
    if not enabled:
        diagnosis.findings.append(Finding(
            node.name, f"{service} is installed but not in the {DEFAULT_RUNLEVEL} runlevel: it "
            "will not start at boot", f"rc-update add {service} {DEFAULT_RUNLEVEL} (on the node)",
            WARNING))


def _bootstrap_state(config: "Config", env: str, node: "Node", diagnosis: "Diagnosis") -> bool:
    """host bootstrap's dry run on the node: True when prepared and passing its preflight."""
    from releaser.doctor import Finding
    from releaser.hosts.bootstrap import CHANGED, PLANNED, REFUSED, prepare_host
    from releaser.hosts.host_probe import Host, HostSetup

    try:
        setup = HostSetup.from_config(config, env)
    except ReleaserError as exc:
        diagnosis.findings.append(Finding(node.name, f"bootstrap state unknown: {exc}",
                                          "complete releaser.toml ([central] sync_uri, [hosts])"))
        return False
    report = prepare_host(Host(node.name, node.runner, node.root), setup, dry_run=True)
    fix = f"`releaser host bootstrap {env} {node.name}`"
    if report.status == REFUSED:
        diagnosis.findings.append(Finding(node.name, report.reason or "refused",
                                          f"fix the host, then {fix}"))
        return False
    if report.status in (PLANNED, CHANGED):
        what = "; ".join(f"{c['action']} {c['what']}" for c in report.changes[:3])
        diagnosis.findings.append(Finding(
            node.name, f"not prepared: {len(report.changes)} change(s) pending ({what})", fix))
        return False
    return True


def _portage_and_disk(node: "Node") -> str:
    """``Portage 3.0.83, 1234 MB free``, from the same read-only probe bootstrap uses."""
    from releaser.hosts.host_probe import Host, probe

    facts = probe(Host(node.name, node.runner, node.root), {"atoms": []})
    return f"Portage {facts['portage']}, {facts['free_mb']} MB free"


def _leaked_processes(config: "Config", node: "Node") -> list[tuple[int, str]]:
    contract = config.app.contract
    pidfile = posixpath.join(node.root, contract.pidfile.lstrip("/"))
    request = {"root": node.root, "pidfile": pidfile, "module": contract.module,
               "service": contract.service}
    result = node.runner.run(["python3", "-I", "-c", LEAKS, json.dumps(request)], check=False)
    try:
        return [(int(pid), str(cmd)) for pid, cmd in json.loads(result.stdout.splitlines()[-1])]
    except (IndexError, ValueError, TypeError):
        raise ReleaserError(f"{node.name}: cannot list its processes: "
                            f"{last_line(result.stderr, result.stdout)}") from None
