"""Environment overlays: the one skeleton rendered with any repository name, categories,
timestamps, and pkgcheck's verdict."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from releaser.sandbox import noderoot
from releaser.central import overlay
from releaser.hosts import portage_commands as portage_tools
from releaser.errors import UsageError
from releaser.hosts.runner import LocalRunner

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "portage" / "hello"
PKGCHECK = Path(sys.executable).parent / "pkgcheck"


def pkgcheck(overlay_dir: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg-cache")}
    return subprocess.run([str(PKGCHECK), "scan", *args, str(overlay_dir)], env=env,
                          capture_output=True, text=True, timeout=120)


def publish_fixture(overlay_dir: Path, tmp_path: Path, *, license: str = "MIT",
                    rdepend: str = "") -> Path:
    """hello-1.0 (ebuild, metadata.xml, distfile, Manifest by Portage) into overlay_dir."""
    pkg = overlay_dir / "www-apps" / "hello"
    pkg.mkdir(parents=True)
    shutil.copyfile(FIXTURE / "metadata.xml", pkg / "metadata.xml")
    ebuild = pkg / "hello-1.0.ebuild"
    ebuild.write_text((FIXTURE / "hello.ebuild").read_text()
                      .replace("@DIST_URL@", "https://example.com/distfiles")
                      .replace('LICENSE="MIT"', f'LICENSE="{license}"')
                      .replace('RESTRICT="mirror"\n', f'RESTRICT="mirror"\n{rdepend}'))
    distdir = tmp_path / "distfiles"
    distdir.mkdir(exist_ok=True)
    with tarfile.open(distdir / "hello-1.0.tar.gz", "w:gz") as tar:
        for name in ("greeting.txt", "hello.conf"):
            info = tarfile.TarInfo(f"hello-1.0/{name}")
            info.size = 3
            tar.addfile(info, io.BytesIO(b"hi\n"))
    # ebuild manifest needs a Portage configuration: a scratch node root.
    name = overlay.repo_name(overlay_dir)
    spec = noderoot.NodeRootSpec(root=tmp_path / "scratch-root",
                                 repos=[noderoot.RepoSpec(name, location=overlay_dir)],
                                 profile=noderoot.ProfileSpec(name))
    noderoot.create_node_root(spec)
    runner = LocalRunner(env=noderoot.portage_env(spec.root))
    manifest = portage_tools.manifest(runner, ebuild, distdir=distdir)
    assert Path(manifest).read_text().startswith("DIST hello-1.0.tar.gz ")
    return ebuild


def test_there_is_one_skeleton_and_it_names_no_environment():
    from importlib import resources

    from releaser.config.validate import skeleton_licenses

    package = resources.files("releaser.overlays")
    assert sorted(p.name for p in package.iterdir() if p.is_dir() and p.name != "__pycache__") \
        == [overlay.SKELETON]
    texts = [f.read_text() for f in Path(str(overlay.skeleton())).rglob("*") if f.is_file()]
    assert texts and not any(word in t for t in texts for word in ("staging", "production"))
    assert skeleton_licenses() == {"MIT"}  # the licence check reads the one skeleton


@pytest.mark.parametrize("name", ["releaser-staging", "releaser-development", "acme_qa-2"])
def test_init_overlay_renders_the_skeleton_with_the_repository_name(tmp_path, name):
    dest = tmp_path / "ov"
    assert overlay.init_overlay(dest, name) == name
    assert (dest / "profiles/repo_name").read_text() == f"{name}\n"
    assert not (dest / "__init__.py").exists() and not (dest / "__pycache__").exists()
    assert not list(dest.rglob("*.j2")) and not any(
        "{{" in f.read_text() for f in dest.rglob("*") if f.is_file())
    assert (dest / "profiles/releaser/amd64/eapi").read_text().strip() == "8"
    assert (dest / "profiles/profiles.desc").read_text() == "amd64\treleaser/amd64\tstable\n"
    layout = (dest / "metadata/layout.conf").read_text()
    assert f"\nrepo-name = {name}\n" in layout
    assert "masters =\n" in layout and "thin-manifests = true" in layout
    assert not (dest / "metadata/timestamp.chk").exists()
    assert "/metadata/md5-cache/" in (dest / ".gitignore").read_text()
    assert overlay.categories(dest) == ["www-apps"]


def test_init_overlay_refuses_bad_names_and_existing_overlays(tmp_path):
    for bad in ("-x", "a b", "../staging", "", "x\n", "a/b", "x]\n[y", None):
        with pytest.raises(UsageError, match="is not a Portage repository name"):
            overlay.init_overlay(tmp_path / "b", bad)
    assert not (tmp_path / "b").exists()
    dest = tmp_path / "c"
    (dest / ".git").mkdir(parents=True)  # an empty clone is fine
    overlay.init_overlay(dest, "releaser-staging")
    (dest / "profiles/categories").write_text("dev-libs\n")
    with pytest.raises(UsageError, match="already holds an overlay"):
        overlay.init_overlay(dest, "releaser-production")
    assert (dest / "profiles/categories").read_text() == "dev-libs\n"
    with pytest.raises(UsageError, match="not an overlay"):
        overlay.repo_name(tmp_path)


def test_add_category_keeps_the_file_sorted_and_is_idempotent(tmp_path):
    dest = tmp_path / "ov"
    overlay.init_overlay(dest, "releaser-staging")
    assert overlay.add_category(dest, "dev-python") is True
    assert overlay.add_category(dest, "app-misc") is True
    assert overlay.add_category(dest, "dev-python") is False
    assert overlay.add_category(dest, "www-apps") is False
    assert (dest / "profiles/categories").read_text() == "app-misc\ndev-python\nwww-apps\n"
    for bad in ("", "www apps", "a/b", "-x", "x;rm"):
        with pytest.raises(UsageError):
            overlay.add_category(dest, bad)


def test_write_timestamp_uses_gentoos_format(tmp_path):
    dest = tmp_path / "ov"
    overlay.init_overlay(dest, "releaser-staging")
    when = datetime(2026, 11, 21, 12, 0, 0, tzinfo=timezone.utc)
    path = overlay.write_timestamp(dest, when)
    assert path == dest / "metadata/timestamp.chk"
    assert path.read_text() == "Sat, 21 Nov 2026 12:00:00 +0000\n"
    assert overlay.read_timestamp(dest) == when
    # Other zones are converted to UTC; naive datetimes are taken as UTC.
    cet = timezone(timedelta(hours=1))
    overlay.write_timestamp(dest, datetime(2027, 1, 1, 0, 30, 5, tzinfo=cet))
    assert path.read_text() == "Thu, 31 Dec 2026 23:30:05 +0000\n"
    assert overlay.format_timestamp(datetime(2026, 3, 2, 8, 7, 6)) == "Mon, 02 Mar 2026 08:07:06 +0000"


def test_overlay_with_a_package_passes_pkgcheck(tmp_path):
    """Any repository name: the skeleton rendered as ``acme-qa`` is a clean overlay."""
    dest = tmp_path / "ov"
    overlay.init_overlay(dest, "acme-qa")
    publish_fixture(dest, tmp_path)
    overlay.write_timestamp(dest, datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc))

    scan = pkgcheck(dest, tmp_path, "--exit", "error")
    assert scan.returncode == 0, scan.stdout + scan.stderr
    report = pkgcheck(dest, tmp_path, "--reporter", "JsonReporter")
    assert report.returncode == 0, report.stderr
    results = [json.loads(line) for line in report.stdout.splitlines() if line.strip()]
    assert results == [], results  # not even a warning


def test_pkgcheck_is_really_checking(tmp_path):
    """Control: the same scan fails on an ebuild naming an unknown licence."""
    dest = tmp_path / "ov"
    overlay.init_overlay(dest, "releaser-staging")
    publish_fixture(dest, tmp_path, license="NOT-A-LICENSE")
    scan = pkgcheck(dest, tmp_path, "--exit", "error")
    assert scan.returncode == 1
    assert "UnknownLicense" in scan.stdout


APP_RDEPEND = 'RDEPEND="\n\t>=dev-lang/python-3.11\n\tdev-python/flask\n\tdev-python/waitress\n"\n'


def test_runtime_dependencies_outside_the_overlay_are_provided_by_its_profile(tmp_path):
    dest = tmp_path / "ov"
    overlay.init_overlay(dest, "releaser-staging")
    assert overlay.provided(dest) == ["dev-lang/python-3.11.2", "dev-python/flask-3.1.3",
                                      "dev-python/waitress-3.0.2"]
    ebuild = publish_fixture(dest, tmp_path, rdepend=APP_RDEPEND)
    assert ">=dev-lang/python-3.11" in ebuild.read_text()

    scan = pkgcheck(dest, tmp_path, "--exit", "error")
    assert scan.returncode == 0, scan.stdout + scan.stderr
    assert "NonsolvableDeps" not in scan.stdout  # only warnings (NonexistentDeps...) remain

    # Portage resolves them the same way on a node (no node-level package.provided).
    root = tmp_path / "scratch-root"
    runner = LocalRunner(env=noderoot.portage_env(root))
    pretend = runner.run(["emerge", "--pretend", "--color=n", "=www-apps/hello-1.0"], check=False)
    assert pretend.returncode == 0, pretend.stderr
    assert "www-apps/hello-1.0" in pretend.stdout and "dev-python/flask" not in pretend.stdout

    # Control: without the profile's entries both tools refuse.
    assert overlay.set_provided(dest, ["dev-lang/python-3.11.2"]) is True
    assert overlay.set_provided(dest, ["dev-lang/python-3.11.2"]) is False
    scan = pkgcheck(dest, tmp_path, "--exit", "error")
    assert scan.returncode == 1 and "NonsolvableDepsInStable" in scan.stdout
    pretend = runner.run(["emerge", "--pretend", "--color=n", "=www-apps/hello-1.0"], check=False)
    assert pretend.returncode == 1 and "dev-python/flask" in pretend.stderr


def test_set_provided_validates_entries(tmp_path):
    dest = tmp_path / "ov"
    overlay.init_overlay(dest, "releaser-staging")
    for bad in ("dev-python/flask", ">=dev-python/flask-3", "dev-python/flask-3.1;id", "x"):
        with pytest.raises(UsageError):
            overlay.set_provided(dest, [bad])
    assert len(overlay.provided(dest)) == 3
