"""One test per attack on the overlay, against real Portage, real git and real gpg.

A sandbox fleet with ``[trust]``: one staging node running 1.0.0 from a signed
overlay.  Each test changes the central bare overlay as an attacker with write
access to the central repository could (or as a frozen mirror would), then
syncs the node through releaser's own node code (``Node.sync``: Portage's git
sync with the repos.conf verification host bootstrap wrote, then releaser's
ancestry and age checks).  Each refusal is a named ``OverlayTrustError``; the
node's overlay stays on the commit it had and the node keeps running 1.0.0.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from releaser.central.overlay import format_timestamp
from releaser.cli import main
from releaser.errors import OverlayTrustError, PortageError
from releaser.hosts import portage_commands
from releaser.hosts.node import connect
from releaser.hosts.local_root import portage_env
from releaser.hosts.runner import LocalRunner
from releaser.trust.ancestry import SYNCED_REF
from releaser.trust.keys import Keyring

from .conftest import commit_all, git
from .sandboxes import Sandbox

NODE = "staging-1"
CP = "www-apps/notes"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    sb = Sandbox(tmp_path_factory.mktemp("trust"), {"staging": 1}, trust=True)
    try:
        assert main(["-c", str(sb.config_path), "promote", "staging"]) == 0
        yield sb
    finally:
        sb.down()


@pytest.fixture
def good(fleet):
    """The bare overlay's signed head after the first promote; put back after each test,
    with the keyring's record of it (the head releaser pushed last)."""
    bare = fleet.central / "overlays" / "staging.git"
    head = git(bare, "rev-parse", "main")
    yield head
    git(bare, "update-ref", "refs/heads/main", head)
    Keyring(fleet.config.trust.gnupghome).record_head("staging", head)


def node_of(sb: Sandbox):
    env = sb.config.environment("staging")
    return connect(sb.config, next(n for n in env.nodes if n.name == NODE))


def overlay_head(sb: Sandbox) -> str:
    return git(sb.node_root(NODE) / "var/db/repos/releaser-staging", "rev-parse", "HEAD")


def installed(sb: Sandbox) -> str | None:
    root = sb.node_root(NODE)
    return portage_commands.installed_version(LocalRunner(env=portage_env(root)), str(root), CP)


def push(sb: Sandbox, tmp: Path, *, base: str | None = None, gnupghome: Path | None = None,
         stamp: datetime | None = None, change: str = "profiles/attacker") -> str:
    """Commit a change to a clone of the central overlay and push it there (forced).

    ``base``: the commit to build on (default the head); ``gnupghome``: sign with
    that keyring's key for staging (None: unsigned); ``stamp``: the
    metadata/timestamp.chk it carries (default now).
    """
    work = tmp / "attacker"
    subprocess.run(["git", "clone", "-q", str(fleet_bare(sb)), str(work)], check=True)
    if base:
        git(work, "reset", "-q", "--hard", base)
    (work / change).write_text("echo owned\n")
    (work / "metadata" / "timestamp.chk").write_text(
        format_timestamp(stamp or datetime.now(timezone.utc)) + "\n")
    git(work, "add", "-A")
    sign = []
    env = {**os.environ, "GIT_AUTHOR_NAME": "x", "GIT_AUTHOR_EMAIL": "x@localhost",
           "GIT_COMMITTER_NAME": "x", "GIT_COMMITTER_EMAIL": "x@localhost"}
    if gnupghome is not None:
        sign = [f"-S{Keyring(gnupghome).active('staging')}"]
        env["GNUPGHOME"] = str(gnupghome)
    subprocess.run(["git", "-C", str(work), "commit", "-q", *sign, "-m", "attack"], check=True,
                   env=env)
    git(work, "push", "-q", "--force", "origin", "HEAD:main")
    return git(work, "rev-parse", "HEAD")


def fleet_bare(sb: Sandbox) -> Path:
    return sb.central / "overlays" / "staging.git"


def release_key_home(sb: Sandbox) -> Path:
    return sb.config.trust.gnupghome


def refused(sb: Sandbox, good: str, kind: str) -> OverlayTrustError:
    """Sync the node; it must refuse with ``kind`` and keep its overlay and its release."""
    node = node_of(sb)
    try:
        with pytest.raises(OverlayTrustError) as caught:
            node.sync("releaser-staging")
    finally:
        node.close()
    assert caught.value.kind == kind, caught.value
    assert overlay_head(sb) == good
    assert installed(sb) == "1.0.0"
    return caught.value


def test_unsigned_commit_refused(fleet, good, tmp_path):
    push(fleet, tmp_path)
    exc = refused(fleet, good, "unsigned")
    assert "no signature" in exc.reason


def test_commit_signed_by_another_key_refused(fleet, good, tmp_path):
    other = tmp_path / "other-gnupg"
    Keyring(other).init("staging")  # a key named like the release key, but not it
    push(fleet, tmp_path, gnupghome=other)
    exc = refused(fleet, good, "untrusted")
    assert "missing key" in exc.reason


def test_older_signed_commit_force_pushed_back_refused(fleet, good):
    older = git(fleet_bare(fleet), "rev-parse", f"{good}~1")  # signed by the release key
    git(fleet_bare(fleet), "update-ref", "refs/heads/main", older)
    exc = refused(fleet, good, "rollback")
    assert older[:12] in exc.reason and good[:12] in exc.reason


def test_diverged_history_refused(fleet, good, tmp_path):
    # Signed with the real release key (say, leaked) but not on top of what nodes have.
    push(fleet, tmp_path, base=f"{good}~1", gnupghome=release_key_home(fleet))
    refused(fleet, good, "diverged")


def test_stale_timestamp_refused(fleet, good, tmp_path):
    # A frozen mirror replaying a validly signed overlay of long ago.
    old = datetime.now(timezone.utc) - timedelta(days=fleet.config.trust.max_age_days + 1)
    push(fleet, tmp_path, gnupghome=release_key_home(fleet), stamp=old)
    exc = refused(fleet, good, "stale")
    assert "max_age_days" in exc.reason


def test_a_good_sync_is_recorded_on_the_node(fleet, good):
    node = node_of(fleet)
    try:
        node.sync("releaser-staging")
    finally:
        node.close()
    overlay = fleet.node_root(NODE) / "var/db/repos/releaser-staging"
    assert git(overlay, "rev-parse", SYNCED_REF) == good == overlay_head(fleet)


@pytest.fixture(scope="module")
def v101(fleet) -> str:
    """The app's source tagged v1.0.1 (one more file in the app)."""
    source = fleet.source
    (source / "app" / "VERSION_NOTE").write_text("1.0.1\n")
    commit_all(source, "1.0.1")
    git(source, "tag", "v1.0.1")
    return "v1.0.1"


def test_promote_refuses_a_central_overlay_rolled_back(fleet, good, v101, capsys):
    """The keyring remembers the head releaser pushed last: an older signed head
    force-pushed back is refused before anything is built on it."""
    older = git(fleet_bare(fleet), "rev-parse", f"{good}~1")
    git(fleet_bare(fleet), "update-ref", "refs/heads/main", older)
    capsys.readouterr()
    assert main(["-c", str(fleet.config_path), "promote", "staging", "--ref", v101]) == 1
    assert (f"its head {older[:12]} does not descend from {good[:12]}, which releaser "
            "pushed last") in capsys.readouterr().err
    assert git(fleet_bare(fleet), "rev-parse", "main") == older  # nothing pushed on top
    assert installed(fleet) == "1.0.0" and overlay_head(fleet) == good


def test_refusal_during_promote_keeps_the_node_and_is_recorded(fleet, good, v101, capsys):
    """Central rolled back, and releaser run from a keyring with no record of the
    overlay (another operator's copy): it builds on the old head and signs, but the
    node refuses the result as a rewritten history."""
    state_file = fleet.config.trust.gnupghome / "releaser-keys.json"
    state = json.loads(state_file.read_text())
    state["staging"].pop("head")
    state_file.write_text(json.dumps(state))
    git(fleet_bare(fleet), "update-ref", "refs/heads/main", f"{good}~1")
    capsys.readouterr()
    rc = main(["-c", str(fleet.config_path), "promote", "staging", "--ref", v101, "--json"])
    out = capsys.readouterr().out
    assert rc != 0
    assert "overlay refused (diverged)" in out
    assert installed(fleet) == "1.0.0" and overlay_head(fleet) == good
    ledger_events = main(["-c", str(fleet.config_path), "history", "staging", "--json"])
    assert ledger_events == 0
    history = capsys.readouterr().out
    assert '"overlay_refused"' in history and '"diverged"' in history
    main(["-c", str(fleet.config_path), "status", "staging", "--json"])
    status = json.loads(capsys.readouterr().out)
    node = next(n for e in status for n in e["nodes"] if n["name"] == NODE)
    assert node["installed"] == "1.0.0"
    assert "overlay refused (diverged)" in node["last_change"]["detail"]


def test_releaser_never_signs_on_top_of_an_unsigned_head(fleet, good, v101, tmp_path, capsys):
    """Portage checks only the top commit: a publish signing on top of someone else's
    unsigned commit would vouch for it.  Promote refuses before touching any node."""
    planted = push(fleet, tmp_path)
    capsys.readouterr()
    assert main(["-c", str(fleet.config_path), "promote", "staging", "--ref", v101]) == 1
    err = capsys.readouterr().err
    assert f"has a head ({planted[:12]}) not signed by its release key (no signature)" in err
    assert git(fleet_bare(fleet), "rev-parse", "main") == planted  # nothing pushed on top
    assert installed(fleet) == "1.0.0" and overlay_head(fleet) == good


def test_tampered_distfile_refused_by_the_manifest(fleet, good, v101, tmp_path):
    """A distfile changed on the central repository after publishing: Portage's Manifest
    check on the node refuses it, and the node keeps 1.0.0."""
    from releaser.build.builder import build_release
    from releaser.central.publish import ReleaseFiles, publish
    from releaser.central.repository import CentralRepository

    config = fleet.config
    built = build_release(config, ref=v101, out=tmp_path / "out")
    central = CentralRepository.from_config(config)
    publish(central, "staging", "releaser-staging",
            ReleaseFiles(built.release, built.release_dir), built.tarball)
    distfile = fleet.central / "distfiles" / built.release.tarball["name"]
    original = distfile.read_bytes()
    distfile.write_bytes(original[:-16] + b"\0" * 16)
    node = node_of(fleet)
    try:
        node.sync("releaser-staging")
        with pytest.raises(PortageError) as caught:
            node.install(f"{CP}-1.0.1")
    finally:
        node.close()
        distfile.write_bytes(original)
    said = [str(caught.value), *caught.value.details]
    assert any("VERIFY FAILED" in line for line in said), said
    assert installed(fleet) == "1.0.0"
