"""Binary packages for rollback are signed on the operator's side and a rollback installs
only a package that verifies with the environment's release key (real gpg, real Portage).

A node that lost its own packages (rebuilt) gets the central copy; whoever can
write to the central repository can swap that copy's signature, but not sign.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from releaser.cli import main
from releaser.hosts import bintree, portage_commands
from releaser.hosts.local_root import portage_env
from releaser.hosts.runner import LocalRunner
from releaser.trust.keys import Keyring

from .conftest import commit_all, git
from .sandboxes import Sandbox

pytestmark = pytest.mark.slow  # a fleet, two promotes and three rollbacks

NODE = "staging-1"
PACKAGE = "www-apps/notes-1.0.0.gpkg.tar"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    sb = Sandbox(tmp_path_factory.mktemp("binpkgs"), {"staging": 1}, trust=True)
    try:
        cli = ["-c", str(sb.config_path)]
        assert main([*cli, "promote", "staging"]) == 0
        (sb.source / "app" / "VERSION_NOTE").write_text("1.0.1\n")
        commit_all(sb.source, "1.0.1")
        git(sb.source, "tag", "v1.0.1")
        assert main([*cli, "promote", "staging", "--ref", "v1.0.1"]) == 0  # backs up 1.0.0
        yield sb
    finally:
        sb.down()


def central_package(sb: Sandbox) -> Path:
    return sb.central / "binpkgs" / "staging" / PACKAGE


def installed(sb: Sandbox) -> str | None:
    root = sb.node_root(NODE)
    return portage_commands.installed_version(LocalRunner(env=portage_env(root)), str(root),
                                              "www-apps/notes")


def lose_local_packages(sb: Sandbox) -> None:
    """The node lost its own binary packages (rebuilt): only central's copy is left."""
    pkgdir = sb.node_root(NODE) / "var" / "cache" / "binpkgs" / "www-apps"
    shutil.rmtree(pkgdir, ignore_errors=True)
    bintree.fix_binpkg_index(LocalRunner(env=portage_env(sb.node_root(NODE))))


def rollback(sb: Sandbox, capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["-c", str(sb.config_path), "rollback", "staging", "--to", "1.0.0", "--yes"])
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


def test_the_central_copy_is_signed_by_the_release_key(fleet, tmp_path):
    ring = Keyring(fleet.config.trust.gnupghome)
    sig = Path(str(central_package(fleet)) + ".asc")
    with sig.open("rb") as fh:
        verified = ring.gpg().verify_file(fh, data_filename=str(central_package(fleet)))
    assert verified.valid and verified.pubkey_fingerprint == ring.active("staging")


@pytest.mark.parametrize("attack, said", [
    ("unsigned", "is not signed: not installing it"),
    ("other key", "not signed by the staging release key"),
])
def test_rollback_refuses_a_package_not_signed_by_the_release_key(fleet, tmp_path, capsys,
                                                                  attack, said):
    sig = Path(str(central_package(fleet)) + ".asc")
    good = sig.read_bytes()
    try:
        if attack == "unsigned":
            sig.unlink()
        else:
            other = Keyring(tmp_path / "other")
            other.init("staging")
            with central_package(fleet).open("rb") as fh:
                forged = other.gpg().sign_file(fh, keyid=other.active("staging"), detach=True)
            sig.write_text(str(forged))
        lose_local_packages(fleet)
        rc, out = rollback(fleet, capsys)
        assert rc != 0 and said in out, out
        assert installed(fleet) == "1.0.1"
    finally:
        sig.write_bytes(good)


def test_rollback_installs_the_signed_package(fleet, capsys):
    lose_local_packages(fleet)
    rc, out = rollback(fleet, capsys)
    assert rc == 0, out
    assert installed(fleet) == "1.0.0"
