"""Secrets: encrypted in the app's repository, installed on the node at promote, read by
the app, and their values nowhere else (real gpg, real Portage, a sandbox node)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from releaser.cli import main
from releaser.hosts.runner import LocalRunner
from releaser.trust.secrets import SecretStore, check_name
from releaser.errors import GitError, UsageError

from .conftest import commit_all, git
from .sandboxes import Sandbox

API_KEY = "sk-live-7f3a9c1e5b2d4f60a8e9"
DB_PASSWORD = "correct horse battery staple 42"
VALUES = (API_KEY.encode(), DB_PASSWORD.encode())


def set_secret(sb: Sandbox, monkeypatch, name: str, value: str) -> int:
    monkeypatch.setattr(sys, "stdin", io.StringIO(value))
    return main(["-c", str(sb.config_path), "secrets", "set", "staging", name])


def leaks(data: bytes) -> bool:
    return any(v in data for v in VALUES)


def archive_members(path: Path) -> list[bytes]:
    """The bytes of every file inside a tarball or gpkg (its zstd/gzip parts opened)."""
    out = []
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            data = tar.extractfile(member).read()
            if member.name.endswith(".zst"):
                data = subprocess.run(["zstd", "-dc"], input=data, check=True,
                                      capture_output=True).stdout
            elif member.name.endswith(".gz"):
                data = gzip.decompress(data)
            if member.name.endswith((".tar.zst", ".tar.gz", ".tar")):
                with tarfile.open(fileobj=io.BytesIO(data)) as inner:
                    out += [inner.extractfile(m).read() for m in inner.getmembers()
                            if m.isfile()]
            out.append(data)
    return out


@pytest.mark.slow
def test_secrets_reach_the_node_and_nothing_else(tmp_path, monkeypatch, capsys):
    sb = Sandbox(tmp_path, {"staging": 1}, trust=True)
    argvs = record_argvs(monkeypatch)
    try:
        cli = ["-c", str(sb.config_path)]
        assert set_secret(sb, monkeypatch, "api_key", API_KEY) == 0
        assert set_secret(sb, monkeypatch, "db_password", DB_PASSWORD) == 0
        assert main([*cli, "secrets", "list", "staging"]) == 0
        assert main([*cli, "promote", "staging"]) == 0
        (sb.source / "app" / "VERSION_NOTE").write_text("1.0.1\n")
        commit_all(sb.source, "1.0.1")
        git(sb.source, "tag", "v1.0.1")
        assert main([*cli, "promote", "staging", "--ref", "v1.0.1", "--json"]) == 0
        assert main([*cli, "history", "staging", "--json"]) == 0
        printed = capsys.readouterr()
        assert "api_key\ndb_password\n" in printed.out
        assert not leaks((printed.out + printed.err).encode())
    finally:
        monkeypatch.undo()
        sb.down()

    root = sb.node_root("staging-1")
    secrets_dir = root / "etc" / "notes" / "secrets"
    # On the node: the value, mode 0600, the app's user; the folder private to it.
    passwd = {line.split(":")[0]: int(line.split(":")[2])
              for line in (root / "etc" / "passwd").read_text().splitlines()}
    for name, value in (("api_key", API_KEY), ("db_password", DB_PASSWORD)):
        info = (secrets_dir / name).stat()
        assert (secrets_dir / name).read_text() == value
        assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == passwd["notes"]
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    # The app reads it through its contract (notes.config.secret), from the installed code.
    read = subprocess.run(
        [sys.executable, "-c", "import hashlib; from notes.config import secret; "
         "print(hashlib.sha256(secret('api_key').encode()).hexdigest())"],
        env={**os.environ, "PYTHONPATH": str(root / "usr" / "lib" / "notes"),
             "NOTES_SECRETS_DIR": str(secrets_dir)},
        capture_output=True, text=True, check=True)
    assert read.stdout.strip() == hashlib.sha256(API_KEY.encode()).hexdigest()

    # Nowhere else: every file of the sandbox (logs, ledger, Manifests, overlays'
    # checkouts, keyring), inside every tarball and binary package, the app's git
    # history, and the argv of every command releaser ran.
    archives = [p for p in tmp_path.rglob("*") if p.name.endswith((".tar.gz", ".gpkg.tar"))]
    assert any(p.name.endswith(".gpkg.tar") for p in archives), "no binary package taken"
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.parent != secrets_dir \
                and ".git" not in path.parts:
            assert not leaks(path.read_bytes()), path
    for path in archives:
        assert not any(leaks(data) for data in archive_members(path)), path
    assert list(tmp_path.rglob("Manifest")), "no Manifest looked at"
    history = subprocess.run(["git", "-C", str(sb.source), "log", "-p", "--all"],
                             capture_output=True, check=True).stdout
    assert b"secrets/staging/api_key.gpg" in history and not leaks(history)
    assert any("install" in a and "/dev/stdin" in a for a in argvs)
    assert not any(leaks(" ".join(a).encode()) for a in argvs)


def test_secret_names_are_checked(tmp_path):
    for bad in ("../x", ".hidden", "a b", "x.gpg", ""):
        with pytest.raises(UsageError):
            check_name(bad)
    assert check_name("db_password") == "db_password"


def test_secrets_set_refuses_an_unknown_environment_and_an_empty_value(tmp_path, app_repo,
                                                                      monkeypatch, capsys):
    from .conftest import write_config

    extra = '[environments.staging]\nnodes = []\n[trust]\ngnupghome = "gnupg"\n'
    path = write_config(tmp_path / "releaser.toml", app_repo, extra=extra)
    from releaser.config import load_config
    from releaser.trust.keys import Keyring

    Keyring(load_config(path).trust.gnupghome).init("staging")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["-c", str(path), "secrets", "set", "staging", "api_key"]) == 2
    monkeypatch.setattr(sys, "stdin", io.StringIO("v"))
    assert main(["-c", str(path), "secrets", "set", "qa", "api_key"]) == 2
    err = capsys.readouterr().err
    assert "empty value" in err and "unknown environment 'qa'" in err
    assert SecretStore(load_config(path)).names("staging") == []


def test_secrets_edit_reencrypts_only_a_change(tmp_path, app_repo):
    from releaser.config import load_config
    from releaser.trust.keys import Keyring

    from .conftest import write_config

    extra = '[environments.staging]\nnodes = []\n[trust]\ngnupghome = "gnupg"\n'
    config = load_config(write_config(tmp_path / "releaser.toml", app_repo, extra=extra))
    Keyring(config.trust.gnupghome).init("staging")
    store = SecretStore(config)
    new_value = tmp_path / "typed"
    new_value.write_text(API_KEY)
    editor = f"cp {new_value}"  # an editor that "types" the new value over the file
    assert store.edit("staging", "api_key", editor) is True
    assert store.get("staging", "api_key") == API_KEY
    encrypted = store.path("staging", "api_key").read_bytes()
    assert not leaks(encrypted) and b"BEGIN PGP MESSAGE" in encrypted
    assert store.edit("staging", "api_key", editor) is False  # same value: nothing written
    assert store.path("staging", "api_key").read_bytes() == encrypted
    assert git(app_repo, "log", "--format=%s", "-1") == "secrets: staging/api_key (encrypted)"
    assert git(app_repo, "status", "--porcelain") == ""


def test_a_store_at_a_commit_reads_what_that_commit_holds(tmp_path, app_repo):
    from releaser.config import load_config
    from releaser.trust.keys import Keyring

    from .conftest import write_config

    extra = '[environments.staging]\nnodes = []\n[trust]\ngnupghome = "gnupg"\n'
    config = load_config(write_config(tmp_path / "releaser.toml", app_repo, extra=extra))
    Keyring(config.trust.gnupghome).init("staging")
    store = SecretStore(config)
    before = git(app_repo, "rev-parse", "HEAD")
    store.set("staging", "api_key", API_KEY)
    first = git(app_repo, "rev-parse", "HEAD")
    store.set("staging", "api_key", DB_PASSWORD)
    store.set("staging", "db_password", DB_PASSWORD)
    at_first = SecretStore(config, commit=first)
    assert at_first.names("staging") == ["api_key"]
    assert at_first.get("staging", "api_key") == API_KEY
    assert SecretStore(config, commit=before).names("staging") == []
    with pytest.raises(UsageError, match="has no secret db_password at commit"):
        at_first.get("staging", "db_password")
    with pytest.raises(UsageError, match="read-only"):
        at_first.set("staging", "api_key", "x")
    for bad in ("HEAD", "main", first[:12], "--output=/tmp/x", first + "\n"):
        with pytest.raises(UsageError, match="not a full commit id"):
            SecretStore(config, commit=bad)
    with pytest.raises(GitError, match="cannot read the secrets at commit"):
        SecretStore(config, commit="0" * 40).names("staging")


@pytest.mark.slow
def test_rollback_puts_back_the_secrets_of_the_release_it_returns_to(tmp_path, monkeypatch,
                                                                    capsys):
    """1.1.0 ships one api_key, 2.0.0 another: promote reads each from its release's commit,
    and rolling back to 1.1.0 puts 1.1.0's value back, through stdin only."""
    sb = Sandbox(tmp_path, {"staging": 1}, trust=True)
    cli = ["-c", str(sb.config_path)]
    secret = sb.node_root("staging-1") / "etc" / "notes" / "secrets" / "api_key"
    argvs = record_argvs(monkeypatch)
    try:
        assert set_secret(sb, monkeypatch, "api_key", API_KEY) == 0
        git(sb.source, "tag", "v1.1.0")
        assert main([*cli, "promote", "staging", "--ref", "v1.1.0"]) == 0
        assert secret.read_text() == API_KEY
        assert set_secret(sb, monkeypatch, "api_key", DB_PASSWORD) == 0
        (sb.source / "app" / "VERSION_NOTE").write_text("2.0.0\n")
        commit_all(sb.source, "2.0.0")
        git(sb.source, "tag", "v2.0.0")
        assert main([*cli, "promote", "staging", "--ref", "v2.0.0"]) == 0
        assert secret.read_text() == DB_PASSWORD
        # An edit in the working tree, never committed, is never delivered.
        encrypted = sb.source / "secrets" / "staging" / "api_key.gpg"
        encrypted.write_text("not what any release holds\n")
        assert main([*cli, "rollback", "staging", "--yes"]) == 0
        printed = capsys.readouterr()
        assert "staging is back on 1.1.0" in printed.out, printed.out
        assert not leaks((printed.out + printed.err).encode())
    finally:
        monkeypatch.undo()
        sb.down()
    assert secret.read_text() == API_KEY
    assert any("install" in a and "/dev/stdin" in a for a in argvs)
    assert not any(leaks(" ".join(a).encode()) for a in argvs)
    for path in (tmp_path / "sandbox").rglob("*"):
        if path.is_file() and not path.is_symlink() and path != secret \
                and path.parent != secret.parent and ".git" not in path.parts:
            assert not leaks(path.read_bytes()), path


def record_argvs(monkeypatch) -> list[list[str]]:
    """Every argv run through a LocalRunner or started as a process, from now on."""
    argvs: list[list[str]] = []
    real_run = LocalRunner.run

    def recording_run(self, argv, **kwargs):
        argvs.append(list(argv))
        return real_run(self, argv, **kwargs)

    monkeypatch.setattr(LocalRunner, "run", recording_run)
    real_popen = subprocess.Popen.__init__

    def recording_popen(self, args, *a, **kw):
        argvs.append([str(x) for x in (args if isinstance(args, (list, tuple)) else [args])])
        real_popen(self, args, *a, **kw)

    monkeypatch.setattr(subprocess.Popen, "__init__", recording_popen)
    return argvs
