"""``releaser host bootstrap ENV [NODE...]``: make hosts ready to take releases.

One bootstrap for every kind of host: a Gentoo host reached over SSH (ROOT
``/``), a sandbox node whose ROOT is a folder of this machine (reached
locally or through its own sshd), and later LXC hosts and Vagrant boxes.
Everything goes through the host's ``Runner``; the only difference between
hosts is ROOT, a configured value: on a folder root, paths are written under
it and ``useradd``/``groupadd``/``usermod`` get ``--prefix ROOT``.

What a prepared host has (each a ``Step``, in this order):

0. With ``[trust]``: ``/etc/portage/releaser/keys/ENV.asc``, the public
   release key(s) of the environment and nothing else (``releaser.trust.keys``).
1. ``/etc/portage/repos.conf`` a folder, and in it ``<overlay>.conf``: the
   environment's overlay, git-synced from ``[central] sync_uri`` (over SSH or
   HTTPS for a real host); with ``[trust]`` Portage verifies every synced head's
   signature against that key file (``portage_config.repo_section``).
2. ``/etc/portage/make.conf`` a folder (Portage reads every file of it, in
   name order), and in it ``90-releaser.conf``: DISTDIR, PKGDIR and
   BINPKG_FORMAT=gpkg, what backups and rollbacks rely on
   (``portage_config.render_releaser_make_conf``).  A make.conf *file* (the
   operator's) becomes ``make.conf/00-local.conf``, byte for byte: Portage
   reads the same settings, and releaser never edits the operator's file.
3. The app's group and user, as an ``acct-group``/``acct-user`` package
   makes them: system accounts, no login shell, home ``/var/lib/APP``.
4. The app's state, database and ``backups/`` folders (``releaser.appcontract``),
   owned by that user, mode 0750 (what the init script's ``checkpath`` uses).
5. The overlay cloned by Portage itself (``emaint sync``), proving the
   repos.conf entry works before the first release needs it.

Before any of it, one probe (a Python program run by the host's ``python3``,
which Portage needs anyway) gathers every fact at once, and the *preflight*
judges them: running as root, Portage importable and recent enough, git,
python3 of the version the app needs, the app's runtime dependencies
installed, provided or available, free disk on ROOT, the central overlay
reachable from the host, nothing in the way of a step.  A host that fails
gets one reason and is left exactly as it was.

Each step's ``check`` reads only the probe's facts, so ``--dry-run`` prints
the very plan a real run would apply; a second run finds nothing to change
and says so.  Steps are small objects with ``check``/``apply``/``describe``:
node-side, idempotent and self-describing, what a pull agent could reuse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from portage.dep import match_from_list
from portage.versions import vercmp

from releaser.central.overlay_git import stderr_reason
from releaser.errors import ReleaserError, UsageError
from releaser.hosts.bootstrap_steps import Change, Step, probe_request, steps_for
from releaser.hosts.host_probe import Facts, Host, HostSetup, probe

#: Status of a host in a report.
CHANGED, UNCHANGED, PLANNED, REFUSED, FAILED = "changed", "unchanged", "planned", "refused", "failed"


# --------------------------------------------------------------------------- preflight


def preflight(host: Host, setup: HostSetup, facts: Facts,
              plan: list[tuple[Step, Change | None]]) -> str | None:
    """The first reason ``host`` cannot be prepared, or None.  Reads facts only."""
    where = "/" if host.root == "/" else host.root
    if facts["euid"] != 0:
        return (f"runs commands as uid {facts['euid']}, not root: the bootstrap writes "
                f"/etc/portage, adds users and owns folders")
    if facts["portage"] is None:
        return f"Portage is not installed: python3 cannot import portage ({facts['portage_error']})"
    if setup.release_keys and not facts["gemato"]:
        return ("gemato is not installed for the host's Portage: with [trust] it verifies the "
                "overlay's signed commits (emerge app-portage/gemato)")
    if vercmp(facts["portage"], setup.min_portage) < 0:
        return (f"Portage {facts['portage']} is older than {setup.min_portage} "
                f"([hosts] min_portage)")
    python = f"dev-lang/python-{facts['python']}"
    for atom in setup.python_atoms:
        if not match_from_list(atom, [python]):
            return f"python3 is {facts['python']}; the app needs {atom}"
    if not facts["git"]:
        return "git is not installed (not on its PATH): Portage's git sync of the overlay needs it"
    if facts["free_mb"] is None:
        return f"cannot read free space of ROOT {facts['root_error']}"
    if facts["free_mb"] < setup.min_free_mb:
        return (f"{facts['free_mb']} MB free on {where}; at least {setup.min_free_mb} MB "
                f"needed ([hosts] min_free_mb)")
    missing = [atom for atom, found in facts["deps"].items() if not found]
    if missing:
        return (f"the app's runtime dependencies cannot be satisfied: {', '.join(missing)} "
                f"(not installed, provided, or available in any of its repositories)")
    if facts["remote_error"]:
        return (f"cannot reach the overlay at {setup.sync_uri}: "
                f"{stderr_reason(facts['remote_error']) or facts['remote_error']}")
    for step, change in plan:
        reason = step.refusal(facts)
        if reason:
            return reason
    for step, change in plan:
        for tool in step.needs if change else ():
            if not facts["tools"].get(tool):
                return f"{tool} is not installed (not on its PATH): needed for {step.what}"
    return None


# --------------------------------------------------------------------------- reports


@dataclass
class HostReport:
    """What the bootstrap did (or would do) on one host."""

    node: str
    root: str
    status: str
    lines: list[str] = field(default_factory=list)
    reason: str | None = None
    changes: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in (CHANGED, UNCHANGED, PLANNED)

    def to_dict(self) -> dict:
        return {"node": self.node, "root": self.root, "status": self.status,
                "reason": self.reason, "changes": self.changes, "lines": self.lines}


@dataclass
class BootstrapReport:
    env: str
    dry_run: bool
    central: str
    hosts: list[HostReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(h.ok for h in self.hosts)

    def to_dict(self) -> dict:
        return {"env": self.env, "dry_run": self.dry_run, "ok": self.ok,
                "central": self.central, "hosts": [h.to_dict() for h in self.hosts]}

    def describe(self) -> list[str]:
        """The report as the CLI prints it: per host a header, then one line per step."""
        out = [f"host bootstrap {self.env}{' (dry run)' if self.dry_run else ''}",
               f"central: {self.central}"]
        for h in self.hosts:
            where = "" if h.root == "/" else f" (root {h.root})"
            if h.status in (REFUSED, FAILED):
                out.append(f"{h.node}{where}: {h.status.upper()}: {h.reason}")
            else:
                changed = len(h.changes)
                summary = {CHANGED: f"{changed} change(s)", PLANNED: f"{changed} change(s) planned",
                           UNCHANGED: "already prepared, nothing changed"}[h.status]
                out.append(f"{h.node}{where}: {summary}")
            out += [f"  {line}" for line in h.lines]
        if self.dry_run:
            out.append("dry run: nothing was changed")
        return out


# --------------------------------------------------------------------------- running


def prepare_host(host: Host, setup: HostSetup, *, dry_run: bool = False) -> HostReport:
    """Probe, preflight, then apply (or, with ``dry_run``, describe) every step on ``host``.

    Never raises for the host's sake: a refusal (nothing changed) or a failure
    part way (the lines say what was done) is the report's status and reason.
    """
    report = HostReport(host.name, host.root, UNCHANGED)
    steps = steps_for(host, setup)
    try:
        facts = probe(host, probe_request(host, setup, steps))
    except ReleaserError as exc:
        return _refused(report, str(exc))
    plan = [(step, step.check(facts)) for step in steps]
    reason = preflight(host, setup, facts, plan)
    if reason:
        return _refused(report, reason)
    report.changes = [{"action": c.action, "what": s.what, "detail": c.detail}
                      for s, c in plan if c]
    if dry_run:
        report.status = PLANNED if report.changes else UNCHANGED
        report.lines = [step.describe(change, dry_run=True) for step, change in plan]
        return report
    for step, change in plan:
        if change is not None:
            try:
                step.apply(host, change)
            except (ReleaserError, OSError) as exc:
                report.status = FAILED
                report.reason = (f"could not {change.action} {step.what}: {exc}; the lines "
                                 "above say what was changed before")
                return report
            report.status = CHANGED
        report.lines.append(step.describe(change))
    return report


def _refused(report: HostReport, reason: str) -> HostReport:
    report.status, report.reason = REFUSED, f"{reason}; nothing was changed"
    return report


def bootstrap(config, env_name: str, names: Iterable[str] = (), *, dry_run: bool = False,
              progress: Callable[[str], None] = lambda _m: None) -> BootstrapReport:
    """Prepare ``env_name``'s nodes (all, or those ``names``) as ``HostSetup`` says.

    The environment's overlay is made on the central repository first if it is
    missing (its nodes clone it); a real run holds the environment's lock, so no
    promote installs on a host while it is being prepared.  Bad arguments and
    configuration are refused before anything is touched (UsageError, ConfigError).
    """
    from releaser.central import overlay_git
    from releaser.central.lock import EnvironmentLock
    from releaser.central.repository import CentralRepository

    setup = HostSetup.from_config(config, env_name)
    nodes = _select(config.environment(env_name).nodes, names, env_name)
    central = CentralRepository.from_config(config)
    try:
        if dry_run:
            exists = central.exists(central.overlay_repo(env_name))
            return _run_hosts(config, setup, nodes, _central_line(exists, setup, True),
                              dry_run=True, progress=progress)
        with EnvironmentLock(central, env_name, f"host bootstrap {env_name}"):
            created = overlay_git.ensure_overlay(central, env_name, setup.repo)
            return _run_hosts(config, setup, nodes, _central_line(not created, setup, False),
                              dry_run=False, progress=progress)
    finally:
        close = getattr(central.runner, "close", None)
        if close:
            close()


def _central_line(existed: bool, setup: HostSetup, dry_run: bool) -> str:
    what = f"overlay {setup.env} ({setup.repo})"
    if existed:
        return f"unchanged {what}"
    return f"{'would create' if dry_run else 'created'} {what}"


def _select(nodes, names: Iterable[str], env: str) -> list:
    names = list(names)
    known = {n.name: n for n in nodes}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"environment {env} has no node {unknown[0]!r} (its nodes: "
                         f"{', '.join(known) or 'none'})")
    return [known[n] for n in dict.fromkeys(names)] if names else list(nodes)


def _run_hosts(config, setup: HostSetup, nodes, central_line: str, *, dry_run: bool,
               progress: Callable[[str], None]) -> BootstrapReport:
    """Prepare ``nodes``, up to the environment's ``policy.concurrency`` at once (hosts are
    independent: each is probed, judged and changed on its own); reports in config order."""
    from concurrent.futures import ThreadPoolExecutor

    from releaser.hosts.node import connect

    def one(node_config) -> HostReport:
        progress(f"{node_config.name}: probing")
        node = connect(config, node_config)
        try:
            result = prepare_host(Host(node.name, node.runner, node.root), setup,
                                  dry_run=dry_run)
        finally:
            node.close()
        progress(f"{node_config.name}: {result.status}")
        return result

    workers = max(1, min(len(nodes), config.environment(setup.env).policy.concurrency))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bootstrap") as pool:
        hosts = list(pool.map(one, nodes))
    return BootstrapReport(setup.env, dry_run, central_line, hosts)


__all__ = ["CHANGED", "FAILED", "PLANNED", "REFUSED", "UNCHANGED", "BootstrapReport",
           "HostReport", "bootstrap", "preflight", "prepare_host"]
