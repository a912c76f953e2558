"""The ledger stays true when a run meets a late failure or a concurrent change.

A side step that fails after a rollout (retention, mask) never loses what the
rollout established: the ledger keeps healthy/current, the failure is
reported.  A rollback whose plan changed before it took the lock refuses.

One story on a sandbox (staging and production, one node each), faults made at
the project's own seams (``releaser.backup.apply_retention``,
``mask_version`` as releaser.deploy.rollback calls it); everything else is real.
"""

from __future__ import annotations

import subprocess

import pytest

from releaser import backup
from releaser.deploy import rollback
from releaser.central.repository import CentralRepository
from releaser.cli import main
from releaser.errors import CommandError
from releaser.central.ledger import HEALTHY, WITHDRAWN, Ledger
from releaser.deploy.rollback import execute_rollback, plan_rollback
from releaser.errors import RollbackRefused
from releaser.hosts.runner import LocalRunner

from .conftest import commit_all, git
from .sandboxes import Sandbox
from .test_promote import installed


def cli(sb, *args):
    return main(["-c", str(sb.config_path), *args])


def ledger(sb, env) -> Ledger:
    return Ledger.load(CentralRepository(LocalRunner(), str(sb.central)), env)


def new_version(sb, tag: str, when: str) -> None:
    (sb.source / "app" / "CHANGES").write_text(f"{tag}\n")
    commit_all(sb.source, f"notes {tag}", when=when)
    git(sb.source, "tag", tag)


def package_mask(sb, env: str) -> str:
    return subprocess.run(["git", "--git-dir", str(sb.central / f"overlays/{env}.git"), "show",
                           "main:profiles/package.mask"], capture_output=True, text=True).stdout


def central_fails(*_args, **_kwargs):
    raise CommandError(["rm", "-f", "--", "x"], 1, "", "rm: cannot remove 'x': Read-only file "
                       "system", "central")


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    sandbox = Sandbox(tmp_path_factory.mktemp("ledgerfaults"), {"staging": 1, "production": 1})
    yield sandbox
    sandbox.down()


def test_retention_failure_after_a_healthy_rollout_keeps_it_healthy(sb, capsys, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(backup, "apply_retention", central_fails)
        assert cli(sb, "promote", "staging") == 0
    err = capsys.readouterr().err
    assert "WARNING: retention failed: central: rm -f -- ... exited 1" in err, err
    staging = ledger(sb, "staging")
    assert staging.release("1.0.0")["state"] == HEALTHY
    assert staging.current == "1.0.0"
    assert any(e["kind"] == "side-step-failed" and e["step"] == "retention"
               for e in staging.events())
    # production takes what was healthy on staging
    assert cli(sb, "promote", "production") == 0
    assert installed(sb, "production-1") == "1.0.0"
    assert ledger(sb, "production").current == "1.0.0"


def test_mask_failure_after_a_healthy_rollback_keeps_the_rollback(sb, capsys, monkeypatch):
    new_version(sb, "v2.0.0", "2026-02-01T00:00:00+00:00")
    assert cli(sb, "promote", "staging") == 0
    assert installed(sb, "staging-1") == "2.0.0"
    capsys.readouterr()

    with monkeypatch.context() as m:
        m.setattr(rollback, "mask_version", central_fails)
        assert cli(sb, "rollback", "staging", "--yes") == 0
    out, err = capsys.readouterr()
    assert "staging is back on 1.0.0" in out
    assert "WARNING: mask failed" in err and "mask it by hand" in err, err
    assert installed(sb, "staging-1") == "1.0.0"
    staging = ledger(sb, "staging")
    assert staging.current == "1.0.0"
    assert staging.release("2.0.0")["state"] == WITHDRAWN
    assert staging.release("2.0.0")["masked"] is False
    assert "notes-2.0.0" not in package_mask(sb, "staging")  # the fault was real: no mask
    # production never takes the withdrawn version, and says why
    assert cli(sb, "promote", "production", "--version", "2.0.0") == 2
    assert "was rolled back in staging" in capsys.readouterr().err
    assert installed(sb, "production-1") == "1.0.0"


def test_rollback_refuses_a_plan_that_changed_before_it_took_the_lock(sb, capsys):
    new_version(sb, "v3.0.0", "2026-03-01T00:00:00+00:00")
    assert cli(sb, "promote", "staging") == 0
    central = CentralRepository(LocalRunner(), str(sb.central))
    plan = plan_rollback(sb.config, central, "staging")
    assert (plan.bad, plan.target) == ("3.0.0", "1.0.0")
    # meanwhile (say, while the operator reads the plan) another run promotes 4.0.0
    new_version(sb, "v4.0.0", "2026-04-01T00:00:00+00:00")
    assert cli(sb, "promote", "staging") == 0

    with pytest.raises(RollbackRefused, match="changed since the rollback plan was made: the "
                       "version rolled back from is now 4.0.0, was 3.0.0"):
        execute_rollback(sb.config, central, plan)
    assert installed(sb, "staging-1") == "4.0.0"
    assert ledger(sb, "staging").current == "4.0.0"
    assert "notes-3.0.0" not in package_mask(sb, "staging")

    # planned again: the version masked is the one the ledger says is current
    capsys.readouterr()
    assert cli(sb, "rollback", "staging", "--yes") == 0
    assert "staging is back on 3.0.0" in capsys.readouterr().out
    assert installed(sb, "staging-1") == "3.0.0"
    mask = package_mask(sb, "staging")
    assert "=www-apps/notes-4.0.0" in mask and "notes-3.0.0" not in mask
