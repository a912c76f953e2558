"""Local files written whole (releaser.files) and copies to a host that land whole
(releaser.hosts.transfer): the one helper each, with what they promise on failure."""

import hashlib
import os
import stat
from pathlib import Path

import pytest

from releaser.errors import CommandError, CorruptCopy, UsageError
from releaser.files import (atomic_file, copy_atomic, file_digest, file_digests, text_digest,
                            write_atomic)
from releaser.hosts.runner import LocalRunner
from releaser.hosts.transfer import host_digest, host_size, place_file


class CorruptingRunner(LocalRunner):
    """A host whose copies arrive with their first byte changed (a bad link, a bad disk)."""

    def put(self, local, remote):
        super().put(local, remote)
        data = bytearray(Path(remote).read_bytes())
        data[0] ^= 0xFF
        Path(remote).write_bytes(bytes(data))


def test_an_atomic_file_replaces_the_old_one_only_when_complete(tmp_path):
    target = tmp_path / "sub" / "record.json"
    write_atomic(target, "old\n", perm=0o640)
    assert target.read_text() == "old\n" and stat.S_IMODE(target.stat().st_mode) == 0o640
    with pytest.raises(RuntimeError):
        with atomic_file(target) as handle:
            handle.write(b"half of the new")
            raise RuntimeError("killed half way")
    assert target.read_text() == "old\n"
    assert os.listdir(target.parent) == ["record.json"]  # no temporary left behind
    source = tmp_path / "big"
    source.write_bytes(os.urandom(3 << 20))
    copy_atomic(source, target)
    assert target.read_bytes() == source.read_bytes()


def test_digests_are_portage_s_and_a_missing_file_is_an_os_error(tmp_path):
    path = tmp_path / "notes-1.0.0.tar.gz"
    data = os.urandom(100_000)
    path.write_bytes(data)
    digests = file_digests(path)
    assert digests.as_dict() == {"size": len(data),
                                 "blake2b": hashlib.blake2b(data).hexdigest(),
                                 "sha512": hashlib.sha512(data).hexdigest()}
    assert file_digest(path, "sha256") == hashlib.sha256(data).hexdigest()
    assert text_digest("é\n") == hashlib.sha512("é\n".encode()).hexdigest()
    with pytest.raises(FileNotFoundError):
        file_digest(tmp_path / "missing", "sha512")


def test_place_file_lands_whole_with_its_mode(tmp_path):
    runner = LocalRunner()
    local = tmp_path / "dump.db"
    local.write_bytes(b"database bytes")
    target = str(tmp_path / "central" / "dumps" / "dump.db")
    sha = hashlib.sha512(b"database bytes").hexdigest()
    place_file(runner, local, target, digest=("sha512", sha), mode="0600")
    assert Path(target).read_bytes() == b"database bytes"
    assert stat.S_IMODE(Path(target).stat().st_mode) == 0o600
    assert host_digest(runner, target, "sha512") == sha and host_size(runner, target) == 14
    assert host_digest(runner, target, "blake2b") == hashlib.blake2b(b"database bytes").hexdigest()
    assert host_digest(runner, str(tmp_path / "absent"), "sha512") is None
    with pytest.raises(CommandError):
        host_digest(runner, str(tmp_path), "sha512")  # there, but not readable as a file
    with pytest.raises(UsageError):
        host_digest(runner, target, "md5")


def test_a_copy_that_lands_corrupted_is_removed_and_nothing_is_placed(tmp_path):
    local = tmp_path / "pkg.gpkg.tar"
    local.write_bytes(b"package bytes")
    folder = tmp_path / "binpkgs"
    folder.mkdir()
    (folder / "pkg.gpkg.tar").write_bytes(b"the previous copy")
    sha = hashlib.sha512(b"package bytes").hexdigest()
    with pytest.raises(CorruptCopy, match=r"the copy of .*pkg\.gpkg\.tar arrived corrupted "
                                          r"\(sha512 [0-9a-f]{16}\.\.\. instead of"):
        place_file(CorruptingRunner(), local, str(folder / "pkg.gpkg.tar"), digest=("sha512", sha))
    assert os.listdir(folder) == ["pkg.gpkg.tar"]
    assert (folder / "pkg.gpkg.tar").read_bytes() == b"the previous copy"
