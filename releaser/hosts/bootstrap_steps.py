"""The steps of ``releaser host bootstrap``: one small object per thing a prepared host has.

It exists apart from the driver (``releaser.hosts.bootstrap``: probe, preflight,
apply, report) because a step is node-side and self-contained: ``check`` reads
only the probe's facts, ``apply`` makes the change through the host's runner,
``describe`` says it, so the same objects serve a dry run, a real run and a
pull agent.  ``steps_for`` is the plan of a host, in the order it is applied
(the list and its order are described in ``releaser.hosts.bootstrap``);
``probe_request`` is what the probe must look at for them.
"""

from __future__ import annotations

import posixpath
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable

from releaser.hosts import portage_commands
from releaser.hosts.portage_config import (ETC_PORTAGE, REPOS_DIR, BinhostSpec,
                                           ReleaserMakeConf, RepoSpec, render_binrepo_file,
                                           render_releaser_make_conf, render_repo_file)
from releaser.hosts.transfer import place_file
from releaser.trust.keys import NODE_KEYS_DIR
from releaser.hosts.host_probe import Account, Facts, Host, HostSetup, account_ids, group_id

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


__all__ = ["APP_DIR_MODE", "LOCAL_PART", "NOLOGIN", "RELEASER_MAKE_CONF", "SYNC_TIMEOUT",
           "AppFolder", "Change", "ConfigFile", "ConfigFolder", "Group", "OverlayClone", "Step",
           "User", "probe_request", "steps_for"]
