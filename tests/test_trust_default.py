"""Signing is the default: an environment whose overlay would be unsigned is refused by
every command that publishes or installs, unless a documented exception allows it;
read-only commands keep working; sandboxes are signed unless told ``--unsigned``."""

from __future__ import annotations

import datetime as dt
import subprocess
import tempfile
import tomllib
from pathlib import Path

import pytest

from releaser.central import overlay_git
from releaser.central.repository import CentralRepository
from releaser.cli import main
from releaser.exitcodes import NOT_READY
from releaser.hosts.runner import LocalRunner

from .conftest import unsigned_notice, write_config
from .sandboxes import Sandbox
from .test_cli import STAGING

CHANGING = [["promote", "staging"], ["promote", "staging", "--dry-run"],
            ["rollback", "staging", "--yes"], ["host", "bootstrap", "staging"]]


@pytest.fixture
def published_overlay(tmp_path, app_repo):
    """A config with no [trust] and no exception, a central repository and a staging
    overlay already there (made unsigned by an older releaser); its head."""
    config = write_config(tmp_path / "releaser.toml", app_repo, unsigned=False, extra=STAGING)
    assert main(["-c", str(config), "central", "init"]) == 0
    central = CentralRepository(LocalRunner(host="central"), str(tmp_path / "central"))
    overlay_git.ensure_overlay(central, "staging", "releaser-staging")
    return config, overlay_head(tmp_path)


def overlay_head(tmp_path) -> str:
    return subprocess.run(["git", "-C", str(tmp_path / "central" / "overlays" / "staging.git"),
                           "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.mark.parametrize("command", CHANGING, ids=lambda c: " ".join(c))
def test_without_trust_or_exception_every_changing_command_is_refused(
        tmp_path, published_overlay, capsys, monkeypatch, command):
    config, head = published_overlay
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the default keyring: empty
    capsys.readouterr()
    assert main(["-c", str(config), *command]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"releaser: error: environment staging has no release key in "
                          f"{tmp_path / 'home' / '.local/share/releaser/gnupg'}, so its "
                          "overlay would be unsigned: run 'releaser keys init staging'"), err
    assert 'setting = "unsigned-overlay"' in err and "reason, owner and expires" in err
    assert overlay_head(tmp_path) == head  # nothing published
    assert not (tmp_path / "out").exists()  # refused before building anything
    assert not list((tmp_path / "central" / "distfiles").iterdir())
    assert not (tmp_path / "nodes" / "s1" / "etc").exists()  # no host touched


def test_trust_without_the_environment_s_key_is_refused_the_same_way(tmp_path, app_repo,
                                                                      capsys):
    config = write_config(tmp_path / "releaser.toml", app_repo,
                          extra=STAGING + '[trust]\ngnupghome = "gnupg"\n')
    assert main(["-c", str(config), "central", "init"]) == 0
    assert main(["-c", str(config), "keys", "init", "production"]) == 2  # not configured
    capsys.readouterr()
    assert main(["-c", str(config), "promote", "staging"]) == 2
    err = capsys.readouterr().err
    assert err == (f"releaser: error: environment staging has no release key in "
                   f"{tmp_path / 'gnupg'}, so its overlay would be unsigned: run 'releaser "
                   "keys init staging' (then 'releaser host bootstrap staging'), or document "
                   'an [[exceptions]] entry with setting = "unsigned-overlay", environments = '
                   '["staging"], reason, owner and expires\n')
    assert not (tmp_path / "central" / "overlays" / "staging.git").exists()


def test_read_only_commands_keep_working_and_doctor_names_the_fix(
        tmp_path, published_overlay, capsys, monkeypatch):
    config, _head = published_overlay
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for command in (["status", "staging"], ["history"], ["build"],
                    ["backups", "list", "staging"], ["lock", "status", "staging"]):
        assert main(["-c", str(config), *command]) == 0, command
    capsys.readouterr()
    assert main(["-c", str(config), "doctor", "staging", "--fast"]) == NOT_READY
    out = capsys.readouterr().out
    assert "NOT READY: signing key: environment staging has no release key" in out
    assert "fix: `releaser keys init staging`" in out and '"unsigned-overlay"' in out


def test_keys_init_with_the_default_keyring_is_the_fix(tmp_path, published_overlay, capsys,
                                                      monkeypatch):
    """No [trust] table needed: the default keyring takes the key, and the run is signed."""
    config, _head = published_overlay
    # gpg's agent socket lives in the keyring: a HOME short enough for a socket's path
    with tempfile.TemporaryDirectory(prefix="rh", dir="/tmp") as home:
        monkeypatch.setenv("HOME", home)
        assert main(["-c", str(config), "keys", "init", "staging"]) == 0
        assert (Path(home) / ".local/share/releaser/gnupg/releaser-keys.json").exists()
        capsys.readouterr()
        assert main(["-c", str(config), "promote", "staging", "--dry-run"]) == 0
        assert "security exception" not in capsys.readouterr().err


def test_an_unsigned_overlay_exception_lets_the_run_go_and_is_printed(tmp_path, app_repo,
                                                                      capsys):
    config = write_config(tmp_path / "releaser.toml", app_repo, extra=STAGING)
    assert main(["-c", str(config), "central", "init"]) == 0
    capsys.readouterr()
    assert main(["-c", str(config), "promote", "staging", "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert err.startswith(unsigned_notice("staging")), err
    assert "releaser: error" not in err


def test_a_sandbox_is_signed_by_default(tmp_path):
    sb = Sandbox(tmp_path, {"staging": 1})
    try:
        text = sb.config_path.read_text()
        assert "[trust]" in text and "[[exceptions]]" not in text
        repos = (sb.node_root("staging-1") / "etc/portage/repos.conf")
        conf = "".join(p.read_text() for p in sorted(repos.iterdir()))
        assert "\nsync-git-verify-commit-signature = yes\n" in conf
        assert "sync-openpgp-key-path = " in conf
        log = subprocess.run(["git", "-C", str(sb.central / "overlays" / "staging.git"),
                              "log", "--format=%G?", "-1"], check=True, capture_output=True,
                             text=True, env={"GNUPGHOME": str(sb.directory / "gnupg"),
                                             "PATH": "/usr/bin:/bin"})
        assert log.stdout.strip() in {"G", "U"}, log  # signed (U: a key gpg does not trust)
    finally:
        sb.down()


def test_sandbox_init_unsigned_documents_its_exception(tmp_path, app_repo, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no releaser.toml here: the default app, from --source
    directory = tmp_path / "sb"
    assert main(["sandbox", "init", str(directory), "--nodes", "staging=1",
                 "--source", str(app_repo), "--unsigned"]) == 0
    try:
        raw = tomllib.loads((directory / "releaser.toml").read_text())
        assert "trust" not in raw
        [exc] = raw["exceptions"]
        assert exc == {"setting": "unsigned-overlay", "environments": ["staging"],
                       "reason": "sandbox", "owner": "releaser sandbox",
                       "expires": dt.date.today() + dt.timedelta(days=365)}
        repos = directory / "nodes" / "staging-1" / "etc/portage/repos.conf"
        conf = "".join(p.read_text() for p in sorted(repos.iterdir()))
        assert "\nsync-git-verify-commit-signature = yes\n" not in conf
    finally:
        assert main(["sandbox", "down", str(directory)]) == 0
