"""Old versions leave an environment's overlay and the distfile store
(``keep_versions``), never the running version, the rollback target, what a node
still runs, or a tarball another environment still offers.

On a sandbox: staging keeps 1 version; four releases go through it while
production stays on the first.  The Manifest left is checked by pkgcheck.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from releaser.central.audit import AuditLog
from releaser.central.ledger import HEALTHY, Ledger
from releaser.central.repository import CentralRepository
from releaser.cli import main
from releaser.deploy.version_retention import protected
from releaser.hosts.runner import LocalRunner

from .conftest import commit_all, git
from .sandboxes import Sandbox
from .test_promote import clone, installed


def test_protected_versions(tmp_path):
    central = CentralRepository(LocalRunner(), str(tmp_path / "central"))
    central.init()
    ledger = Ledger.load(central, "staging")
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        ledger.set_release(version, HEALTHY)
        ledger.set_current(version, "promote")
    ledger.journal("staging-1", phase="installed", version="1.2.0")
    ledger.journal("staging-2", phase="failed:install", version="1.0.0")  # drifted behind
    # current, the rollback target, what nodes run
    assert protected(ledger, "www-apps/notes") == {"1.2.0", "1.1.0", "1.0.0"}
    # both ends of an install under way; a rollback now would go back to current
    ledger.begin_attempt("staging-3", target="1.3.0", before="0.9.0", backups={})
    assert protected(ledger, "www-apps/notes") == {"1.2.0", "1.0.0", "1.3.0", "0.9.0"}


def release(sb: Sandbox, tag: str, when: str) -> None:
    (sb.source / "app" / "CHANGES").write_text(f"{tag}\n")
    commit_all(sb.source, tag, when=when)
    git(sb.source, "tag", tag)


def keep_versions(config: Path, env: str, count: int) -> None:
    text = config.read_text()
    table = f"[environments.{env}]\n"
    assert table in text
    config.write_text(text.replace(table, f"{table}keep_versions = {count}\n", 1))


@pytest.mark.slow
def test_staging_keeps_one_version_and_production_its_tarball(tmp_path, capsys):
    sb = Sandbox(tmp_path / "sb", {"staging": 1, "production": 1})
    try:
        keep_versions(sb.config_path, "staging", 1)
        cli = lambda *args: main(["-c", str(sb.config_path), *args])  # noqa: E731
        assert cli("promote", "staging") == 0 and cli("promote", "production") == 0
        for i, tag in enumerate(("v1.1.0", "v1.2.0", "v1.3.0")):
            release(sb, tag, f"2026-0{i + 2}-01T00:00:00+00:00")
            assert cli("promote", "staging") == 0
        assert installed(sb, "staging-1") == "1.3.0"

        overlay = clone(sb.central, "staging", tmp_path / "staging")
        pkg = overlay / "www-apps" / "notes"
        ebuilds = sorted(p.name for p in pkg.glob("*.ebuild"))
        # 1.3.0 runs; 1.2.0 is what a rollback goes back to; older ones left
        assert ebuilds == ["notes-1.2.0.ebuild", "notes-1.3.0.ebuild"]
        dist = re.findall(r"^DIST (\S+) ", (pkg / "Manifest").read_text(), re.M)
        assert sorted(dist) == ["notes-1.2.0.tar.gz", "notes-1.3.0.tar.gz"]
        log = git(overlay, "log", "--format=%s")
        assert "www-apps/notes: remove 1.0.0 from staging" in log
        assert "www-apps/notes: remove 1.1.0 from staging" in log
        scan = subprocess.run([str(Path(sys.executable).parent / "pkgcheck"), "scan",
                               str(overlay), "--exit", "error"], capture_output=True, text=True,
                              env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "c")})
        assert scan.returncode == 0, scan.stdout + scan.stderr

        # production still offers 1.0.0: its tarball stays; 1.1.0 was nowhere else
        distfiles = sorted(p.name for p in (sb.central / "distfiles").iterdir())
        assert distfiles == ["notes-1.0.0.tar.gz", "notes-1.2.0.tar.gz", "notes-1.3.0.tar.gz"]
        production = clone(sb.central, "production", tmp_path / "production")
        assert (production / "www-apps/notes/notes-1.0.0.ebuild").exists()
        assert installed(sb, "production-1") == "1.0.0"

        central = CentralRepository(LocalRunner(), str(sb.central))
        events = [e for e in AuditLog(central, "staging").read()
                  if e["kind"] == "versions-removed"]
        assert [e["versions"] for e in events] == [["1.0.0"], ["1.1.0"]]
        assert events[1]["distfiles"] == ["notes-1.1.0.tar.gz"] and events[0]["distfiles"] == []
        # and the rollback target is really there: rollback works
        capsys.readouterr()
        assert cli("rollback", "staging", "--yes") == 0
        assert installed(sb, "staging-1") == "1.2.0"
    finally:
        sb.down()
