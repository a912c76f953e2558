"""What a host is and what it has: the inputs of a bootstrap (``Host``, ``Account``,
``HostSetup``) and the read-only probe that gathers every fact about a host in one
round trip (``Facts``), so planning and ``--dry-run`` never change anything.

Split from ``releaser.hosts.bootstrap``, which plans and applies the changes.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass

from portage.dep import Atom

from releaser.appcontract import AppContract
from releaser.errors import CommandError, ConfigError, NodeError, last_line
from releaser.hosts.runner import Runner

#: Seconds the probe may take (Portage's import, a git ls-remote over the network).
PROBE_TIMEOUT = 180.0


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Host:
    """One host to prepare: its name, its runner, and its ROOT as the runner sees it."""

    name: str
    runner: Runner
    root: str = "/"

    def path(self, host_path: str) -> str:
        """``host_path`` (absolute, as the host's ``/`` sees it) as the runner reaches it."""
        return host_path if self.root == "/" else posixpath.join(self.root, host_path.lstrip("/"))

    @property
    def prefix(self) -> list[str]:
        """The ``--prefix ROOT`` of the shadow tools on a folder root (none on ``/``)."""
        return [] if self.root == "/" else ["--prefix", self.root]


@dataclass(frozen=True)
class Account:
    """The app's system user and group (what acct-user/acct-group would make)."""

    user: str
    group: str
    home: str

    @classmethod
    def of(cls, contract: AppContract) -> "Account":
        """The app's account: user and group named after the app (the init script's
        ``NAME_USER``/``NAME_GROUP`` defaults), home its state folder /var/lib/NAME."""
        home = posixpath.dirname(contract.default_database_path)
        return cls(contract.service, contract.service, home)


@dataclass(frozen=True)
class HostSetup:
    """What every host of one environment must have, from releaser.toml."""

    env: str
    repo: str
    sync_uri: str
    account: Account
    app_dirs: tuple[str, ...]
    distdir: str
    pkgdir: str
    rdepend: tuple[str, ...]
    min_portage: str
    min_free_mb: int
    #: ``[trust]``: the environment's release key(s), ASCII-armoured; None: the
    #: overlay is unsigned and nodes verify nothing.
    release_keys: str | None = None
    #: ``install = "binary"``: the URL of the environment's binhost on central, written
    #: into ``binrepos.conf``; None: nodes build from source and need no binhost.
    binhost_url: str | None = None

    @classmethod
    def from_config(cls, config, env_name: str) -> "HostSetup":
        """The setup of ``env_name``'s hosts; ConfigError when ``[central] sync_uri`` is unset."""
        env = config.environment(env_name)
        central = config.central
        uri = central.overlay_sync_uri(env.name, env.overlay) if central else None
        if uri is None:
            raise ConfigError(
                f"{config.path}: central.sync_uri: missing (required by host bootstrap: the "
                "URL the nodes sync the overlay from, e.g. "
                '"ssh://git@central.example/srv/releaser/overlays/{env}.git")')
        contract = config.app.contract
        account = Account.of(contract)
        db_dir = posixpath.dirname(env.database.dump_dir)
        dirs = tuple(dict.fromkeys([account.home, db_dir, env.database.dump_dir]))
        return cls(env=env.name, repo=env.overlay, sync_uri=uri, account=account,
                   app_dirs=dirs, distdir=config.hosts.distdir, pkgdir=config.hosts.pkgdir,
                   rdepend=tuple(config.app.rdepend), min_portage=config.hosts.min_portage,
                   min_free_mb=config.hosts.min_free_mb, binhost_url=_binhost_of(config, env),
                   **_trust_of(config, env.name))

    @property
    def binhost_name(self) -> str:
        """The binrepos.conf section (and file) of the environment's binhost."""
        return f"releaser-{self.env}"

    @property
    def python_atoms(self) -> list[Atom]:
        """The app's dependencies on Python itself: what the host's python3 must satisfy."""
        return [a for a in map(Atom, self.rdepend) if a.cp == "dev-lang/python"]


def _binhost_of(config, env) -> str | None:
    """The binhost URL of a binary-mode environment: beside the central distfiles."""
    if env.install != "binary" or config.central is None:
        return None
    from releaser.central.binhost import binhost_url

    return binhost_url(config.central.distfiles_url, env.name)


def _trust_of(config, env: str) -> dict:
    """The ``HostSetup`` fields of ``[trust]``: the public keys ``env``'s nodes verify with."""
    if getattr(config, "trust", None) is None or not config.trust.signs(env):
        return {}
    from releaser.trust.keys import Keyring

    return {"release_keys": Keyring(config.trust.gnupghome).export(env)}


# --------------------------------------------------------------------------- the probe

#: Run on the host as ``python3 -I -c PROBE REQUEST``: every fact the preflight and
#: the steps' checks need, in one round trip, changing nothing.  Prints one JSON
#: object, last.  A folder root's accounts are read from ROOT/etc/{passwd,group};
#: on ``/`` from the name service, as useradd sees them.  When the host's profile
#: does not load (a folder root whose profile comes with the overlay it has not
#: synced yet), Portage reads no package.provided: the user profile's is read.
PROBE = r'''
import json, os, shutil, stat, subprocess, sys
req = json.loads(sys.argv[1])
root = req["root"]
out = {"python": "%d.%d.%d" % sys.version_info[:3], "euid": os.geteuid(), "tools": {},
       "entries": {}, "texts": {}, "users": {}, "groups": {}, "clones": {}, "deps": {}}

def run(argv, timeout=120):
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return 124, "", "timed out after %d s" % timeout
    return p.returncode, p.stdout.strip(), p.stderr.strip()

def kind(mode):
    return ("link" if stat.S_ISLNK(mode) else "dir" if stat.S_ISDIR(mode)
            else "file" if stat.S_ISREG(mode) else "other")

def entry(path):
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    e = {"type": kind(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
         "mode": stat.S_IMODE(st.st_mode)}
    if e["type"] == "link":
        try:
            e["target"] = kind(os.stat(path).st_mode)
        except OSError:
            e["target"] = None
    return e

for tool in req.get("tools", []):
    out["tools"][tool] = shutil.which(tool)
try:
    st = os.statvfs(root)
    out["free_mb"] = st.f_bavail * st.f_frsize // 1048576
except OSError as exc:
    out["free_mb"] = None
    out["root_error"] = "%s: %s" % (root, exc.strerror)
for path in req.get("stat", []):
    out["entries"][path] = entry(path)
for path in req.get("read", []):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            out["texts"][path] = f.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        out["texts"][path] = None

def table(name):
    rows = {}
    try:
        with open(os.path.join(root, "etc", name), encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.rstrip("\n").split(":")
                if len(parts) >= 4:
                    rows[parts[0]] = parts
    except FileNotFoundError:
        pass
    return rows

if root == "/":
    import grp, pwd
    for name in req.get("users", []):
        try:
            p = pwd.getpwnam(name)
            out["users"][name] = {"uid": p.pw_uid, "gid": p.pw_gid, "home": p.pw_dir,
                                  "shell": p.pw_shell}
        except KeyError:
            out["users"][name] = None
    for name in req.get("groups", []):
        try:
            out["groups"][name] = {"gid": grp.getgrnam(name).gr_gid}
        except KeyError:
            out["groups"][name] = None
else:
    passwd, group = table("passwd"), table("group")
    for name in req.get("users", []):
        p = passwd.get(name)
        out["users"][name] = p and len(p) >= 7 and {
            "uid": int(p[2]), "gid": int(p[3]), "home": p[5], "shell": p[6]} or None
    for name in req.get("groups", []):
        g = group.get(name)
        out["groups"][name] = g and {"gid": int(g[2])} or None

git = shutil.which("git")
if git:
    code, text, err = run([git, "--version"])
    out["git"] = text if code == 0 else None
    for path in req.get("clones", []):
        c = {"exists": os.path.isdir(path), "git": os.path.isdir(os.path.join(path, ".git"))}
        c["empty"] = c["exists"] and not os.listdir(path)
        if c["git"]:
            code, text, err = run([git, "-C", path, "config", "--get", "remote.origin.url"])
            c["origin"] = text if code == 0 else None
        out["clones"][path] = c
    if req.get("remote"):
        code, text, err = run([git, "ls-remote", "--", req["remote"]])
        out["remote_error"] = None if code == 0 else (err or "git ls-remote exited %d" % code)
else:
    out["git"] = None

if req.get("atoms") is not None:
    try:
        import portage
        out["portage"] = portage.VERSION
        try:  # what Portage verifies signed overlay commits with (sync-openpgp-key-path)
            import gemato.openpgp
            out["gemato"] = True
        except Exception:
            out["gemato"] = False
    except Exception as exc:
        out["portage"] = None
        out["portage_error"] = "%s: %s" % (type(exc).__name__, exc)
    else:
        from portage.dep import Atom, match_from_list
        settings = portage.settings
        trees = portage.db[settings["EROOT"]]
        vardb, portdb = trees["vartree"].dbapi, trees["porttree"].dbapi
        provided = settings.pprovideddict
        if not settings.profiles:
            from portage.util import grabfile
            from portage.versions import cpv_getkey
            provided = {}
            user = os.path.join(settings["PORTAGE_CONFIGROOT"], "etc/portage/profile")
            for cpv in grabfile(os.path.join(user, "package.provided")):
                provided.setdefault(cpv_getkey(cpv), []).append(cpv)
        for text in req["atoms"]:
            atom = Atom(text)
            for how, found in (("installed", lambda: vardb.match(atom)),
                               ("provided", lambda: match_from_list(atom, provided.get(atom.cp, []))),
                               ("available", lambda: portdb.match(atom))):
                matched = found()
                if matched:
                    out["deps"][text] = [how, str(matched[-1])]
                    break
            else:
                out["deps"][text] = None
print(json.dumps(out))
'''


@dataclass(frozen=True)
class Facts:
    """What the probe found on one host (paths as the runner reaches them)."""

    data: dict

    def entry(self, path: str) -> dict | None:
        return self.data["entries"].get(path)

    def text(self, path: str) -> str | None:
        return self.data["texts"].get(path)

    def user(self, name: str) -> dict | None:
        return self.data["users"].get(name)

    def group(self, name: str) -> dict | None:
        return self.data["groups"].get(name)

    def clone(self, path: str) -> dict:
        return self.data["clones"].get(path) or {}

    def __getitem__(self, key: str):
        return self.data.get(key)


def probe(host: Host, request: dict) -> Facts:
    """Run the probe on ``host`` with ``request`` (what to look at); NodeError if it cannot."""
    argv = ["python3", "-I", "-c", PROBE, json.dumps({"root": host.root, **request})]
    try:
        result = host.runner.run(argv, check=False, timeout=PROBE_TIMEOUT)
    except CommandError as exc:
        raise NodeError(str(exc)) from None
    if result.returncode == 127:
        raise NodeError("python3 is not installed (not on its PATH): Portage needs it")
    try:
        return Facts(json.loads(result.stdout.strip().splitlines()[-1]))
    except (IndexError, ValueError):
        raise NodeError(f"the probe gave no answer (python3 exited {result.returncode}: "
                          f"{last_line(result.stderr, result.stdout)})") from None


def group_id(host: Host, group: str) -> int:
    """The numeric id of ``group`` on ``host`` (within its ROOT): ``usermod --prefix``
    (shadow 4.13) looks a group *name* up on this machine, not in ROOT, so the
    shadow tools are given the number."""
    found = probe(host, {"groups": [group]}).group(group)
    if not found:
        raise NodeError(f"{host.name}: no group {group} in {host.path('/etc/group')}")
    return found["gid"]


def account_ids(host: Host, account: Account) -> tuple[int, int]:
    """The numeric user and group id of ``account`` on ``host`` (within its ROOT)."""
    facts = probe(host, {"users": [account.user], "groups": [account.group]})
    user, group = facts.user(account.user), facts.group(account.group)
    if not user or not group:
        raise NodeError(f"{host.name}: no user {account.user} or no group {account.group} "
                        f"in {host.path('/etc/passwd')} after creating them")
    return user["uid"], group["gid"]


