"""The central repository's housekeeping: what killed runs leave behind is removed."""

import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from releaser.central import overlay_git
from releaser.build.builder import build_release
from releaser.central.repository import CentralRepository
from releaser.config import load_config
from releaser.central.publish import ReleaseFiles, publish
from releaser.hosts.runner import LocalRunner

from .conftest import write_config

HOURS_AGO = 2 * 3600


@pytest.fixture
def central(tmp_path):
    repo = CentralRepository(LocalRunner(), str(tmp_path / "central"))
    repo.init()
    return repo


def plant(central: CentralRepository, folder: str, name: str, age: float = 0) -> Path:
    path = Path(central.path(folder, name))
    path.write_bytes(b"left behind")
    if age:
        then = time.time() - age
        os.utime(path, (then, then))
    return path


def test_only_old_temporaries_are_removed(central):
    old = [plant(central, "distfiles", ".notes-1.0.1.tar.gz.partial-0123456789ab", HOURS_AGO),
           plant(central, "distfiles",
                 "..notes-1.0.1.tar.gz.partial-0123456789ab.releaser-ba9876543210.tmp",
                 HOURS_AGO),
           plant(central, "releases", ".notes-1.0.1.json.partial-0123456789ab", HOURS_AGO)]
    kept = [plant(central, "distfiles", ".notes-1.0.2.tar.gz.partial-fedcba987654"),  # in flight
            plant(central, "distfiles", "notes-1.0.0.tar.gz", HOURS_AGO),  # published
            plant(central, "locks", ".staging.lock.partial-0123456789ab", HOURS_AGO)]
    removed = central.remove_stale_temporaries()
    assert sorted(removed) == sorted(map(str, old))
    assert not any(p.exists() for p in old) and all(p.exists() for p in kept)


def test_publish_removes_a_killed_publish_s_temporaries(central, tmp_path, app_repo):
    config = load_config(write_config(tmp_path / "releaser.toml", app_repo))
    built = build_release(config, out=tmp_path / "out")
    stale = plant(central, "distfiles", ".notes-1.0.0.tar.gz.partial-0123456789ab", HOURS_AGO)
    fresh = plant(central, "distfiles", ".notes-0.9.tar.gz.partial-0123456789ab")
    outcome = publish(central, "staging", "releaser-staging",
                      ReleaseFiles(built.release, built.release_dir), built.tarball)
    assert outcome.published and not stale.exists() and fresh.exists()
    assert sorted(os.listdir(central.path("distfiles"))) == [fresh.name, "notes-1.0.0.tar.gz"]


@pytest.fixture
def scratch_root(tmp_path, monkeypatch):
    """$TMPDIR of this test alone: where temporary clones go."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_a_temporary_clone_is_removed_when_its_user_fails(central, scratch_root):
    overlay_git.ensure_overlay(central, "staging", "releaser-staging")
    with pytest.raises(RuntimeError, match="failed half way"):
        with overlay_git.checkout(central, "staging") as repo:
            clone = Path(repo.working_tree_dir)
            assert (clone / "profiles" / "repo_name").is_file()
            raise RuntimeError("failed half way")
    assert not clone.exists() and list(scratch_root.iterdir()) == []


def test_clones_of_killed_runs_are_removed_by_the_next_run(central, scratch_root):
    proc = subprocess.Popen(["true"])
    proc.wait()
    orphan = scratch_root / f"{overlay_git.SCRATCH_PREFIX}{proc.pid}-k1ll3d"
    live = scratch_root / f"{overlay_git.SCRATCH_PREFIX}{os.getppid()}-runn1ng"
    for path in (orphan, live):
        (path / "overlay").mkdir(parents=True)
    overlay_git.ensure_overlay(central, "staging", "releaser-staging")
    assert not orphan.exists() and live.exists()
    assert list(scratch_root.iterdir()) == [live]


def test_from_config_opens_only_an_existing_central_unless_creating(tmp_path):
    """``CentralRepository.from_config`` refuses a path without the marker (exit 2)
    before anything is made; ``must_exist=False`` (``central init``) opens it anyway."""
    from releaser.errors import CentralMissing, UsageError

    config = load_config(write_config(tmp_path / "releaser.toml", tmp_path / "src"))
    with pytest.raises(CentralMissing) as missing:
        CentralRepository.from_config(config)
    assert missing.value.exit_code == 2 and not (tmp_path / "central").exists()
    repo = CentralRepository.from_config(config, must_exist=False)
    assert repo.root == str(tmp_path / "central") and repo.runner.host == "central"
    assert repo.init()
    assert CentralRepository.from_config(config).root == repo.root

    bare = tmp_path / "bare.toml"
    bare.write_text((tmp_path / "releaser.toml").read_text().split("[central]")[0])
    with pytest.raises(UsageError, match="no \\[central\\] repository configured"):
        CentralRepository.from_config(load_config(bare))


def test_a_distfile_that_lands_corrupted_is_not_published(tmp_path):
    """The distfile is checked where it landed; a corrupted copy leaves nothing behind."""
    from releaser.errors import PublishError
    from releaser.files import file_digests

    from .test_files import CorruptingRunner

    repo = CentralRepository(CorruptingRunner(host="central"), str(tmp_path / "central"))
    repo.init()
    tarball = tmp_path / "notes-1.0.0.tar.gz"
    tarball.write_bytes(b"not really a tarball, but bytes all the same")
    with pytest.raises(PublishError, match=r"^distfile notes-1\.0\.0\.tar\.gz arrived corrupted "
                                           r"on the central repository \(sha512 .*\); nothing "
                                           r"was published$"):
        repo.upload_distfile(tarball, file_digests(tarball))
    assert os.listdir(repo.path("distfiles")) == []
    good = CentralRepository(LocalRunner(host="central"), repo.root)
    assert good.upload_distfile(tarball, file_digests(tarball))
    assert good.remote_digests(good.distfile(tarball.name)) == file_digests(tarball)
    assert not good.upload_distfile(tarball, file_digests(tarball))  # same bytes: a no-op
