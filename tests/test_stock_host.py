"""A node whose binary packages are laid out as on a stock Gentoo host.

Portage's default ``FEATURES=binpkg-multi-instance`` names packages
``PKGDIR/CAT/PN/PF-N.gpkg.tar`` and adds one more file per quickpkg; the
sandbox's own nodes turn it off.  One story on one such node (module-scoped
sandbox, tests in file order): back up and roll back from the node's own
package, then from the central store after the node's PKGDIR was emptied (a
rebuilt node); a package releaser does not vouch for is set aside so emerge
cannot pick it.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.request
from pathlib import Path

import pytest

from releaser.central.repository import CentralRepository
from releaser.sandbox import noderoot
from releaser.hosts import bintree
from releaser.hosts import portage_commands as portage_tools
from releaser.cli import main
from releaser.hosts.node import connect
from releaser.deploy.reinstall import reinstall_package
from releaser.hosts.runner import LocalRunner

from .sandboxes import Sandbox, add_migration

ENV, NODE, CP = "staging", "staging-1", "www-apps/notes"


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    sandbox = Sandbox(tmp_path_factory.mktemp("stock"), {ENV: 1}, stock_binpkgs=True)
    yield sandbox
    sandbox.down()


def cli(sb: Sandbox, *args: str) -> int:
    return main(["-c", str(sb.config_path), *args])


def runner(sb: Sandbox) -> LocalRunner:
    return LocalRunner(host=NODE, env=noderoot.portage_env(sb.node_root(NODE)))


def installed(sb: Sandbox) -> str | None:
    return portage_tools.installed_version(runner(sb), str(sb.node_root(NODE)), CP)


def health(sb: Sandbox) -> dict:
    url = sb.config.environment(ENV).nodes[0].health_url
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def pkgdir(sb: Sandbox) -> Path:
    return sb.node_root(NODE) / "var/cache/binpkgs"


def packages_of(sb: Sandbox, version: str) -> list[Path]:
    """The package files of ``notes-VERSION`` Portage's PKGDIR index lists."""
    return [Path(p) for p in bintree.binpkg_paths(runner(sb), f"{CP}-{version}")]


def index(sb: Sandbox) -> dict:
    return json.loads((sb.central / "binpkgs" / ENV / "index.json").read_text())["packages"]


def planned_source(out: str) -> str:
    """The PACKAGE column of the node's row in a printed rollback plan."""
    m = re.search(rf"^\s*{NODE}\s+\S+\s+1\.0\.0\s+(\S+)\s", out, re.M)
    assert m, out
    return m.group(1)


def sha512(path: Path) -> str:
    return hashlib.sha512(path.read_bytes()).hexdigest()


def test_the_node_is_a_stock_host(sb):
    folder = sb.node_root(NODE) / "etc/portage/make.conf"  # a folder on a bootstrapped node
    make_conf = "".join(p.read_text() for p in sorted(folder.iterdir()))
    assert "binpkg-multi-instance" not in make_conf
    features = portage_tools.envvar(runner(sb), "FEATURES").split()
    assert "binpkg-multi-instance" in features


def test_backup_before_an_upgrade_finds_the_multi_instance_package(sb):
    assert cli(sb, "promote", ENV) == 0
    add_migration(sb.source, "v2.0.0")
    assert cli(sb, "promote", ENV) == 0
    assert installed(sb) == "2.0.0"

    [package] = packages_of(sb, "1.0.0")
    assert package.parent == pkgdir(sb) / "www-apps" / "notes"
    assert package.name.startswith("notes-1.0.0-") and package.name.endswith(".gpkg.tar")
    assert not (pkgdir(sb) / "www-apps" / "notes-1.0.0.gpkg.tar").exists()
    entry = index(sb)[f"{CP}-1.0.0"]
    assert entry["node_path"] == str(package)
    assert entry["sha512"] == sha512(package) == sha512(Path(entry["central_path"]))


def test_rollback_installs_the_package_from_the_node(sb, capsys):
    assert cli(sb, "rollback", ENV, "--dry-run") == 0
    assert planned_source(capsys.readouterr().out) == "node"
    assert cli(sb, "rollback", ENV, "--yes") == 0
    assert installed(sb) == "1.0.0"
    assert health(sb)["version"] == "1.0.0"
    # Rolling back packed the version it left (2.0.0) first, on the node and centrally.
    [package] = packages_of(sb, "2.0.0")
    assert index(sb)[f"{CP}-2.0.0"]["sha512"] == sha512(package)


def test_rebuilt_node_fetches_the_package_from_central(sb, capsys):
    add_migration(sb.source, "v3.0.0", number=3)
    assert cli(sb, "promote", ENV) == 0
    assert installed(sb) == "3.0.0"
    # The node is rebuilt: its PKGDIR (packages and index) is gone.
    for path in sorted(pkgdir(sb).rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    assert packages_of(sb, "1.0.0") == []

    assert cli(sb, "rollback", ENV, "--dry-run") == 0
    assert planned_source(capsys.readouterr().out) == "central"
    assert cli(sb, "rollback", ENV, "--yes") == 0
    assert installed(sb) == "1.0.0"
    assert health(sb)["version"] == "1.0.0"
    # Placed where Portage allocates a new package of 1.0.0: PN/PF-N with a free build id.
    [package] = packages_of(sb, "1.0.0")
    assert package.parent == pkgdir(sb) / "www-apps" / "notes"
    assert package.name.startswith("notes-1.0.0-")
    assert sha512(package) == index(sb)[f"{CP}-1.0.0"]["sha512"]


def test_a_package_releaser_does_not_vouch_for_is_set_aside(sb):
    # An operator packs the running version by hand: one more instance of
    # 1.0.0, not recorded in releaser's index, which emerge could pick.
    [vouched] = packages_of(sb, "1.0.0")
    portage_tools.quickpkg(runner(sb), f"{CP}-1.0.0", include_config=False)
    [stray] = [p for p in packages_of(sb, "1.0.0") if p != vouched]

    node = connect(sb.config, sb.config.environment(ENV).nodes[0])
    reinstall_package(node, CentralRepository.from_config(sb.config), ENV, f"{CP}-1.0.0")
    assert installed(sb) == "1.0.0"
    # Only the vouched package is left for emerge; the stray one was renamed, not deleted.
    assert packages_of(sb, "1.0.0") == [vouched]
    assert not stray.exists()
    [aside] = stray.parent.glob(stray.name + ".releaser-unverified-*")
    assert aside.stat().st_size > 0
