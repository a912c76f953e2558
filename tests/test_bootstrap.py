"""``releaser host bootstrap``: real sandbox nodes, real Portage, useradd, git and sshd.

The sandbox prepares its nodes with the bootstrap itself (``sandbox init``
lays out bare roots, then runs it), so a fresh sandbox node is a host the
bootstrap has prepared once.  What a node holds is read from its root
directly, never from the bootstrap's own report.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from releaser.cli import main
from releaser.config import load_config
from releaser.errors import ConfigError
from releaser.hosts import portage_commands as portage_tools
from releaser.hosts.bootstrap import prepare_host
from releaser.hosts.host_probe import Host, HostSetup
from releaser.hosts.local_root import portage_env
from releaser.hosts.portage_config import FETCHCOMMAND
from releaser.hosts.runner import LocalRunner
from releaser.hosts.transfer import PLACE_SCRIPT
from releaser.sandbox.sshd import SSHD

from .conftest import write_config
from .sandboxes import Sandbox, tree_state

NODE = "staging-1"
OVERLAY = "releaser-staging"
REPO_FILE = f"etc/portage/repos.conf/{OVERLAY}.conf"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd"),
                                reason="needs root and Debian's passwd (useradd)")


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    sandbox = Sandbox(tmp_path_factory.mktemp("bootstrap"), {"staging": 1})
    yield sandbox
    sandbox.down()


def cli(config: Path, *args: str) -> int:
    return main(["-c", str(config), *args])


def prepared(sb: Sandbox) -> None:
    """Start from a prepared node whatever an earlier test did to it."""
    assert cli(sb.config_path, "host", "bootstrap", "staging", "-q") == 0


def passwd(root: Path) -> dict[str, list[str]]:
    return {line.split(":")[0]: line.split(":") for line in
            (root / "etc/passwd").read_text().splitlines()}


def test_sandbox_node_is_prepared_by_the_bootstrap(sb):
    root = sb.node_root(NODE)
    # the overlay syncs from the configured sync_uri, and Portage verifies its commits
    # with the environment's release key (a sandbox signs, as releaser does by default)
    repo_file = (root / REPO_FILE).read_text()
    uri = f"{sb.central}/overlays/staging.git"
    assert f"[{OVERLAY}]\nlocation = {root}/var/db/repos/{OVERLAY}\nsync-type = git\n" \
           f"sync-uri = {uri}\n" in repo_file
    assert ("\nsync-git-verify-commit-signature = yes\nsync-openpgp-key-path = "
            f"{root}/etc/portage/releaser/keys/staging.asc\n") in repo_file
    assert portage_tools.sync(LocalRunner(env=portage_env(root)), OVERLAY).ok
    # make.conf is a folder: the host's own file kept as 00-local.conf, releaser's beside it,
    # and Portage reads both
    assert sorted(p.name for p in (root / "etc/portage/make.conf").iterdir()) == \
        ["00-local.conf", "90-releaser.conf"]
    runner = LocalRunner(env=portage_env(root))
    assert portage_tools.envvar(runner, "PKGDIR") == f"{root}/var/cache/binpkgs"
    assert portage_tools.envvar(runner, "BINPKG_FORMAT") == "gpkg"
    assert portage_tools.envvar(runner, "FETCHCOMMAND") == FETCHCOMMAND
    # the app's system account, as acct-user makes it, in the root's own passwd
    user = passwd(root)["notes"]
    assert user[5:] == ["/var/lib/notes", "/sbin/nologin"]
    assert int(user[2]) < 1000
    gid = next(int(line.split(":")[2]) for line in (root / "etc/group").read_text().splitlines()
               if line.startswith("notes:"))
    for folder in ("var/lib/notes", "var/lib/notes/backups"):
        st = (root / folder).stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (int(user[2]), gid, 0o750)


def test_a_second_run_changes_nothing_and_says_so(sb, capsys):
    prepared(sb)
    root = sb.node_root(NODE)
    before = tree_state(root)
    capsys.readouterr()
    assert cli(sb.config_path, "host", "bootstrap", "staging") == 0
    out = capsys.readouterr().out
    assert f"{NODE} (root {root}): already prepared, nothing changed" in out
    lines = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    assert lines and all(line.startswith("unchanged ") for line in lines), lines
    assert tree_state(root) == before


def test_dry_run_prints_the_plan_and_changes_nothing(sb, capsys):
    prepared(sb)
    root = sb.node_root(NODE)
    (root / REPO_FILE).unlink()
    (root / "var/lib/notes/backups").chmod(0o755)
    (root / "etc/portage/make.conf/90-releaser.conf").write_text('PKGDIR="/elsewhere"\n')
    text = (root / "etc/passwd").read_text()
    (root / "etc/passwd").write_text(text.replace(":/sbin/nologin", ":/bin/sh"))
    before = tree_state(root)

    capsys.readouterr()
    assert cli(sb.config_path, "host", "bootstrap", "staging", "--dry-run", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert tree_state(root) == before
    [host] = report["hosts"]
    assert (report["dry_run"], host["status"]) == (True, "planned")
    assert [(c["action"], c["what"], c["detail"]) for c in host["changes"]] == [
        ("create", f"/{REPO_FILE}", ""),
        ("update", "/etc/portage/make.conf/90-releaser.conf", "rewritten with releaser's settings"),
        ("update", "user notes", "shell /bin/sh -> /sbin/nologin"),
        ("update", "/var/lib/notes/backups", "mode 0755 -> 0750"),
    ]
    assert f"would create /{REPO_FILE}" in host["lines"]

    # the real run applies exactly that plan, and the next one finds nothing to do
    assert cli(sb.config_path, "host", "bootstrap", "staging") == 0
    out = capsys.readouterr().out
    assert f"{NODE} (root {root}): 4 change(s)" in out
    assert "updated /var/lib/notes/backups: mode 0755 -> 0750" in out
    assert passwd(root)["notes"][6] == "/sbin/nologin"
    assert (root / "var/lib/notes/backups").stat().st_mode & 0o777 == 0o750
    after = tree_state(root)
    assert cli(sb.config_path, "host", "bootstrap", "staging") == 0
    assert "already prepared, nothing changed" in capsys.readouterr().out
    assert tree_state(root) == after


def test_a_host_without_git_is_refused_and_left_as_it_was(sb):
    prepared(sb)
    root = sb.node_root(NODE)
    (root / REPO_FILE).unlink()  # the bootstrap would have something to do
    before = tree_state(root)
    env = portage_env(root)
    # the venv's bin (python3, Portage) and the root's helpers, no /usr/bin: no git
    env["PATH"] = os.pathsep.join(env["PATH"].split(os.pathsep)[:2])
    host = Host(NODE, LocalRunner(host=NODE, env=env), str(root))
    report = prepare_host(host, HostSetup.from_config(sb.config, "staging"))
    assert report.status == "refused"
    assert report.reason == ("git is not installed (not on its PATH): Portage's git sync of "
                             "the overlay needs it; nothing was changed")
    assert report.lines == [] and report.changes == []
    assert tree_state(root) == before


@pytest.mark.parametrize("edit, reason", [
    (lambda t: t + "\n[hosts]\nmin_free_mb = 1000000000\n",
     r"\d+ MB free on .*/nodes/staging-1; at least 1000000000 MB needed \(\[hosts\] min_free_mb\)"),
    (lambda t: t + '\n[hosts]\nmin_portage = "99.0"\n',
     r"Portage \S+ is older than 99.0 \(\[hosts\] min_portage\)"),
    (lambda t: t.replace('"dev-python/waitress"]', '"dev-python/waitress", "dev-python/nope"]'),
     r"the app's runtime dependencies cannot be satisfied: dev-python/nope \(not installed, "
     r"provided, or available in any of its repositories\)"),
    (lambda t: t.replace('">=dev-lang/python-3.11"', '">=dev-lang/python-3.99"'),
     r"python3 is 3\.\d+\.\d+; the app needs >=dev-lang/python-3.99"),
    (lambda t: t.replace('/central/overlays/{env}.git"', '/central/overlays/none-{env}.git"'),
     r"cannot reach the overlay at .*/central/overlays/none-staging.git: fatal: "),
], ids=["free-disk", "portage-version", "runtime-dependency", "python-version", "overlay-url"])
def test_a_host_failing_the_preflight_is_refused_with_one_reason_and_untouched(
        sb, capsys, edit, reason):
    prepared(sb)
    root = sb.node_root(NODE)
    (root / REPO_FILE).unlink()
    before = tree_state(root)
    config = sb.directory / "refusing.toml"  # beside releaser.toml: same relative paths
    config.write_text(edit(sb.config_path.read_text()))
    capsys.readouterr()
    assert cli(config, "host", "bootstrap", "staging") == 1
    out = capsys.readouterr().out.splitlines()
    refused = [line for line in out if line.startswith(f"{NODE} ")]
    assert len(refused) == 1 and re.fullmatch(
        rf"{NODE} \(root {root}\): REFUSED: {reason}.*; nothing was changed", refused[0]), out
    assert tree_state(root) == before


def test_sync_uri_is_validated_and_a_path_refused_for_a_real_host(tmp_path, app_repo):
    hosts = ('\n[ssh]\nknown_hosts = "kh"\nidentity_file = "id"\n\n[environments.staging]\n'
             'nodes = [{ name = "web1", address = "192.0.2.10", app_url = "http://192.0.2.10:8080" }]\n')
    for uri, message in [
        ("/srv/releaser/overlays/{env}.git", "central.sync_uri: '/srv/releaser/overlays/{env}.git' "
         "is a path on this machine, but environments.staging.nodes[0] (web1) is a host of its "
         "own (ROOT /): give an ssh:// or https:// URL it can reach"),
        ("ssh://git@central.example/o/{repo}.git", "central.sync_uri: 'ssh://git@central.example/"
         "o/{repo}.git': unknown placeholder {repo} (known: {env}, {overlay})"),
        ("ftp://central.example/{env}.git", "scheme 'ftp' is not one of"),
    ]:
        path = write_config(tmp_path / "releaser.toml", app_repo,
                            extra=f'sync_uri = "{uri}"\n{hosts}')
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(path)
    path = write_config(tmp_path / "releaser.toml", app_repo,
                        extra=f'sync_uri = "ssh://git@central.example/srv/o/{{overlay}}.git"\n{hosts}')
    config = load_config(path)
    assert config.central.overlay_sync_uri("staging", "releaser-staging") == \
        "ssh://git@central.example/srv/o/releaser-staging.git"
    # without a sync_uri the bootstrap refuses before touching anything
    path = write_config(tmp_path / "releaser.toml", app_repo, extra=hosts)
    assert cli(path, "host", "bootstrap", "staging") == 2



@pytest.mark.skipif(not (os.path.exists(SSHD) and shutil.which("ssh-keygen")),
                    reason="needs Debian's openssh-server")
def test_bootstrap_over_ssh_against_a_real_sshd(tmp_path, capsys):
    fleet = Sandbox(tmp_path, {"staging": 1}, ssh=True)
    try:
        node = fleet.config.environment("staging").nodes[0]
        assert not node.is_local
        log = fleet.sshd(NODE).log_path
        # sandbox init prepared the node through its sshd: the login carries its ROOT
        logins = log.read_text().count("Accepted publickey")
        assert logins >= 1
        root = fleet.node_root(NODE)
        assert passwd(root)["notes"][5:] == ["/var/lib/notes", "/sbin/nologin"]
        assert (root / REPO_FILE).exists()
        assert (root / f"var/db/repos/{OVERLAY}/.git").is_dir()
        capsys.readouterr()
        assert cli(fleet.config_path, "host", "bootstrap", "staging") == 0
        assert "already prepared, nothing changed" in capsys.readouterr().out
        assert log.read_text().count("Accepted publickey") > logins  # it went over SSH
    finally:
        fleet.down()


# ------------------------------------------------- a host whose ROOT is / (the runner seam)


class RecordingHost:
    """A Gentoo host at the Runner seam: the probe answers with the facts given, every other
    command is recorded (and succeeds), files put on it are kept by path."""

    host = "web1"

    def __init__(self, facts: dict):
        self.facts = facts
        self.commands: list[list[str]] = []
        self.files: dict[str, str] = {}

    def run(self, argv, *, check=True, env=None, input=None, timeout=None):
        from releaser.hosts.runner import CommandResult

        if argv[0] == "python3":
            request = json.loads(argv[-1])
            assert request["root"] == "/"
            created = {c[0] for c in self.commands}
            answer = {**self.facts,
                      "users": {u: {"uid": 998, "gid": 998, "home": "/var/lib/notes",
                                    "shell": "/sbin/nologin"} if "useradd" in created else None
                                for u in request.get("users", [])},
                      "groups": {g: {"gid": 998} if "groupadd" in created else None
                                 for g in request.get("groups", [])}}
            return CommandResult(tuple(argv), 0, json.dumps(answer) + "\n", "")
        self.commands.append(list(argv))
        return CommandResult(tuple(argv), 0, "", "")

    def put(self, local, remote):
        self.files[remote] = Path(local).read_text()
        self.commands.append(["put", remote])


def gentoo_facts(**changes) -> dict:
    """A stock Gentoo host never bootstrapped: make.conf and repos.conf are files."""
    facts = {"python": "3.12.3", "euid": 0, "portage": "3.0.85", "git": "git version 2.45.2",
             "free_mb": 20000, "remote_error": None,
             "tools": {"git": "/usr/bin/git", "groupadd": "/usr/sbin/groupadd",
                       "useradd": "/usr/sbin/useradd", "usermod": "/usr/sbin/usermod"},
             "entries": {"/etc/portage/repos.conf": {"type": "file", "uid": 0, "gid": 0,
                                                     "mode": 0o644},
                         "/etc/portage/make.conf": {"type": "file", "uid": 0, "gid": 0,
                                                    "mode": 0o644}},
             "texts": {}, "clones": {},
             "deps": {">=dev-lang/python-3.11": ["installed", "dev-lang/python-3.12.3"],
                      "dev-python/flask": ["installed", "dev-python/flask-3.1.0"]}}
    facts.update(changes)
    return facts


def production_setup():
    from releaser.hosts.host_probe import Account

    return HostSetup(env="production", repo="releaser-production",
                     sync_uri="ssh://git@central.example/srv/releaser/overlays/production.git",
                     account=Account("notes", "notes", "/var/lib/notes"),
                     app_dirs=("/var/lib/notes", "/var/lib/notes/backups"),
                     distdir="/var/cache/distfiles", pkgdir="/var/cache/binpkgs",
                     rdepend=(">=dev-lang/python-3.11", "dev-python/flask"),
                     min_portage="3.0.83", min_free_mb=512)


def test_a_gentoo_host_gets_the_same_steps_at_its_real_paths():
    host = RecordingHost(gentoo_facts())
    report = prepare_host(Host("web1", host, "/"), production_setup())
    assert report.status == "changed", report.reason
    repos, make = "/etc/portage/repos.conf", "/etc/portage/make.conf"

    def to_folder(path):  # the operator's file becomes a folder, kept as 00-local.conf
        return [["rm", "-rf", "--", f"{path}.releaser-new"], ["mkdir", "--", f"{path}.releaser-new"],
                ["cp", "-p", "--", path, f"{path}.releaser-new/00-local.conf"],
                ["mv", "-T", "--", path, f"{path}.releaser-old"],
                ["mv", "-T", "--", f"{path}.releaser-new", path], ["rm", "-f", "--", f"{path}.releaser-old"]]

    def placed(path):  # transfer.place_file: a temporary name beside it, renamed over it
        folder, tmp = path.rsplit("/", 1)[0], f"{path.rsplit('/', 1)[0]}/TMP"
        return [["put", tmp], ["sh", "-c", PLACE_SCRIPT, "releaser-place", folder, tmp, path,
                               "0644", "", "", "put"]]

    def owned(path):
        return [["mkdir", "-p", "--", path], ["chown", "998:998", "--", path],
                ["chmod", "0750", "--", path]]

    commands = [[re.sub(r"/\.[^/]*\.partial-[0-9a-f]+$", "/TMP", word) for word in c]
                for c in host.commands]
    assert commands == [
        *to_folder(repos), *placed(f"{repos}/releaser-production.conf"),
        *to_folder(make), *placed(f"{make}/90-releaser.conf"),
        # the system's own tools, no --prefix on /
        ["groupadd", "--system", "notes"],
        ["useradd", "--system", "--gid", "998", "--home-dir", "/var/lib/notes", "--no-create-home",
         "--shell", "/sbin/nologin", "--comment", "notes service (releaser)", "notes"],
        *owned("/var/lib/notes"), *owned("/var/lib/notes/backups"),
        ["emaint", "sync", "-r", "releaser-production"],
    ]
    files = {re.sub(r"/\.[^/]*\.partial-[0-9a-f]+$", "/TMP", path): text
             for path, text in host.files.items()}
    assert "[releaser-production]\nlocation = /var/db/repos/releaser-production\nsync-type = git\n" \
        "sync-uri = ssh://git@central.example/srv/releaser/overlays/production.git\n" \
        in files[f"{repos}/TMP"]
    assert 'DISTDIR="/var/cache/distfiles"\nPKGDIR="/var/cache/binpkgs"\nBINPKG_FORMAT="gpkg"\n' \
        in files[f"{make}/TMP"]
    assert not re.search(r"^GENTOO_MIRRORS", files[f"{make}/TMP"], re.M)


def test_a_gentoo_host_refused_by_the_preflight_runs_no_command():
    for facts, reason in [
        (gentoo_facts(euid=1000), "runs commands as uid 1000, not root"),
        (gentoo_facts(portage=None, portage_error="ModuleNotFoundError: No module named 'portage'"),
         "Portage is not installed: python3 cannot import portage (ModuleNotFoundError"),
        (gentoo_facts(tools={"git": "/usr/bin/git"}),
         "groupadd is not installed (not on its PATH): needed for group notes"),
        (gentoo_facts(entries={"/etc/portage/make.conf": {"type": "link", "target": "file",
                                                          "uid": 0, "gid": 0, "mode": 0o777}}),
         "/etc/portage/make.conf is a link to a file: make it a folder"),
        (gentoo_facts(clones={"/var/db/repos/releaser-production": {"exists": True, "git": False,
                                                                    "empty": False}}),
         "/var/db/repos/releaser-production exists and is not a git clone"),
    ]:
        host = RecordingHost(facts)
        report = prepare_host(Host("web1", host, "/"), production_setup())
        assert (report.status, host.commands) == ("refused", []), report.reason
        assert report.reason.startswith(reason) and report.reason.endswith("; nothing was changed")
