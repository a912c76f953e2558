"""What reaches an overlay is what was built: a tampered staging overlay never
reaches production.

One story on a sandbox (staging and production, one node each); the staging
overlay is changed the way anyone with push access could: clone, edit, push.
"""

from __future__ import annotations

import subprocess

import pytest

from releaser.cli import main

from .conftest import commit_all, git
from .sandboxes import Sandbox, tree_digests
from .test_promote import error_line, installed


def cli(sb, *args):
    return main(["-c", str(sb.config_path), *args])


def release(sb, tag: str, content: str, when: str) -> None:
    (sb.source / "app" / "CHANGES").write_text(content)
    commit_all(sb.source, f"notes {tag}", when=when)
    git(sb.source, "tag", tag)


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    # unsigned (a documented exception): these tests push into an overlay by hand, which a
    # signed overlay refuses before publish's own checks (tests/test_trust_attacks.py)
    sandbox = Sandbox(tmp_path_factory.mktemp("integrity"), {"staging": 1, "production": 1},
                      trust=False)
    yield sandbox
    sandbox.down()


def test_a_line_pushed_into_the_staging_ebuild_never_reaches_production(sb, capsys, tmp_path):
    release(sb, "v1.0.50", "1.0.50\n", "2026-02-01T00:00:00+00:00")
    assert cli(sb, "promote", "staging") == 0
    assert installed(sb, "staging-1") == "1.0.50"

    marker = tmp_path / "ran"
    work = tmp_path / "staging-overlay"
    subprocess.run(["git", "clone", "-q", str(sb.central / "overlays/staging.git"), str(work)],
                   check=True)
    ebuild = work / "www-apps/notes/notes-1.0.50.ebuild"
    # sourced in every Portage phase: on the releaser machine (``ebuild manifest``)
    # and as root on every node
    ebuild.write_text(ebuild.read_text() + f"echo injected >> {marker}\n")
    commit_all(work, "a helpful fix")
    git(work, "push", "-q", "origin", "main")

    before = tree_digests(sb.central / "overlays", sb.node_root("production-1"))
    capsys.readouterr()
    assert cli(sb, "promote", "production") == 1
    line = error_line(capsys.readouterr().err)
    assert ("www-apps/notes/notes-1.0.50.ebuild differs from the file notes-1.0.50 was "
            "built with") in line, line
    assert not marker.exists()  # sourced nowhere, not even by ebuild manifest here
    assert installed(sb, "production-1") is None
    after = tree_digests(sb.central / "overlays", sb.node_root("production-1"))
    changed = [k for k in set(before) | set(after)
               if before.get(k) != after.get(k) and "/var/log/" not in k]
    assert not changed, changed[:5]


def test_another_spelling_of_a_published_version_is_refused(sb, capsys):
    """v1.00.50 on other code: Portage's 1.0.50, which is already published."""
    release(sb, "v1.00.50", "other code\n", "2026-03-01T00:00:00+00:00")
    before = tree_digests(sb.central / "overlays", sb.central / "distfiles",
                          sb.central / "releases")
    capsys.readouterr()
    assert cli(sb, "promote", "staging") == 1
    line = error_line(capsys.readouterr().err)
    assert "notes-1.00.50 is the same version to Portage as notes-1.0.50" in line, line
    assert installed(sb, "staging-1") == "1.0.50"
    assert tree_digests(sb.central / "overlays", sb.central / "distfiles",
                        sb.central / "releases") == before


def test_ledger_and_mask_match_versions_as_portage_does(tmp_path):
    from releaser.central.repository import CentralRepository
    from releaser.central.ledger import HEALTHY, WITHDRAWN, Ledger
    from releaser.central.masking import masks
    from releaser.hosts.runner import LocalRunner

    ledger = Ledger.load(CentralRepository(LocalRunner(), str(tmp_path)), "staging")
    ledger.set_release("1.0.50", HEALTHY)
    assert ledger.release("1.00.50") is ledger.release("1.0.50")
    assert ledger.spelling("1.00.50") == "1.0.50"
    ledger.set_release("1.00.50", WITHDRAWN, reason="test")
    assert ledger.versions() == ["1.0.50"]
    assert ledger.release("1.0.50")["state"] == WITHDRAWN
    assert ledger.release("1.0.51") is None
    assert masks("=www-apps/notes-1.00.50", "www-apps/notes", "1.0.50")
    assert not masks("=www-apps/notes-1.0.51", "www-apps/notes", "1.0.50")
    assert not masks("=www-apps/other-1.0.50", "www-apps/notes", "1.0.50")
    assert not masks("# =www-apps/notes-1.0.50", "www-apps/notes", "1.0.50")
