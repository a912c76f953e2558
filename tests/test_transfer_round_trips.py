"""How many commands a write to a host costs (releaser.hosts.transfer, the ledger):
every round trip to an SSH central costs milliseconds, and a release writes the
ledger at each node's phase.  Counted through a runner at the project's seam."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from releaser.central.audit import APPEND_SCRIPT, Actor
from releaser.central.ledger import Ledger
from releaser.central.repository import CentralRepository
from releaser.errors import CommandError, CorruptCopy
from releaser.hosts.runner import LocalRunner
from releaser.hosts.transfer import FIRST_FAILED, host_digest, place_file, place_text


@dataclass
class RecordingRunner(LocalRunner):
    """A local host that records each command and copy sent to it."""

    sent: list[list[str]] = field(default_factory=list)
    #: Characters of a command's stdin that arrive (None: all of it): a link cut short.
    arrive: int | None = None

    def run(self, argv, *, check=True, env=None, input=None, timeout=None):
        self.sent.append(list(argv))
        if input is not None and self.arrive is not None:
            input = input[:self.arrive]
        return super().run(argv, check=check, env=env, input=input, timeout=timeout)

    def put(self, local, remote):
        self.sent.append(["put", str(remote)])
        super().put(local, remote)


@pytest.fixture
def central(tmp_path):
    repo = CentralRepository(RecordingRunner(), str(tmp_path / "central"))
    repo.init()
    repo.runner.sent.clear()
    return repo


def leftovers(folder: Path) -> list[str]:
    return sorted(p for p in os.listdir(folder) if ".partial-" in p)


def test_a_text_is_placed_whole_in_one_command_folder_included(central, tmp_path):
    path = central.path("dumps", "staging", "new-folder", "index.json")
    central.write_json(path, {"é": "ünïcode", "n": 1})
    assert len(central.runner.sent) == 1
    assert json.loads(Path(path).read_text(encoding="utf-8")) == {"é": "ünïcode", "n": 1}
    assert leftovers(Path(path).parent) == []


def test_a_text_cut_short_on_its_way_is_never_placed(central):
    path = central.path("releases", "notes-1.0.0.json")
    central.write_text(path, "the whole record\n")
    central.runner.arrive = 5
    with pytest.raises(CorruptCopy, match="notes-1.0.0.json arrived corrupted"):
        central.write_text(path, "a new record that never fully arrives\n")
    assert Path(path).read_text() == "the whole record\n"
    assert leftovers(Path(path).parent) == []


def test_a_file_is_copied_then_placed_in_one_more_command_with_its_mode(tmp_path):
    runner = RecordingRunner()
    local = tmp_path / "dump.db"
    local.write_bytes(b"\x00database\xff")
    target = tmp_path / "central" / "dumps" / "dump.db"
    place_file(runner, local, str(target), mode="0600")
    assert [c[0] for c in runner.sent] == ["put", "sh"]
    assert target.read_bytes() == b"\x00database\xff" and target.stat().st_mode & 0o777 == 0o600
    assert leftovers(target.parent) == []


def test_a_node_journal_appends_and_rewrites_the_state_in_one_command(central):
    ledger = Ledger.load(central, "staging", Actor("ops", "laptop", run="r1"))
    central.runner.sent.clear()
    ledger.journal("staging-1", phase="backup", version="1.0.0")
    assert len(central.runner.sent) == 1
    ledger.event("release-note", version="1.0.0")
    ledger.save()  # events only: the one append, the state untouched
    assert len(central.runner.sent) == 2 and central.runner.sent[-1][2] == APPEND_SCRIPT
    again = Ledger.load(central, "staging")
    assert again.node("staging-1")["phase"] == "backup"
    assert [e["kind"] for e in again.events()] == ["node", "release-note"]


def test_when_the_append_fails_no_state_is_written_and_the_events_are_kept(central):
    ledger = Ledger.load(central, "staging", Actor("ops", "laptop", run="r1"))
    ledger.journal("staging-1", phase="sync", version="1.0.0")
    state = Path(ledger.path).read_text()
    log = Path(ledger.log.path)
    log.rename(log.with_name("moved.jsonl"))
    log.mkdir()  # the log can no longer be appended to
    with pytest.raises(CommandError) as failed:
        ledger.journal("staging-1", phase="backup", version="1.0.0")
    assert failed.value.returncode == FIRST_FAILED
    assert Path(ledger.path).read_text() == state  # the state never runs ahead of the log
    log.rmdir()
    log.with_name("moved.jsonl").rename(log)
    ledger.save()  # the kept event, then the state
    again = Ledger.load(central, "staging")
    assert [e.get("phase") for e in again.events()] == ["sync", "backup"]
    assert again.node("staging-1")["phase"] == "backup"


def test_the_first_command_must_read_ascii_only(central):
    with pytest.raises(ValueError, match="ASCII"):
        place_text(central.runner, "x", central.path("ledger", "x.json"),
                   first=(["true"], "é"))


def test_a_digest_or_its_absence_is_one_command(tmp_path):
    runner = RecordingRunner()
    present = tmp_path / "notes-1.0.0.tar.gz"
    present.write_bytes(b"tarball")
    assert host_digest(runner, str(present), "sha512") == hashlib.sha512(b"tarball").hexdigest()
    assert host_digest(runner, str(tmp_path / "absent"), "sha512") is None
    assert len(runner.sent) == 2
    with pytest.raises(CommandError, match=r"sha512sum -- .*exited 1"):
        host_digest(runner, str(tmp_path), "sha512")  # there, but no file to read


def test_a_phase_and_what_it_did_are_journaled_in_one_write(central):
    ledger = Ledger.load(central, "staging", Actor("ops", "laptop", run="r1"))
    ledger.begin_attempt("staging-1", target="2.0.0", before="1.0.0", backups={})
    central.runner.sent.clear()
    with ledger.batch():
        ledger.journal("staging-1", phase="install", version="1.0.0", target="2.0.0")
        ledger.note_attempt("staging-1", installed=True)
        assert central.runner.sent == []  # nothing written inside the block
    assert len(central.runner.sent) == 1
    again = Ledger.load(central, "staging")
    assert again.node("staging-1")["phase"] == "install"
    assert again.attempt("staging-1")["installed"] is True
    assert [e["kind"] for e in again.events()][-2:] == ["node", "attempt-note"]
