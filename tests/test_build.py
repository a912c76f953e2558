"""`releaser build`: reproducible artifacts that pkgcheck accepts and real Portage installs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from releaser.sandbox import noderoot
from releaser.central import overlay
from releaser.hosts import portage_commands as portage_tools
from releaser.build.builder import build_release
from releaser.cli import main
from releaser.config import load_config
from releaser.hosts.runner import LocalRunner

from .conftest import commit_all, git, write_config

PROVIDED = ["dev-lang/python-3.11.7", "dev-python/flask-3.1.3", "dev-python/waitress-3.0.2"]


@pytest.fixture
def config_file(tmp_path, app_repo):
    return write_config(tmp_path / "releaser.toml", app_repo)


def run_cli(*args: str) -> int:
    return main(list(args))


def tree_digest(path: Path) -> dict:
    import hashlib

    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_rebuild_of_same_ref_is_byte_identical(tmp_path, config_file):
    cfg = load_config(config_file)
    first = build_release(cfg, out=tmp_path / "a")
    second = build_release(cfg, out=tmp_path / "b")
    assert first.release.version == "1.0.0"
    for rel in ("distfiles/notes-1.0.0.tar.gz", "releases/notes-1.0.0/notes-1.0.0.ebuild",
                "releases/notes-1.0.0/Manifest", "releases/notes-1.0.0/metadata.xml"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert first.release.same_artifacts(second.release)
    # The tarball holds the committed tree under PN-PV/, with the commit's time.
    import tarfile

    with tarfile.open(first.tarball) as tar:
        names = tar.getnames()
        assert "notes-1.0.0/notes/__init__.py" in names
        assert {m.mtime for m in tar.getmembers()} == {first_commit_time(config_file)}


def first_commit_time(config_file) -> int:
    cfg = load_config(config_file)
    return int(git(cfg.app.source, "log", "-1", "--format=%ct"))


def test_release_record_and_json_output(tmp_path, config_file, capsys):
    assert run_cli("-c", str(config_file), "build", "--out", str(tmp_path / "o"),
                   "--build-number", "42", "--json") == 0
    record = json.loads(capsys.readouterr().out)
    head = git(load_config(config_file).app.source, "rev-parse", "HEAD")
    assert record["commit"] == head and record["branch"] == "main"
    assert record["version"] == "1.0.0" and record["build_number"] == 42
    assert record["dirty"] is False and record["tag"] == "v1.0.0"
    tarball = tmp_path / "o" / "distfiles" / record["tarball"]["name"]
    assert record["tarball"]["size"] == tarball.stat().st_size
    import hashlib

    assert record["tarball"]["blake2b"] == hashlib.blake2b(tarball.read_bytes()).hexdigest()
    assert record["tarball"]["sha512"] == hashlib.sha512(tarball.read_bytes()).hexdigest()
    manifest = (tmp_path / "o/releases/notes-1.0.0/Manifest").read_text()
    assert manifest.startswith(f"DIST notes-1.0.0.tar.gz {tarball.stat().st_size} BLAKE2B ")


def test_dirty_tree_is_refused_unless_allowed(tmp_path, config_file, capsys):
    source = load_config(config_file).app.source
    (source / "app" / "notes" / "web.py").write_text("# local edit\n", encoding="utf-8")
    out = tmp_path / "o"
    assert run_cli("-c", str(config_file), "build", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "uncommitted changes" in err and err.count("\n") == 1
    assert not out.exists()
    assert run_cli("-c", str(config_file), "build", "--out", str(out), "--allow-dirty",
                   "--json") == 0
    record = json.loads(capsys.readouterr().out)
    assert record["dirty"] is True and record["commit"] != git(source, "rev-parse", "HEAD")
    assert git(source, "stash", "list") == ""  # the work tree and stash were not touched
    assert "# local edit" in (source / "app" / "notes" / "web.py").read_text()


@pytest.mark.parametrize("case", ["unknown-ref", "no-app-dir", "bad-config", "bad-tag"])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, config_file, capsys, case):
    source = load_config(config_file).app.source
    args = ["-c", str(config_file), "build", "--out", str(tmp_path / "o")]
    if case == "unknown-ref":
        args += ["--ref", "no-such-ref"]
    elif case == "no-app-dir":
        shutil.rmtree(source / "app")
        (source / "other").mkdir()
        (source / "other" / "f").write_text("x")
        commit_all(source, "no app")
        args += ["--ref", "HEAD"]
    elif case == "bad-config":
        config_file.write_text(config_file.read_text().replace('name = "notes"', "name = 7"))
    elif case == "bad-tag":
        (source / "app" / "x").write_text("x")
        commit_all(source, "more")
        git(source, "tag", "v1.x")
    code = run_cli(*args)
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith("releaser: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()
    expected = {"unknown-ref": "unknown git ref", "no-app-dir": "no directory 'app'",
                "bad-config": "app.name", "bad-tag": "maps to no valid Gentoo version"}[case]
    assert expected in err


def assemble_overlay(dest: Path, release_dir: Path, category="www-apps", name="notes") -> str:
    repo = overlay.init_overlay(dest, "releaser-staging")
    overlay.add_category(dest, category)
    pkg = dest / category / name
    pkg.mkdir(parents=True)
    for f in release_dir.iterdir():
        if f.name != "release.json":
            shutil.copyfile(f, pkg / f.name)
    return repo


def test_pkgcheck_accepts_generated_ebuild(tmp_path, config_file):
    result = build_release(load_config(config_file), out=tmp_path / "o")
    assemble_overlay(tmp_path / "overlay", result.release_dir)
    scan = subprocess.run(
        [str(Path(sys.executable).parent / "pkgcheck"), "scan", str(tmp_path / "overlay"),
         "--exit", "error", "--reporter", "JsonReporter"],
        capture_output=True, text=True, env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "c")})
    errors = [line for line in scan.stdout.splitlines() if '"_error"' in line]
    assert scan.returncode == 0 and not errors, scan.stdout + scan.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_portage_installs_built_release_and_app_answers_health(tmp_path, config_file):
    result = build_release(load_config(config_file), out=tmp_path / "o")
    repo = assemble_overlay(tmp_path / "overlay", result.release_dir)
    node = tmp_path / "node"
    spec = noderoot.NodeRootSpec(
        root=node, repos=[noderoot.RepoSpec(repo, location=tmp_path / "overlay")],
        profile=noderoot.ProfileSpec(repo), provided=PROVIDED)
    noderoot.create_node_root(spec)
    shutil.copyfile(result.tarball, spec.distdir / result.tarball.name)
    runner = LocalRunner(env=noderoot.portage_env(node))
    portage_tools.emerge(runner, "www-apps/notes-1.0.0")

    assert portage_tools.installed_version(runner, str(node), "www-apps/notes") == "1.0.0"
    assert (node / "var/db/pkg/www-apps/notes-1.0.0/CONTENTS").exists()
    assert (node / "usr/lib/notes/VERSION").read_text().strip() == "1.0.0"
    assert (node / "etc/notes/notes.toml").exists() and (node / "etc/init.d/notes").exists()
    assert (node / "usr/bin/notes").exists()
    assert not Path("/var/db/pkg/www-apps/notes-1.0.0").exists()

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(node / "usr/lib/notes"),
           "NOTES_DATABASE": str(node / "var/lib/notes/notes.db"), "NOTES_PORT": str(port)}
    env.pop("NOTES_VERSION", None)
    proc = subprocess.Popen([sys.executable, "-P", "-m", "notes", "serve"], env=env,
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        health = None
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    health = json.loads(r.read())
                    break
            except OSError:
                time.sleep(0.1)
        assert health and health["status"] == "ok" and health["version"] == "1.0.0"
    finally:
        proc.terminate()
        proc.wait(10)


def test_promote_reuses_an_intact_identical_release(tmp_path, config_file):
    cfg = load_config(config_file)
    first = build_release(cfg, out=tmp_path / "o", build_number=7)
    again = build_release(cfg, out=tmp_path / "o", reuse=True)
    assert again.reused and again.release == first.release  # the same record, build 7
    # a damaged artifact is never reused: the release is built again
    (first.release_dir / "Manifest").write_text("tampered\n")
    rebuilt = build_release(cfg, out=tmp_path / "o", reuse=True)
    assert not rebuilt.reused and rebuilt.release.same_artifacts(first.release)
    # another commit with the same version is not the same release
    source = cfg.app.source
    (source / "app" / "x").write_text("x\n")
    commit_all(source, "moved on")
    git(source, "tag", "-f", "v1.0.0")
    moved = build_release(cfg, out=tmp_path / "o", reuse=True)
    assert not moved.reused and moved.release.commit != first.release.commit


def test_dirty_build_never_takes_the_version_of_the_next_commit(tmp_path, config_file):
    """The next real commit publishes after a dirty build was published (no version clash)."""
    from releaser.central.repository import CentralRepository
    from releaser.central.publish import ReleaseFiles, publish
    from releaser.build.versions import compare

    cfg = load_config(config_file)
    source = cfg.app.source
    central = CentralRepository(LocalRunner(), str(tmp_path / "central"))
    central.init()
    (source / "app" / "CHANGES").write_text("work in progress\n")
    git(source, "add", "app/CHANGES")
    dirty = build_release(cfg, out=tmp_path / "o", allow_dirty=True)
    assert dirty.release.dirty and dirty.release.version.startswith("1.0.0_p0_p")
    assert (dirty.release.tag, dirty.release.distance) == ("v1.0.0", 0)
    publish(central, "staging", "releaser-staging",
            ReleaseFiles(dirty.release, dirty.release_dir), dirty.tarball)
    (source / "app" / "CHANGES").write_text("done\n")
    commit_all(source, "the real next commit")
    real = build_release(cfg, out=tmp_path / "o")
    assert real.release.version == "1.0.0_p1" and not real.release.dirty
    assert compare("1.0.0", dirty.release.version) < 0 < compare(real.release.version,
                                                                 dirty.release.version)
    outcome = publish(central, "staging", "releaser-staging",
                      ReleaseFiles(real.release, real.release_dir), real.tarball)
    assert outcome.published


def test_reuse_builds_again_when_configuration_or_template_changed(tmp_path, config_file,
                                                                   monkeypatch):
    from importlib import resources

    import jinja2

    from releaser.build import ebuild

    cfg = load_config(config_file)
    first = build_release(cfg, out=tmp_path / "o")
    assert build_release(cfg, out=tmp_path / "o", reuse=True).reused
    config_file.write_text(config_file.read_text().replace(
        'description = "Notes, the demo application"', 'description = "Notes, renamed"'))
    changed = build_release(load_config(config_file), out=tmp_path / "o", reuse=True)
    assert not changed.reused
    ebuild_file = changed.release_dir / changed.release.ebuild["name"]
    assert 'DESCRIPTION="Notes, renamed"' in ebuild_file.read_text()
    assert changed.release.tarball == first.release.tarball  # same commit, same tarball
    assert build_release(load_config(config_file), out=tmp_path / "o", reuse=True).reused
    # a changed template (here: one more line) is not the same release either
    packaged = resources.files(ebuild.TEMPLATE_PACKAGE)
    templates = {name: (packaged / name).read_text() for name in ("ebuild.j2", "metadata.xml.j2")}
    templates["ebuild.j2"] = templates["ebuild.j2"].replace(
        'RESTRICT="mirror test"', 'RESTRICT="mirror test"\nPROPERTIES=""')
    monkeypatch.setattr(ebuild, "_loader", lambda: jinja2.DictLoader(templates))
    rebuilt = build_release(load_config(config_file), out=tmp_path / "o", reuse=True)
    assert not rebuilt.reused
    assert 'PROPERTIES=""' in (rebuilt.release_dir / rebuilt.release.ebuild["name"]).read_text()
