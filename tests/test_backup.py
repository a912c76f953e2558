"""Backups before an install, and the way back: real Portage, real SQLite, a real sandbox node.

One staging node runs notes 1.0.0 (installed by ``promote``) with a note
written through its HTTP API.  The tests run in file order and build on each
other: package, dump, the failures verification must catch, the rebuilt-node
path back (package from central, emerge --usepkgonly), database restore, and
finally retention over two versions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import urllib.request
from pathlib import Path

import pytest

from releaser.central.repository import CentralRepository
from releaser import backup
from releaser.hosts import portage_commands as portage_tools
from releaser.appcontract import AppContract
from releaser.errors import BackupError, UsageError
from releaser.hosts.node import connect
from releaser.deploy.promote import promote

from .conftest import commit_all, git
from .sandboxes import Sandbox

ENV, NODE, APP = "staging", "staging-1", AppContract("notes")
CPV = "www-apps/notes-1.0.0"
OPERATOR_EDIT = "# edited by the operator: kept by quickpkg --include-config=y\n"


@dataclasses.dataclass
class World:
    sb: Sandbox
    node: object
    central: object
    db_path: str
    base_url: str
    dumps: list = dataclasses.field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.sb.node_root(NODE)

    def binpkg(self, cpv: str = CPV) -> Path:
        category, pf = cpv.split("/")
        return self.root / "var/cache/binpkgs" / category / f"{pf}.gpkg.tar"

    def central_binpkg(self, cpv: str = CPV) -> Path:
        category, pf = cpv.split("/")
        return self.sb.central / "binpkgs" / ENV / category / f"{pf}.gpkg.tar"


def sha(path: Path, algo: str) -> str:
    return hashlib.new(algo, path.read_bytes()).hexdigest()


def http(world: World, method: str, path: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(world.base_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def service(world: World, action: str) -> None:
    world.node.runner.run(["rc-service", APP.service, action])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    sb = Sandbox(tmp_path_factory.mktemp("backup"), {ENV: 1})
    try:
        assert promote(sb.config, ENV).ok
        env = sb.config.environment(ENV)
        node = connect(sb.config, env.nodes[0])
        w = World(sb, node, CentralRepository.from_config(sb.config), env.database.path,
                  env.nodes[0].health_url.rsplit("/health", 1)[0])
        assert http(w, "POST", "/notes", {"title": "keep me", "body": "before the upgrade"})
        with (w.root / "etc/notes/notes.toml").open("a") as fh:
            fh.write(OPERATOR_EDIT)
        yield w
    finally:
        sb.down()


# ------------------------------------------------------------------ binary packages


def test_backup_package_packs_the_running_version_with_its_config(world):
    made = backup.backup_package(world.node, world.central, ENV, CPV)
    assert made.made and made.uploaded
    assert made.node_path == str(world.binpkg()) and made.node == NODE

    members = subprocess.run(["tar", "-tf", made.node_path], check=True, capture_output=True,
                             text=True).stdout.split()
    assert {"notes-1.0.0/gpkg-1", "notes-1.0.0/image.tar.zst"} <= set(members)
    image = subprocess.run(["tar", "-xOf", made.node_path, "notes-1.0.0/image.tar.zst"],
                           check=True, capture_output=True).stdout
    files = subprocess.run(["tar", "--zstd", "-t", "-f", "-"], input=image, check=True,
                           capture_output=True).stdout.decode().split()
    for wanted in ("usr/lib/notes/notes/backup.py", "usr/bin/notes", "etc/init.d/notes",
                   "etc/notes/notes.toml"):
        assert any(f.endswith(wanted) for f in files), wanted
    config = subprocess.run(["tar", "--zstd", "-xO", "-f", "-", "--wildcards",
                             "*etc/notes/notes.toml"],
                            input=image, check=True, capture_output=True).stdout.decode()
    assert config == (world.root / "etc/notes/notes.toml").read_text()
    assert OPERATOR_EDIT in config and "[notes]" in config

    central = world.central_binpkg()
    assert made.central_path == str(central)
    assert sha(central, "sha512") == made.sha512 == sha(world.binpkg(), "sha512")
    assert central.stat().st_size == made.size
    index = json.loads((world.sb.central / "binpkgs" / ENV / "index.json").read_text())
    assert index["packages"][CPV]["sha512"] == made.sha512
    assert backup.find_binpkg(world.central, ENV, CPV) == made


def test_second_backup_package_is_a_noop(world):
    files = [world.binpkg(), world.central_binpkg(),
             world.sb.central / "binpkgs" / ENV / "index.json"]
    before = [(f.stat().st_mtime_ns, sha(f, "sha512")) for f in files]
    again = backup.backup_package(world.node, world.central, ENV, CPV)
    assert not again.made and not again.uploaded
    assert [(f.stat().st_mtime_ns, sha(f, "sha512")) for f in files] == before
    assert again == backup.find_binpkg(world.central, ENV, CPV)


def test_a_corrupted_central_copy_is_replaced_from_the_node(world):
    central = world.central_binpkg()
    central.write_bytes(central.read_bytes()[:1000])
    repaired = backup.backup_package(world.node, world.central, ENV, CPV)
    assert repaired.uploaded and not repaired.made
    assert sha(central, "sha512") == repaired.sha512 == sha(world.binpkg(), "sha512")


def test_backup_package_refuses_a_version_the_node_does_not_run(world):
    with pytest.raises(BackupError, match=r"staging-1: cannot back up www-apps/notes-0\.9\.0: "
                                          r"the node runs 1\.0\.0"):
        backup.backup_package(world.node, world.central, ENV, "www-apps/notes-0.9.0")


# ------------------------------------------------------------------- database dumps


def test_dump_database_is_verified_and_stored_centrally(world):
    dump = backup.dump_database(world.node, world.central, ENV, APP, world.db_path, "1.0.0")
    world.dumps.append(dump)
    assert (dump.node, dump.version, dump.notes, dump.schema_version) == (NODE, "1.0.0", 1, 1)
    local = Path(dump.node_path)
    assert local.parent == world.root / "var/lib/notes/backups"
    assert local.name.startswith("releaser-1.0.0-") and local.name.endswith("Z.db")
    assert sha(local, "sha256") == dump.sha256 and local.stat().st_size == dump.size
    central = Path(dump.central_path)
    assert central == world.sb.central / "dumps" / ENV / NODE / local.name
    assert sha(central, "sha256") == dump.sha256
    assert oct(central.stat().st_mode & 0o777) == "0o600"
    assert backup.latest_dump(world.central, ENV, NODE) == dump
    assert backup.latest_dump(world.central, ENV, NODE, version="0.9.0") is None
    report = backup.verify_dump_on_node(world.node, dump)  # on the node: central not needed
    assert (report["notes"], report["schema_version"], report["sha256"]) == (1, 1, dump.sha256)


def test_a_database_path_that_does_not_exist_stops_the_backup(world):
    # The node runs 1.0.0, so the app made its database: a missing one is a wrong path.
    with pytest.raises(BackupError, match=r"^staging-1: notes 1\.0\.0 runs here, but its "
                       r"database /var/lib/notes/never-created\.db \(database\.path\) "
                       r"does not exist"):
        backup.dump_database(world.node, world.central, ENV, APP,
                             "/var/lib/notes/never-created.db", "1.0.0")
    assert not (world.root / "var/lib/notes/never-created.db").exists()
    assert len(backup.list_dumps(world.central, ENV)) == 1  # nothing recorded


def test_app_commands_carry_their_variables_outside_the_argv():
    argv, env = backup.app_command("/srv/node", APP, "/var/lib/notes/notes.db", "dump", "/x.db")
    assert argv == ["python3", "-P", "-m", "notes", "dump", "/x.db"]
    assert env == {"PYTHONPATH": "/srv/node/usr/lib/notes",
                   "NOTES_DATABASE": "/srv/node/var/lib/notes/notes.db"}
    # The database variable is the contract's ([app] database_env), not spelled here.
    _, env = backup.app_command("/", AppContract("notes", "APP_DB"), "/srv/n.db", "restore", "/d")
    assert env == {"PYTHONPATH": "/usr/lib/notes", "APP_DB": "/srv/n.db"}


def test_a_database_that_cannot_be_dumped_stops_the_backup(world):
    garbage = world.root / "var/lib/notes/garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(BackupError, match=r"^staging-1: database dump failed: .*garbage\.db"):
        backup.dump_database(world.node, world.central, ENV, APP, "/var/lib/notes/garbage.db",
                             "1.0.0")
    assert len(backup.list_dumps(world.central, ENV)) == 1  # nothing recorded


@pytest.mark.parametrize("damage,message", [
    (lambda data: data[: len(data) // 2], "truncated"),
    (lambda data: b"garbage " * 512, "not an SQLite database"),
])
def test_verification_catches_a_damaged_dump(world, damage, message):
    good = world.dumps[0]
    bad = Path(good.node_path).with_name("damaged.db")
    bad.write_bytes(damage(Path(good.node_path).read_bytes()))
    damaged = dataclasses.replace(good, node_path=str(bad))
    with pytest.raises(BackupError, match=rf"^staging-1: dump verification failed: .*{message}"):
        backup.verify_dump_on_node(world.node, damaged, world.central)
    with pytest.raises(BackupError, match=message):
        backup.restore_database(world.node, APP, world.db_path, damaged)


def test_verification_catches_a_valid_database_that_is_not_the_recorded_dump(world):
    other = backup.dump_database(world.node, world.central, ENV, APP, world.db_path, "1.0.0")
    world.dumps.append(other)
    http(world, "POST", "/notes", {"title": "later", "body": "changes the bytes"})
    newer = backup.dump_database(world.node, world.central, ENV, APP, world.db_path, "1.0.0")
    world.dumps.append(newer)
    assert newer.notes == 2 and newer.sha256 != other.sha256
    swapped = dataclasses.replace(other, node_path=newer.node_path)
    with pytest.raises(BackupError, match="is not the recorded dump"):
        backup.verify_dump_on_node(world.node, swapped, world.central)


def test_a_corrupted_central_dump_is_refused_for_a_node_that_lost_its_copy(world):
    dump = world.dumps[1]
    central = Path(dump.central_path)
    saved = central.read_bytes()
    Path(dump.node_path).unlink()
    central.write_bytes(saved[:4096])
    try:
        with pytest.raises(BackupError, match="does not match its recorded sha256"):
            backup.verify_dump_on_node(world.node, dump, world.central)
        assert not Path(dump.node_path).exists()
    finally:
        central.write_bytes(saved)
    assert backup.verify_dump_on_node(world.node, dump, world.central)["sha256"] == dump.sha256
    assert sha(Path(dump.node_path), "sha256") == dump.sha256


# ------------------------------------------------------------------ the way back


def test_rebuilt_node_gets_the_package_from_central_and_emerges_it(world):
    world.binpkg().unlink()
    path = backup.ensure_binpkg_on_node(world.node, world.central, ENV, CPV)
    assert path == str(world.binpkg())
    assert sha(world.binpkg(), "sha512") == backup.find_binpkg(world.central, ENV, CPV).sha512
    result = portage_tools.emerge(world.node.runner, CPV, usepkgonly=True)
    assert result.binary
    assert world.node.installed_version("www-apps/notes") == "1.0.0"
    # already there: left alone
    mtime = world.binpkg().stat().st_mtime_ns
    assert backup.ensure_binpkg_on_node(world.node, world.central, ENV, CPV) == path
    assert world.binpkg().stat().st_mtime_ns == mtime


def test_ensure_binpkg_of_an_unknown_version_is_a_backup_error(world):
    with pytest.raises(BackupError, match="no binary package of www-apps/notes-0.9.0"):
        backup.ensure_binpkg_on_node(world.node, world.central, ENV, "www-apps/notes-0.9.0")


def test_restore_brings_back_the_notes_after_the_database_was_wiped(world):
    dump = world.dumps[0]  # one note: "keep me"
    Path(dump.node_path).unlink()  # the node lost it too: it comes from central
    service(world, "stop")
    (world.root / world.db_path.lstrip("/")).unlink()
    service(world, "start")  # start_pre migrates a fresh, empty database
    assert http(world, "GET", "/notes") == []
    service(world, "stop")
    try:
        assert backup.verify_dump_on_node(world.node, dump, world.central)["notes"] == 1
        report = backup.restore_database(world.node, APP, world.db_path, dump)
        assert report["sha256"] == dump.sha256 and report["notes"] == 1
    finally:
        service(world, "start")
    assert [n["title"] for n in http(world, "GET", "/notes")] == ["keep me"]


def test_restore_needs_the_dump_on_the_node(world):
    dump = world.dumps[0]
    missing = dataclasses.replace(dump, node_path=str(Path(dump.node_path).with_name("gone.db")))
    with pytest.raises(BackupError, match="is not on the node"):
        backup.restore_database(world.node, APP, world.db_path, missing)
    with pytest.raises(BackupError, match="no central repository was given"):
        backup.verify_dump_on_node(world.node, missing)


# ------------------------------------------------------------ retention and listing


def test_promote_stops_a_node_whose_database_is_not_at_database_path(world):
    source = world.sb.source
    (source / "app" / "CHANGES").write_text("1.0.1\n")
    commit_all(source, "1.0.1")
    git(source, "tag", "v1.0.1")
    database = world.root / world.db_path.lstrip("/")
    away = database.with_name("moved-away.db")
    database.rename(away)
    try:
        report = promote(world.sb.config, ENV)
    finally:
        away.rename(database)
    [node] = report.nodes
    assert not report.ok and (node.status, node.phase) == ("failed", "backup")
    assert f"notes 1.0.0 runs here, but its database {world.db_path} (database.path) " \
           "does not exist" in node.detail
    assert world.node.installed_version("www-apps/notes") == "1.0.0"


def test_retention_keeps_the_newest_and_the_protected(world):
    backup.backup_package(world.node, world.central, ENV, CPV)  # idempotent before the upgrade
    assert promote(world.sb.config, ENV).ok
    assert world.node.installed_version("www-apps/notes") == "1.0.1"
    # The ebuild's pkg_preinst dumped the live database with the new version's own
    # command, found through the app's contract (its variable, its module, its folder).
    dump_dir = world.root / APP.dump_dir(world.db_path).lstrip("/")
    [preinst] = dump_dir.glob("preinst-notes-1.0.1-*.db")
    assert preinst.read_bytes().startswith(b"SQLite format 3\0")
    new_pkg = backup.backup_package(world.node, world.central, ENV, "www-apps/notes-1.0.1")
    newer = [backup.dump_database(world.node, world.central, ENV, APP, world.db_path, "1.0.1")
             for _ in range(2)]
    assert newer[0].name != newer[1].name  # same second: a fresh name all the same

    world.dumps.extend(newer)
    rows = backup.list_backups(world.central, ENV)
    assert [(r["kind"], r["version"]) for r in rows if r["kind"] == "binpkg"] == [
        ("binpkg", "1.0.1"), ("binpkg", "1.0.0")]
    # (promote may take its own dump of 1.0.0 before the upgrade)
    old_dumps = [d for d in backup.list_dumps(world.central, ENV) if d.version == "1.0.0"]
    assert len(old_dumps) >= 3
    assert [r["path"] for r in rows if r["kind"] == "dump"][:2] == [
        newer[1].central_path, newer[0].central_path]

    # 1.0.0 is the rollback target: protected although older than the newest one.
    removed = backup.apply_retention(world.central, ENV, 1, {"1.0.0"})
    assert [(r["kind"], r["path"]) for r in removed] == [("dump", newer[0].central_path)]
    assert not Path(newer[0].central_path).exists()
    assert backup.latest_dump(world.central, ENV, NODE) == newer[1]
    assert backup.find_binpkg(world.central, ENV, CPV) is not None
    assert all(Path(d.central_path).exists() for d in old_dumps)

    removed = backup.apply_retention(world.central, ENV, 1, set())
    assert sorted((r["kind"], r["version"]) for r in removed) == [
        ("binpkg", "1.0.0")] + [("dump", "1.0.0")] * len(old_dumps)
    for row in removed:
        assert not Path(row["path"]).exists()
    assert backup.find_binpkg(world.central, ENV, CPV) is None
    assert not world.central_binpkg().exists()
    assert backup.find_binpkg(world.central, ENV, new_pkg.cpv) == new_pkg
    assert backup.list_dumps(world.central, ENV) == [newer[1]]
    assert backup.apply_retention(world.central, ENV, 1, set()) == []
    with pytest.raises(UsageError, match="whole number"):
        backup.apply_retention(world.central, ENV, -1, set())


def test_list_backups_shows_what_is_kept(world):
    rows = backup.list_backups(world.central, ENV)
    assert [(r["kind"], r["node"], r["version"]) for r in rows] == [
        ("binpkg", NODE, "1.0.1"), ("dump", NODE, "1.0.1")]
    assert all(Path(r["path"]).is_file() and r["size"] == Path(r["path"]).stat().st_size
               for r in rows)
    table = backup.format_backups(rows).splitlines()
    assert table[0].split() == ["KIND", "NODE", "VERSION", "SIZE", "CREATED", "PATH", "DETAIL"]
    assert table[1].split()[:3] == ["binpkg", NODE, "1.0.1"]
    assert table[1].endswith("www-apps/notes-1.0.1")
    last = world.dumps[-1]
    assert table[2].split()[:6] == ["dump", NODE, "1.0.1", "16.0K", last.created,
                                    last.central_path]
    assert table[2].endswith(f"schema {last.schema_version}, {last.notes} notes")
    assert backup.format_backups([]) == "no backups"
