"""`releaser promote` on a sandbox fleet: real Portage, git sync, HTTP distfiles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from releaser.sandbox import noderoot
from releaser.hosts import portage_commands as portage_tools
from releaser.cli import main
from releaser.hosts.runner import LocalRunner

from .conftest import commit_all, git
from .sandboxes import Sandbox, tree_digests


def installed(sb: Sandbox, node: str) -> str | None:
    root = sb.node_root(node)
    return portage_tools.installed_version(LocalRunner(env=noderoot.portage_env(root)),
                                           str(root), "www-apps/notes")


def health(sb: Sandbox, node: str) -> dict:
    env = sb.config.environment(node.rsplit("-", 1)[0])
    url = next(n.health_url for n in env.nodes if n.name == node)
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def error_line(err: str) -> str:
    """The one error line releaser printed (progress lines may come before it)."""
    errors = [line for line in err.splitlines() if line.startswith("releaser: error: ")]
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]), err
    return errors[0]


def cli(sb: Sandbox, *args: str) -> int:
    return main(["-c", str(sb.config_path), *args])


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    sb = Sandbox(tmp_path_factory.mktemp("fleet"), {"staging": 2, "production": 2})
    yield sb
    sb.down()


def test_promote_staging_then_production(fleet, capsys):
    assert cli(fleet, "promote", "staging") == 0
    for node in ("staging-1", "staging-2"):
        assert installed(fleet, node) == "1.0.0"
        assert health(fleet, node)["version"] == "1.0.0"
    for node in ("production-1", "production-2"):
        assert installed(fleet, node) is None
    # the distfile was fetched by Portage over HTTP into the node's DISTDIR
    assert (fleet.node_root("staging-1") / "var/cache/distfiles/notes-1.0.0.tar.gz").exists()

    assert cli(fleet, "promote", "production") == 0
    for node in ("production-1", "production-2"):
        assert installed(fleet, node) == "1.0.0"
        assert health(fleet, node)["version"] == "1.0.0"
    out = capsys.readouterr().out
    assert "production runs 1.0.0 on all 2 node(s), healthy" in out


def clone(central: Path, env: str, dest: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(central / "overlays" / f"{env}.git"), str(dest)],
                   check=True)
    return dest


def test_production_overlay_is_byte_identical_and_pkgcheck_clean(fleet, tmp_path):
    staging = clone(fleet.central, "staging", tmp_path / "staging")
    production = clone(fleet.central, "production", tmp_path / "production")
    for name in ("notes-1.0.0.ebuild", "Manifest", "metadata.xml"):
        a = (staging / "www-apps/notes" / name).read_bytes()
        assert a == (production / "www-apps/notes" / name).read_bytes(), name
    for overlay in (staging, production):
        scan = subprocess.run(
            [str(Path(sys.executable).parent / "pkgcheck"), "scan", str(overlay), "--exit",
             "error", "--reporter", "JsonReporter"], capture_output=True, text=True,
            env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
        assert scan.returncode == 0, scan.stdout + scan.stderr
        assert '"_error"' not in scan.stdout
    log = git(production, "log", "--format=%s")
    assert "www-apps/notes-1.0.0: publish to production" in log


def test_rerun_is_a_noop_that_says_so(fleet, capsys):
    before = tree_digests(fleet.central / "overlays", fleet.central / "distfiles")
    assert cli(fleet, "promote", "staging") == 0
    out = capsys.readouterr().out
    assert "already published to staging with the same bytes" in out
    assert out.count("already runs 1.0.0 and is healthy: nothing to do") == 2
    assert tree_digests(fleet.central / "overlays", fleet.central / "distfiles") == before


def test_dry_run_changes_nothing(fleet, capsys):
    add_and_tag = fleet.source / "app" / "DRYRUN"
    add_and_tag.write_text("dry\n")
    commit_all(fleet.source, "for the dry run")
    git(fleet.source, "tag", "v1.0.1")
    roots = [fleet.central] + [fleet.node_root(n) for n in
                              ("staging-1", "staging-2", "production-1", "production-2")]
    before = tree_digests(*roots)
    assert cli(fleet, "promote", "staging", "--dry-run") == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "plan www-apps/notes-1.0.1 -> staging" in out
    for node in ("staging-1", "staging-2"):  # the plan names what each node would do
        assert (f"plan: {node}: 1.0.0 -> 1.0.1: sync, emerge =www-apps/notes-1.0.1"
                in captured.err), captured.err
    assert "dry run: nothing was changed" in out
    after = tree_digests(*roots)
    changed = {k for k in set(before) | set(after)
               if before.get(k) != after.get(k) and "/var/log/" not in k}
    assert not changed, sorted(changed)[:5]
    git(fleet.source, "tag", "-d", "v1.0.1")
    git(fleet.source, "reset", "-q", "--hard", "HEAD~1")


def test_republish_with_other_bytes_is_refused(fleet, capsys):
    (fleet.source / "app" / "CHANGED").write_text("other bytes\n")
    commit_all(fleet.source, "same version, other bytes")
    git(fleet.source, "tag", "-f", "v1.0.0")
    try:
        assert cli(fleet, "promote", "staging") == 1
        assert "never republished" in error_line(capsys.readouterr().err)
        assert installed(fleet, "staging-1") == "1.0.0"
    finally:
        git(fleet.source, "reset", "-q", "--hard", "HEAD~1")
        git(fleet.source, "tag", "-f", "v1.0.0")


@pytest.mark.parametrize("args,message", [
    (["promote", "qa"], "unknown environment 'qa'"),
    (["promote", "production", "--version", "9.9.9"], "was never published to staging"),
    (["promote", "production", "--version", "1.0;rm"], "not a valid Gentoo version"),
    (["promote", "staging", "--ref", "nope"], "unknown git ref"),
])
def test_bad_input(fleet, capsys, args, message):
    assert cli(fleet, *args) == 2
    assert message in error_line(capsys.readouterr().err)


def test_production_needs_something_healthy_on_staging(tmp_path, capsys):
    sb = Sandbox(tmp_path, {"staging": 1, "production": 1})
    try:
        assert cli(sb, "promote", "production") == 2
        assert "nothing has been healthy on staging yet" in error_line(capsys.readouterr().err)
        assert installed(sb, "production-1") is None
    finally:
        sb.down()


def test_failed_emerge_is_reported_with_portage_reason(tmp_path, capsys):
    sb = Sandbox(tmp_path, {"staging": 2})
    try:
        # staging-2 holds a database that is not SQLite: the ebuild's pkg_preinst
        # dump fails and Portage stops the merge.
        db = sb.node_root("staging-2") / "var/lib/notes/notes.db"
        db.parent.mkdir(parents=True, exist_ok=True)  # the bootstrap made it
        db.write_bytes(b"this is not a database")
        assert cli(sb, "promote", "staging", "--json") == 3
        report = json.loads(capsys.readouterr().out)
        nodes = {n["node"]: n for n in report["nodes"]}
        assert report["ok"] is False
        assert nodes["staging-1"]["status"] == "installed" and nodes["staging-1"]["after"] == "1.0.0"
        assert nodes["staging-2"]["status"] == "failed"
        assert nodes["staging-2"]["phase"] == "install" and nodes["staging-2"]["after"] is None
        assert "database dump failed" in nodes["staging-2"]["detail"]
        assert installed(sb, "staging-1") == "1.0.0" and installed(sb, "staging-2") is None
        assert cli(sb, "promote", "production") == 2  # staging never became healthy
    finally:
        sb.down()


def test_production_refuses_what_staging_rolled_back(tmp_path):
    from releaser.central.repository import CentralRepository
    from releaser.config import load_config
    from releaser.errors import UsageError
    from releaser.central.ledger import HEALTHY, WITHDRAWN, Ledger
    from releaser.deploy.promote import promote

    from .conftest import unsigned_exception

    config_file = tmp_path / "releaser.toml"
    config_file.write_text("""
[app]
name = "notes"
[central]
path = "central"
distfiles_url = "http://127.0.0.1:9/distfiles"
[environments.staging]
nodes = [{ name = "s1", root = "nodes/s1", health_url = "http://127.0.0.1:9/health" }]
[environments.production]
promote_from = "staging"
nodes = [{ name = "p1", root = "nodes/p1", health_url = "http://127.0.0.1:9/health" }]
""" + unsigned_exception(["staging", "production"]))
    central = CentralRepository(LocalRunner(), str(tmp_path / "central"))
    central.init()
    ledger = Ledger.load(central, "staging")
    ledger.set_release("1.0.0", HEALTHY)
    ledger.set_release("1.0.0", WITHDRAWN, reason="failed its health check")
    ledger.save()
    config = load_config(config_file)
    with pytest.raises(UsageError, match="was rolled back in staging"):
        promote(config, "production", version="1.0.0")
    with pytest.raises(UsageError, match="nothing has been healthy on staging"):
        promote(config, "production")
    # a dirty build that was healthy on staging: production never takes it
    from releaser.build.release import Release

    ledger.set_release("1.0.1", HEALTHY)
    ledger.save()
    central.write_json(central.path("releases", "notes-1.0.1.json"), Release(
        name="notes", category="www-apps", version="1.0.1", commit="0" * 40, branch="main",
        tag="v1.0.0", distance=0, dirty=True, build_number=None, built_at="x",
        source_tree="0" * 40, tarball={}, ebuild={}, manifest={}).to_dict())
    with pytest.raises(UsageError, match="dirty build"):
        promote(config, "production")
    assert not (tmp_path / "nodes").exists()
