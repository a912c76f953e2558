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

import posixpath
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

from portage.dep import match_from_list
from portage.versions import vercmp

from releaser.central.overlay_git import stderr_reason
from releaser.errors import ReleaserError, UsageError
from releaser.hosts import portage_commands
from releaser.hosts.portage_config import (ETC_PORTAGE, REPOS_DIR, BinhostSpec,
                                           ReleaserMakeConf, RepoSpec, render_binrepo_file,
                                           render_releaser_make_conf, render_repo_file)
from releaser.hosts.transfer import place_file
from releaser.trust.keys import NODE_KEYS_DIR
from releaser.hosts.host_probe import (Account, Facts, Host, HostSetup, account_ids, group_id,
                                       probe)

#: releaser's file in a host's make.conf folder: after the host's own (``00-...``), so
#: its few settings hold, before any ``99-...`` an operator adds to override them.
RELEASER_MAKE_CONF = "90-releaser.conf"
#: Where an operator's make.conf (or repos.conf) *file* goes when it becomes a folder.
LOCAL_PART = "00-local.conf"
#: The app's folders: the mode its init script's ``checkpath`` gives them.
APP_DIR_MODE = 0o750
#: The login shell of the app's user: none (acct-user's default).
NOLOGIN = "/sbin/nologin"
#: Seconds the overlay's first clone may take.
SYNC_TIMEOUT = 600.0

#: Status of a host in a report.
CHANGED, UNCHANGED, PLANNED, REFUSED, FAILED = "changed", "unchanged", "planned", "refused", "failed"


# --------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class Change:
    """What a step would change: ``action`` "create" or "update", and how."""

    action: str
    detail: str = ""


_PAST = {"create": "created", "update": "updated"}


class Step:
    """One thing a prepared host has.  ``check`` reads facts only; ``apply`` changes the host.

    ``what`` names the thing as the host sees it (``/etc/portage/...``,
    ``user notes``); ``needs`` are the programs ``apply`` runs beyond coreutils.
    """

    what: str  # set by each step (no default here: dataclass steps would inherit it)
    needs: tuple[str, ...] = ()

    def probe_request(self) -> dict[str, list[str]]:
        return {}

    def refusal(self, facts: Facts) -> str | None:
        """Why the host cannot have this step applied (something in the way), or None."""
        return None

    def check(self, facts: Facts) -> Change | None:
        raise NotImplementedError

    def apply(self, host: Host, change: Change) -> None:
        """Make the ``change`` that ``check`` found."""
        raise NotImplementedError

    def describe(self, change: Change | None, *, dry_run: bool = False) -> str:
        """``created X``, ``would update X: how``, ``unchanged X``."""
        if change is None:
            return f"unchanged {self.what}"
        verb = f"would {change.action}" if dry_run else _PAST[change.action]
        return f"{verb} {self.what}" + (f": {change.detail}" if change.detail else "")


@dataclass
class ConfigFolder(Step):
    """A Portage configuration path that must be a folder (``make.conf``, ``repos.conf``).

    Portage reads a folder's files in name order as one; a *file* there is the
    operator's and is kept, unchanged, as ``LOCAL_PART`` inside the new folder.
    """

    what: str
    path: str

    def probe_request(self):
        return {"stat": [self.path]}

    def refusal(self, facts):
        e = facts.entry(self.path)
        if e and (e["type"] == "other" or e["type"] == "link" and e.get("target") != "dir"):
            return (f"{self.what} is a {'link to a file' if e['type'] == 'link' else e['type']}"
                    f": make it a folder (Portage reads every file in it), then bootstrap again")
        return None

    def check(self, facts):
        e = facts.entry(self.path)
        if e is None:
            return Change("create", "a folder Portage reads every file of")
        if e["type"] == "file":
            return Change("update", f"made a folder; its settings kept, unchanged, in "
                                    f"{posixpath.join(self.what, LOCAL_PART)}")
        return None

    def apply(self, host, change):
        run = host.runner.run
        if change.action == "create":
            run(["mkdir", "-p", "--", self.path])
            return
        new, old = f"{self.path}.releaser-new", f"{self.path}.releaser-old"
        run(["rm", "-rf", "--", new])  # what a run killed here left: a copy only
        run(["mkdir", "--", new])
        run(["cp", "-p", "--", self.path, posixpath.join(new, LOCAL_PART)])
        run(["mv", "-T", "--", self.path, old])
        try:
            run(["mv", "-T", "--", new, self.path])
        except BaseException:
            run(["mv", "-T", "--", old, self.path], check=False)
            raise
        run(["rm", "-f", "--", old])


@dataclass
class ConfigFile(Step):
    """A configuration file releaser owns on the host, rewritten whole when it differs."""

    what: str
    path: str
    text: str

    def probe_request(self):
        return {"stat": [self.path], "read": [self.path]}

    def refusal(self, facts):
        e = facts.entry(self.path)
        if e and e["type"] not in ("file",):
            return f"{self.what} is a {e['type']}, not a file releaser can write"
        return None

    def check(self, facts):
        current = facts.text(self.path)
        if current is None:
            return Change("create")
        if current != self.text:
            return Change("update", "rewritten with releaser's settings")
        return None

    def apply(self, host, change):
        with tempfile.TemporaryDirectory(prefix="releaser-bootstrap-") as tmp:
            local = Path(tmp) / PurePosixPath(self.path).name
            local.write_text(self.text, encoding="utf-8")
            place_file(host.runner, local, self.path, mode="0644")


@dataclass
class Group(Step):
    """The app's system group (``groupadd --system``)."""

    name: str
    what: str = ""
    needs: tuple[str, ...] = ("groupadd",)

    def __post_init__(self):
        self.what = f"group {self.name}"

    def check(self, facts):
        return None if facts.group(self.name) else Change("create", "system group")

    def apply(self, host, change):
        host.runner.run(["groupadd", *host.prefix, "--system", self.name])


@dataclass
class User(Step):
    """The app's system user: its group, its home, no login shell (what acct-user makes)."""

    account: Account
    what: str = ""
    needs: tuple[str, ...] = ("useradd", "usermod")

    def __post_init__(self):
        self.what = f"user {self.account.user}"

    def check(self, facts):
        a = self.account
        user, group = facts.user(a.user), facts.group(a.group)
        if user is None:
            return Change("create", f"system user, group {a.group}, home {a.home}, "
                                    f"shell {NOLOGIN}")
        wrong = [f"{key} {have} -> {want}" for key, have, want in (
            ("home", user["home"], a.home), ("shell", user["shell"], NOLOGIN),
            ("group", user["gid"], group["gid"] if group else a.group)) if have != want]
        return Change("update", ", ".join(wrong)) if wrong else None

    def apply(self, host, change):
        a = self.account
        gid = str(group_id(host, a.group))
        if change.action == "update":
            host.runner.run(["usermod", *host.prefix, "--home", a.home, "--shell", NOLOGIN,
                             "--gid", gid, a.user])
        else:
            host.runner.run(["useradd", *host.prefix, "--system", "--gid", gid,
                             "--home-dir", a.home, "--no-create-home", "--shell", NOLOGIN,
                             "--comment", f"{a.user} service (releaser)", a.user])


@dataclass
class AppFolder(Step):
    """A folder of the app's state, owned by its user and group, mode 0750."""

    what: str
    path: str
    account: Account

    def probe_request(self):
        return {"stat": [self.path]}

    def refusal(self, facts):
        e = facts.entry(self.path)
        if e and e["type"] != "dir":
            return f"{self.what} is a {e['type']}, not a folder"
        return None

    def check(self, facts):
        e = facts.entry(self.path)
        if e is None:
            return Change("create", f"owner {self.account.user}:{self.account.group}, "
                                    f"mode {APP_DIR_MODE:04o}")
        user, group = facts.user(self.account.user), facts.group(self.account.group)
        wrong = []
        if not user or not group or (e["uid"], e["gid"]) != (user["uid"], group["gid"]):
            wrong.append(f"owner {e['uid']}:{e['gid']} -> {self.account.user}:"
                         f"{self.account.group}")
        if e["mode"] != APP_DIR_MODE:
            wrong.append(f"mode {e['mode']:04o} -> {APP_DIR_MODE:04o}")
        return Change("update", ", ".join(wrong)) if wrong else None

    def apply(self, host, change):
        uid, gid = account_ids(host, self.account)
        host.runner.run(["mkdir", "-p", "--", self.path])
        host.runner.run(["chown", f"{uid}:{gid}", "--", self.path])
        host.runner.run(["chmod", f"{APP_DIR_MODE:04o}", "--", self.path])


@dataclass
class OverlayClone(Step):
    """The overlay cloned from its sync URI by Portage's own git sync (``emaint sync``)."""

    what: str
    path: str
    repo: str
    sync_uri: str

    def probe_request(self):
        return {"clones": [self.path]}

    def refusal(self, facts):
        c = facts.clone(self.path)
        if c.get("exists") and not c.get("git") and not c.get("empty"):
            return (f"{self.what} exists and is not a git clone: move it away so Portage can "
                    f"clone the overlay there")
        return None

    def check(self, facts):
        c = facts.clone(self.path)
        if not c.get("git"):
            return Change("create", f"cloned from {self.sync_uri}")
        if c.get("origin") not in (self.sync_uri, self.sync_uri.removeprefix("file://")):
            return Change("update", f"origin {c.get('origin')} -> {self.sync_uri}")
        return None

    def apply(self, host, change):
        portage_commands.sync(host.runner, self.repo, timeout=SYNC_TIMEOUT)


def steps_for(host: Host, setup: HostSetup) -> list[Step]:
    """Every step of ``setup`` on ``host``, in the order they are applied."""
    etc = "/" + str(ETC_PORTAGE)
    repos_dir, make_dir = f"{etc}/repos.conf", f"{etc}/make.conf"
    repo_file = f"{repos_dir}/{setup.repo}.conf"
    make_file = f"{make_dir}/{RELEASER_MAKE_CONF}"
    location = f"{REPOS_DIR}/{setup.repo}"
    key_file = f"{NODE_KEYS_DIR}/{setup.env}.asc"
    repo = RepoSpec(setup.repo, location=Path(host.path(location)), sync_type="git",
                    sync_uri=setup.sync_uri,
                    openpgp_key=host.path(key_file) if setup.release_keys else None)
    make_conf = ReleaserMakeConf(Path(host.root), distdir=setup.distdir, pkgdir=setup.pkgdir)
    account = setup.account
    steps: list[Step] = []
    if setup.release_keys:  # before the repos.conf entry that names it
        steps.append(ConfigFile(key_file, host.path(key_file), setup.release_keys))
    steps += [
        ConfigFolder(repos_dir, host.path(repos_dir)),
        ConfigFile(repo_file, host.path(repo_file), render_repo_file(repo, Path(host.root))),
        ConfigFolder(make_dir, host.path(make_dir)),
        ConfigFile(make_file, host.path(make_file), render_releaser_make_conf(make_conf)),
        Group(account.group),
        User(account),
    ]
    if setup.binhost_url:
        steps += _binhost_steps(host, setup, etc)
    steps += [AppFolder(d, host.path(d), account) for d in setup.app_dirs]
    steps.append(OverlayClone(location, host.path(location), setup.repo, setup.sync_uri))
    return steps


def _binhost_steps(host: Host, setup: HostSetup, etc: str) -> list[Step]:
    """``binrepos.conf/<binhost>.conf`` of a binary-mode environment (``install = "binary"``):
    its packages' index kept under ``/var/cache/binhost`` inside the host's ROOT."""
    folder = f"{etc}/binrepos.conf"
    path = f"{folder}/{setup.binhost_name}.conf"
    spec = BinhostSpec(setup.binhost_name, setup.binhost_url,
                       location=Path(host.path(f"/var/cache/binhost/{setup.binhost_name}")))
    return [ConfigFolder(folder, host.path(folder)),
            ConfigFile(path, host.path(path), render_binrepo_file(spec, Path(host.root)))]


def probe_request(host: Host, setup: HostSetup, steps: Iterable[Step]) -> dict:
    """What the probe must look at for ``steps`` and the preflight."""
    request: dict[str, list] = {"stat": [], "read": [], "clones": [],
                                "users": [setup.account.user], "groups": [setup.account.group],
                                "atoms": list(setup.rdepend), "remote": setup.sync_uri}
    tools = {"git"}
    for step in steps:
        tools.update(step.needs)
        for key, values in step.probe_request().items():
            request[key] += values
    request["tools"] = sorted(tools)
    return request


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


__all__ = ["Account", "BootstrapReport", "Change", "Facts", "Host", "HostReport", "HostSetup",
           "Step", "bootstrap", "prepare_host", "preflight", "probe",
           "steps_for"]
