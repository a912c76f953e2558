"""Binhost mode (``install = "binary"``): built once, promoted byte for byte, never compiled
on a node.

One story on a sandbox with one staging and one production node (real Portage,
real HTTP binhost served by the sandbox's distfile server, ``[trust]`` on so
every package is signed by its environment's release key): the environments
switch to binary mode and are bootstrapped again (binrepos.conf), v1 and v2 go
to staging then production, and production rolls back to v1.
"""

from __future__ import annotations

import hashlib
import re

import pytest

from releaser.central import binhost
from releaser.central.ledger import Ledger
from releaser.central.repository import CentralRepository
from releaser.cli import main
from releaser.config import load_config
from releaser.errors import ConfigError, PublishError
from releaser.hosts.bootstrap import bootstrap
from releaser.hosts import portage_commands as portage_tools
from releaser.hosts.runner import LocalRunner
from releaser.sandbox import noderoot

from .conftest import write_config
from .sandboxes import Sandbox, add_migration

NODES = {"staging": "staging-1", "production": "production-1"}
CP = "www-apps/notes"


def cli(sb, *args):
    return main(["-c", str(sb.config_path), *args])


def set_install(config_path, **modes: str) -> None:
    """Give each environment of ``modes`` its ``install`` setting (replacing any)."""
    text = re.sub(r'^install = "\w+"\n', "", config_path.read_text(), flags=re.M)
    for env, mode in modes.items():
        text = re.sub(rf"^\[environments\.{env}\]\n", f'[environments.{env}]\ninstall = '
                      f'"{mode}"\n', text, flags=re.M)
    config_path.write_text(text)


def installed(sb, node):
    root = sb.node_root(node)
    return portage_tools.installed_version(LocalRunner(env=noderoot.portage_env(root)),
                                           str(root), CP)


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    sandbox = Sandbox(tmp_path_factory.mktemp("binhost"), {"staging": 1, "production": 1},
                      trust=True)
    set_install(sandbox.config_path, staging="binary", production="binary")
    sandbox.config = load_config(sandbox.config_path)
    for env in NODES:
        assert bootstrap(sandbox.config, env).ok
    yield sandbox
    sandbox.down()


@pytest.mark.slow
def test_install_mode_is_validated(tmp_path, sb):
    bad = tmp_path / "releaser.toml"
    bad.write_text(sb.config_path.read_text().replace('install = "binary"',
                                                      'install = "binaries"', 1))
    with pytest.raises(ConfigError, match="install.*not an install mode"):
        load_config(bad)


@pytest.mark.slow
def test_bootstrap_gives_nodes_the_environments_binhost(sb):
    conf = sb.node_root("staging-1") / "etc/portage/binrepos.conf/releaser-staging.conf"
    text = conf.read_text()
    assert f"sync-uri = {sb.config.central.distfiles_url}/binhost/staging" in text
    assert f"location = {sb.node_root('staging-1')}/var/cache/binhost/releaser-staging" in text


@pytest.mark.slow
def test_promote_in_binary_mode_to_staging_then_production(sb):
    assert cli(sb, "promote", "staging") == 0
    assert cli(sb, "promote", "production", "--version", "1.0.0") == 0
    add_migration(sb.source, "v2.0.0")
    assert cli(sb, "promote", "staging") == 0
    assert cli(sb, "promote", "production", "--version", "2.0.0") == 0
    for node in NODES.values():
        assert installed(sb, node) == "2.0.0"

    central = CentralRepository.from_config(sb.config)
    pkgs = {env: sb.central / "distfiles/binhost" / env / f"{CP}-2.0.0.gpkg.tar"
            for env in NODES}
    # production's package is byte for byte the one staging ran, as both ledgers say
    assert sha256(pkgs["production"]) == sha256(pkgs["staging"])
    for env in NODES:
        entry = Ledger.load(central, env).release("2.0.0")
        assert entry["binpkg_sha256"] == sha256(pkgs["staging"])
        md5 = binhost.index_entry(central, env, f"{CP}-2.0.0")["MD5"]
        assert md5 == hashlib.md5(pkgs[env].read_bytes()).hexdigest()
        # signed by the environment's release key, beside it
        assert pkgs[env].with_name(pkgs[env].name + ".asc").read_text().startswith(
            "-----BEGIN PGP SIGNATURE-----")
        # the node merged that very package ...
        vdb = sb.node_root(NODES[env]) / f"var/db/pkg/{CP}-2.0.0"
        assert (vdb / "BINPKGMD5").read_text().strip() == md5
        # ... fetched from the binhost, and compiled nothing itself
        log = (sb.node_root(NODES[env]) / "var/log/emerge.log").read_text()
        assert "Merging Binary" in log and "Compiling/Merging" not in log


@pytest.mark.slow
def test_the_build_is_packaged_once(sb):
    built = sb.config.build_out / "binpkgs" / "notes-2.0.0.gpkg.tar"
    staged = sb.central / "distfiles/binhost/staging" / f"{CP}-2.0.0.gpkg.tar"
    assert sha256(built) == sha256(staged)


@pytest.mark.slow
def test_production_refuses_a_release_staging_built_from_source(sb):
    text = sb.config_path.read_text()
    set_install(sb.config_path, staging="source", production="binary")
    try:
        sb.config = load_config(sb.config_path)
        add_migration(sb.source, "v3.0.0", number=3)
        assert cli(sb, "promote", "staging") == 0
        assert (sb.node_root("staging-1") / f"var/db/pkg/{CP}-3.0.0").is_dir()
        assert not (sb.node_root("staging-1") / f"var/db/pkg/{CP}-3.0.0/BINPKGMD5").exists()
        assert cli(sb, "promote", "production", "--version", "3.0.0") != 0
        assert installed(sb, "production-1") == "2.0.0"
    finally:
        sb.config_path.write_text(text)
        sb.config = load_config(sb.config_path)


@pytest.mark.slow
def test_rollback_of_production_still_works(sb):
    assert cli(sb, "rollback", "production", "--to", "1.0.0", "--yes") == 0
    assert installed(sb, "production-1") == "1.0.0"


# --- fast: the Manifest API against Portage's own `ebuild manifest` ------------------


def test_the_in_process_manifest_is_the_one_ebuild_manifest_writes(tmp_path, app_repo):
    from releaser.build.builder import build_release
    from releaser.build.manifest import add_dist_line, write_manifest
    from releaser.central import overlay

    cfg = load_config(write_config(tmp_path / "releaser.toml", app_repo))
    built = build_release(cfg, out=tmp_path / "out")
    tree = tmp_path / "overlay"
    overlay.init_overlay(tree, "check")
    overlay.add_category(tree, built.release.category)
    pkg = tree / built.release.cp
    pkg.mkdir(parents=True)
    ebuild = pkg / built.release.ebuild["name"]
    ebuild.write_bytes((built.release_dir / ebuild.name).read_bytes())
    write_manifest(tree, ebuild, built.tarball.parent)  # Portage's `ebuild ... manifest`
    assert (pkg / "Manifest").read_bytes() == (built.release_dir / "Manifest").read_bytes()

    other = tmp_path / "published"
    other.mkdir()
    add_dist_line(other, (built.release_dir / "Manifest").read_text().strip())
    assert (other / "Manifest").read_bytes() == (pkg / "Manifest").read_bytes()


def test_a_dist_entry_other_than_the_built_tarball_is_not_published(tmp_path, app_repo):
    from releaser.build.builder import build_release
    from releaser.central.publish import ReleaseFiles

    cfg = load_config(write_config(tmp_path / "releaser.toml", app_repo))
    built = build_release(cfg, out=tmp_path / "out")
    files = ReleaseFiles(built.release, built.release_dir)
    assert files.dist_line().startswith(f"DIST {built.tarball.name} ")
    manifest = built.release_dir / "Manifest"
    line = manifest.read_text()
    digest = built.release.tarball["sha512"]
    manifest.write_text(line.replace(digest, "0" * len(digest)))
    with pytest.raises(PublishError, match="differs from the tarball"):
        files.dist_line()
