"""Release keys: the keyring (real gpg through python-gnupg), ``[trust]`` validation,
``releaser keys``, and a key rotation on a signed sandbox fleet."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import gnupg
import pytest

from releaser.cli import main
from releaser.config import load_config
from releaser.errors import ConfigError, KeyringError, OverlayTrustError, UsageError
from releaser.hosts.node import connect
from releaser.trust.keys import Keyring

from .conftest import commit_all, git, write_config
from .sandboxes import Sandbox


def key_ids(armoured: str, tmp: Path) -> set[str]:
    """The primary key fingerprints an armoured export holds (read by gpg itself)."""
    home = tmp / "scan"
    home.mkdir(mode=0o700, exist_ok=True)
    return {k["fingerprint"] for k in gnupg.GPG(gnupghome=str(home)).scan_keys_mem(armoured)}


def test_each_environment_exports_only_its_own_keys(tmp_path):
    ring = Keyring(tmp_path / "gnupg")
    staging, production = ring.init("staging"), ring.init("production")
    assert staging != production
    assert key_ids(ring.export("staging"), tmp_path) == {staging}
    assert key_ids(ring.export("production"), tmp_path) == {production}
    assert "PRIVATE KEY" not in ring.export("staging")
    assert oct((tmp_path / "gnupg").stat().st_mode & 0o777) == "0o700"


def test_rotation_keeps_the_old_key_until_retired(tmp_path):
    ring = Keyring(tmp_path / "gnupg")
    old = ring.init("staging")
    new, was = ring.rotate("staging")
    assert was == old and ring.active("staging") == new
    assert key_ids(ring.export("staging"), tmp_path) == {old, new}
    assert ring.retire("staging") == [old]
    assert key_ids(ring.export("staging"), tmp_path) == {new}
    assert {(k.fingerprint, k.status) for k in ring.keys()} == {(new, "active"),
                                                                (old, "retired")}
    assert ring.retire("staging") == []


def test_keyring_refusals(tmp_path):
    ring = Keyring(tmp_path / "gnupg")
    with pytest.raises(KeyringError, match="has no release key"):
        ring.active("staging")
    ring.init("staging")
    with pytest.raises(KeyringError, match="already has a release key"):
        ring.init("staging")
    with pytest.raises(UsageError, match="not an environment name"):
        ring.init("Bad Name")


@pytest.mark.parametrize("table, message", [
    ('gnupghome = "central/keys"', "inside the central repository"),
    ("max_age_days = 0", "positive number of days"),
    ('operators = ["ABC"]', "not an OpenPGP fingerprint"),
    ('colour = "blue"', "unknown key"),
])
def test_trust_table_is_validated(tmp_path, app_repo, table, message):
    path = write_config(tmp_path / "releaser.toml", app_repo, extra=f"[trust]\n{table}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_keys_commands(tmp_path, app_repo, capsys):
    extra = '[environments.staging]\nnodes = []\n[trust]\ngnupghome = "gnupg"\n'
    path = write_config(tmp_path / "releaser.toml", app_repo, extra=extra)
    assert main(["-c", str(path), "keys", "init", "staging"]) == 0
    assert main(["-c", str(path), "keys", "init", "staging"]) == 2
    assert main(["-c", str(path), "keys", "init", "qa"]) == 2  # not configured
    assert main(["-c", str(path), "keys", "list"]) == 0
    out = capsys.readouterr()
    assert "already has a release key" in out.err and "unknown environment 'qa'" in out.err
    fpr = Keyring(tmp_path / "gnupg").active("staging")
    assert f"staging      active   {fpr}" in out.out


def test_keys_without_trust_table_use_the_default_keyring(tmp_path, app_repo, capsys,
                                                           monkeypatch):
    """Signing is the default: no [trust] table means [trust]'s defaults
    (tests/test_trust_default.py makes a key there)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = write_config(tmp_path / "releaser.toml", app_repo)
    assert load_config(path).trust.gnupghome == tmp_path / "home/.local/share/releaser/gnupg"
    assert main(["-c", str(path), "keys", "list"]) == 0
    assert capsys.readouterr().err == ""


def test_rotation_on_a_fleet(tmp_path):
    """After ``keys rotate`` a promote works (the node is given both keys); after
    ``keys retire`` a commit signed by the retired key is refused."""
    sb = Sandbox(tmp_path, {"staging": 1}, trust=True)
    cli = ["-c", str(sb.config_path)]
    try:
        old = Keyring(sb.config.trust.gnupghome).active("staging")
        assert main([*cli, "keys", "rotate", "staging"]) == 0
        (sb.source / "app" / "VERSION_NOTE").write_text("1.0.1\n")
        commit_all(sb.source, "1.0.1")
        git(sb.source, "tag", "v1.0.1")
        assert main([*cli, "promote", "staging", "--ref", "v1.0.1"]) == 0
        bare = sb.central / "overlays" / "staging.git"
        new = Keyring(sb.config.trust.gnupghome).active("staging")
        signed_by = subprocess.run(
            ["git", "-C", str(bare), "log", "-1", "--format=%G?%GF", "main"], check=True,
            capture_output=True, text=True,
            env={**os.environ, "GNUPGHOME": str(sb.config.trust.gnupghome)}).stdout.strip()
        assert new != old and signed_by == f"G{new}"
        assert main([*cli, "keys", "retire", "staging"]) == 0
        # Whoever still holds the retired key signs a commit on top of the head.
        work = tmp_path / "attacker"
        subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True)
        (work / "profiles" / "attacker").write_text("owned\n")
        git(work, "add", "-A")
        env = {**os.environ, "GNUPGHOME": str(sb.config.trust.gnupghome),
               "GIT_AUTHOR_NAME": "x", "GIT_AUTHOR_EMAIL": "x@l",
               "GIT_COMMITTER_NAME": "x", "GIT_COMMITTER_EMAIL": "x@l"}
        subprocess.run(["git", "-C", str(work), "commit", "-q", f"-S{old}", "-m", "old key"],
                       check=True, env=env)
        git(work, "push", "-q", "origin", "HEAD:main")
        env_cfg = sb.config.environment("staging")
        node = connect(sb.config, env_cfg.nodes[0])
        try:
            with pytest.raises(OverlayTrustError) as caught:
                node.sync(env_cfg.overlay)
        finally:
            node.close()
        assert caught.value.kind == "untrusted"
        key_file = sb.node_root("staging-1") / "etc/portage/releaser/keys/staging.asc"
        assert key_ids(key_file.read_text(), tmp_path) == {new}
    finally:
        sb.down()


def test_bootstrap_gives_a_gentoo_host_only_its_environment_s_key(tmp_path):
    """At the Runner seam: the key file holds the production key(s) alone, and the
    repos.conf entry makes Portage verify every synced head against it."""
    from dataclasses import replace

    from releaser.hosts.bootstrap import prepare_host
    from releaser.hosts.host_probe import Host

    from .test_bootstrap import RecordingHost, gentoo_facts, production_setup

    ring = Keyring(tmp_path / "gnupg")
    ring.init("staging")
    production = ring.init("production")
    setup = replace(production_setup(), release_keys=ring.export("production"))
    host = RecordingHost(gentoo_facts(gemato=True))
    report = prepare_host(Host("web1", host, "/"), setup)
    assert report.status == "changed", report.reason
    placed = {path.rsplit("/", 1)[0]: text for path, text in host.files.items()}
    assert key_ids(placed["/etc/portage/releaser/keys"], tmp_path) == {production}
    repos = placed["/etc/portage/repos.conf"]
    assert ("sync-git-verify-commit-signature = yes\n"
            "sync-openpgp-key-path = /etc/portage/releaser/keys/production.asc\n"
            "sync-openpgp-key-refresh = false-nowarn\nclone-depth = 0\nsync-depth = 0\n") in repos

    without = RecordingHost(gentoo_facts(gemato=False))
    report = prepare_host(Host("web1", without, "/"), setup)
    assert (report.status, without.commands) == ("refused", [])
    assert report.reason.startswith("gemato is not installed for the host's Portage")
