"""Portage commands against sandbox node roots, with real Portage (no mocks).

Every test gets its own node root and overlay (Portage caches ebuild metadata
by mtime with one-second resolution: a reused folder can serve stale metadata).
The fixture package is tests/fixtures/portage/hello (see its README).
"""

from __future__ import annotations

import functools
import http.server
import io
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path, PurePosixPath

import pytest

from releaser.sandbox import noderoot
from releaser.central import overlay
from releaser.hosts import bintree
from releaser.hosts import portage_commands as portage_tools
from releaser.errors import NodeError, PortageError, UsageError
from releaser.hosts.runner import CommandResult, LocalRunner

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "portage" / "hello"
CPV = "www-apps/hello-1.0"
UNUSED_URL = "http://127.0.0.1:9/distfiles"  # never contacted: distfile pre-seeded
CONF = "# hello's configuration\nport = 8080\n"


# ---------------------------------------------------------------------------- helpers


def make_tarball(directory: Path, version: str = "1.0", conf: str = CONF) -> Path:
    """The fixture's distfile: hello-VER/{greeting.txt,hello.conf}, as tar.gz."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"hello-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in (("greeting.txt", f"hello {version}\n"), ("hello.conf", conf)):
            data = text.encode()
            info = tarfile.TarInfo(f"hello-{version}/{name}")
            info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def add_ebuild(overlay_dir: Path, version: str = "1.0", *, template: str = "hello.ebuild",
               dist_url: str = UNUSED_URL) -> Path:
    pkg = overlay_dir / "www-apps" / "hello"
    pkg.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FIXTURE / "metadata.xml", pkg / "metadata.xml")
    ebuild = pkg / f"hello-{version}.ebuild"
    ebuild.write_text((FIXTURE / template).read_text().replace("@DIST_URL@", dist_url))
    return ebuild


class Node:
    """A sandbox node: its root, spec and a runner acting on it."""

    def __init__(self, root: Path, spec: noderoot.NodeRootSpec):
        self.root = root
        self.spec = spec
        self.runner = LocalRunner(host=root.name, env=noderoot.portage_env(root))

    def installed(self, cp: str = "www-apps/hello") -> str | None:
        return portage_tools.installed_version(self.runner, str(self.root), cp)


def make_node(tmp_path: Path, name: str, repos: list[noderoot.RepoSpec],
              **kwargs) -> Node:
    spec = noderoot.NodeRootSpec(root=tmp_path / name, repos=repos,
                                 profile=noderoot.ProfileSpec(repos[0].name), **kwargs)
    noderoot.create_node_root(spec)
    return Node(spec.root, spec)


@pytest.fixture
def local_overlay(tmp_path: Path) -> Path:
    path = tmp_path / "overlay"
    overlay.init_overlay(path, "releaser-staging")
    return path


@pytest.fixture
def node(tmp_path: Path, local_overlay: Path) -> Node:
    """A node using ``local_overlay`` in place, holding hello-1.0 with its Manifest
    and its distfile already in DISTDIR."""
    n = make_node(tmp_path, "node1", [noderoot.RepoSpec("releaser-staging", location=local_overlay)])
    make_tarball(n.spec.distdir)
    portage_tools.manifest(n.runner, add_ebuild(local_overlay))
    return n


class Server:
    """A real HTTP server on 127.0.0.1 serving ``directory``; records request paths."""

    def __init__(self, directory: Path):
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, fmt, *args):
                requests.append(self.path)

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(directory)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_root(tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()
    server = Server(root)
    yield root, server
    server.close()


def real_paths_untouched(node: Node) -> None:
    """Nothing of the fixture package exists outside the node, nor in the venv."""
    for path in ("/var/db/pkg/www-apps", "/usr/share/hello", "/etc/hello",
                 "/var/cache/binpkgs/www-apps", "/var/cache/distfiles/hello-1.0.tar.gz",
                 "/var/tmp/portage/www-apps"):
        assert not os.path.lexists(path), f"{path} written outside the node root"
    for repo in node.spec.repos:
        # Without the right PORTAGE_OVERRIDE_EPREFIX, the metadata cache lands in the venv.
        location = str(repo.location_in(node.root)).lstrip("/")
        assert not (Path(sys.prefix) / "var/cache/edb/dep" / location).exists()
        assert (node.root / noderoot.PORTAGE_PREFIX / "var/cache/edb/dep" / location).is_dir()


def gpkg_image(path: Path) -> dict[str, bytes]:
    """Files in a gpkg's image, by installed path (``/etc/...``)."""
    with tarfile.open(path) as outer:
        member = next(m for m in outer.getmembers() if m.name.endswith("/image.tar.zst"))
        compressed = outer.extractfile(member).read()
    raw = subprocess.run(["zstd", "-dc"], input=compressed, capture_output=True, check=True).stdout
    files = {}
    with tarfile.open(fileobj=io.BytesIO(raw)) as image:
        for m in image.getmembers():
            if m.isfile():
                installed = "/" + m.name.removeprefix("image").lstrip("/")
                files[installed] = image.extractfile(m).read()
    return files


# ------------------------------------------------------------- validation (the seam)


class RecordingRunner:
    """A Runner that records argv and runs nothing."""

    host = "recorder"

    def __init__(self):
        self.calls: list[list[str]] = []

    def run(self, argv, *, check=True, env=None, input=None, timeout=None) -> CommandResult:
        self.calls.append(list(argv))
        return CommandResult(tuple(argv), 0, "", "")

    def put(self, local, remote):  # pragma: no cover - not used
        raise AssertionError

    def get(self, remote, local):  # pragma: no cover - not used
        raise AssertionError


BAD_CPVS = ["foo/bar-1.0;rm -rf /", "foo/bar-1.0 && id", "foo/bar-$(id)", "-foo/bar-1.0",
            "--nodeps", "=foo/bar-1.0", "foo/bar-1.0:0", "foo/bar-1.0::evil", "foo/bar",
            "foo/bar-1.0\n", ""]


@pytest.mark.parametrize("bad", BAD_CPVS)
def test_invalid_cpv_runs_nothing(bad):
    runner = RecordingRunner()
    for call in (lambda: portage_tools.emerge(runner, bad),
                 lambda: portage_tools.emerge(runner, bad, usepkgonly=True),
                 lambda: portage_tools.unmerge(runner, bad),
                 lambda: portage_tools.quickpkg(runner, bad)):
        with pytest.raises(UsageError):
            call()
    assert runner.calls == []


@pytest.mark.parametrize("bad", ["foo/bar;ls", "foo/bar-1.0", "-foo/bar", ">=foo/bar-1", "foo"])
def test_invalid_cp_or_repo_or_path_runs_nothing(bad):
    runner = RecordingRunner()
    with pytest.raises(UsageError):
        portage_tools.installed_version(runner, "/", bad)
    with pytest.raises(UsageError):
        portage_tools.sync(runner, bad + " x")
    with pytest.raises(UsageError):
        portage_tools.manifest(runner, "/overlay/www-apps/hello/" + bad.replace("/", "_") + ";.ebuild")
    with pytest.raises(UsageError):
        portage_tools.installed_version(runner, "relative/root", "www-apps/hello")
    assert runner.calls == []


def test_argv_is_exact():
    runner = RecordingRunner()
    portage_tools.emerge(runner, CPV, usepkgonly=True, getbinpkg=True)
    portage_tools.sync(runner, "releaser-staging")
    portage_tools.unmerge(runner, CPV)
    assert runner.calls == [
        ["emerge", "--ask=n", "--color=n", "--oneshot", "--usepkgonly", "--getbinpkg", "=" + CPV],
        ["emaint", "sync", "-r", "releaser-staging"],
        ["emerge", "--ask=n", "--color=n", "--unmerge", "=" + CPV],
    ]


# ------------------------------------------------------------------------ node roots


def test_node_root_layout_env_and_idempotence(tmp_path):
    root = tmp_path / "n"
    spec = noderoot.NodeRootSpec(
        root=root,
        repos=[noderoot.RepoSpec("releaser-staging", sync_type="git", sync_uri="file:///srv/o.git")],
        profile=noderoot.ProfileSpec("releaser-staging"),
        provided=["dev-lang/python-3.11.2"],
        binhost=noderoot.BinhostSpec("central", "http://127.0.0.1:9/binpkgs"),
        extra_make_conf=['MAKEOPTS="-j2"'],
    )
    noderoot.create_node_root(spec)
    env = noderoot.portage_env(root)
    assert set(env) == {"PORTAGE_OVERRIDE_EPREFIX", "PORTAGE_CONFIGROOT", "ROOT", "EPREFIX", "PATH"}
    assert env["ROOT"] == env["PORTAGE_CONFIGROOT"] == str(root)
    assert env["EPREFIX"] == ""
    assert env["PATH"].split(":")[:2] == [os.path.dirname(sys.executable), str(root / ".releaser/bin")]
    assert os.readlink(root / ".releaser/bin/gtar") == shutil.which("tar")
    assert (root / "etc/portage/make.profile").resolve() == \
        root / "var/db/repos/releaser-staging/profiles/releaser/amd64"
    make_conf = (root / "etc/portage/make.conf").read_text()
    assert '-binpkg-multi-instance' in make_conf and 'BINPKG_FORMAT="gpkg"' in make_conf
    assert 'GENTOO_MIRRORS=""' in make_conf and 'MAKEOPTS="-j2"' in make_conf
    assert 'FETCHCOMMAND="curl ' in make_conf and '\\"\\${DISTDIR}/\\${FILE}\\" \\"\\${URI}\\""' in make_conf
    binrepos = (root / "etc/portage/binrepos.conf").read_text()
    assert f"location = {root}/var/cache/binhost/central" in binrepos

    # Portage reads it as intended: ROOT is the node, EPREFIX empty, our fetch command.
    runner = LocalRunner(env=env)
    for name, want in (("ROOT", f"{root}/"), ("EPREFIX", ""), ("PKGDIR", str(spec.pkgdir)),
                       ("DISTDIR", str(spec.distdir)), ("GENTOO_MIRRORS", ""),
                       ("FETCHCOMMAND", noderoot.FETCHCOMMAND)):
        assert portage_tools.envvar(runner, name) == want, name

    # Running it again keeps state and refreshes configuration.
    state = [root / "var/db/pkg/www-apps/hello-1.0/CONTENTS", spec.pkgdir / "www-apps/hello-1.0.gpkg.tar",
             spec.distdir / "hello-1.0.tar.gz"]
    for f in state:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("keep me")
    spec.extra_make_conf = []
    spec.binhost = None
    noderoot.create_node_root(spec)
    assert all(f.read_text() == "keep me" for f in state)
    assert "MAKEOPTS" not in (root / "etc/portage/make.conf").read_text()
    assert not (root / "etc/portage/binrepos.conf").exists()


def test_node_spec_rejects_bad_input(tmp_path):
    with pytest.raises(UsageError):
        noderoot.RepoSpec("bad name")
    with pytest.raises(UsageError):
        noderoot.RepoSpec("r", sync_type="rsync", sync_uri="rsync://x")
    with pytest.raises(UsageError):
        noderoot.NodeRootSpec(root=tmp_path, repos=[noderoot.RepoSpec("a")],
                              profile=noderoot.ProfileSpec("b"))
    spec = noderoot.NodeRootSpec(root=tmp_path / "n", repos=[noderoot.RepoSpec("a")],
                                 profile=noderoot.ProfileSpec("a"), provided=["dev-lang/python;id"])
    with pytest.raises(UsageError):
        noderoot.create_node_root(spec)


# ------------------------------------------------------------- real Portage commands


def test_emerge_installs_into_the_node_root_only(node):
    result = portage_tools.emerge(node.runner, CPV)
    assert not result.binary and result.result.ok
    assert (node.root / "usr/share/hello/greeting.txt").read_text() == "hello 1.0\n"
    assert (node.root / "etc/hello/hello.conf").read_text() == CONF
    # The vdb records host paths, as on a production host.
    contents = (node.root / "var/db/pkg/www-apps/hello-1.0/CONTENTS").read_text()
    assert "obj /usr/share/hello/greeting.txt " in contents
    assert "obj /etc/hello/hello.conf " in contents
    assert str(node.root) not in contents
    assert node.installed() == "1.0"
    assert portage_tools.installed_version(node.runner, str(node.root), "www-apps/other") is None
    assert (node.root / "var/log/emerge.log").exists()
    real_paths_untouched(node)


def test_quickpkg_unmerge_and_reinstall_from_the_binary_package(node, tmp_path, http_root):
    portage_tools.emerge(node.runner, CPV)
    edited = CONF + "workers = 4  # edited by an operator\n"
    (node.root / "etc/hello/hello.conf").write_text(edited)

    gpkg = portage_tools.quickpkg(node.runner, CPV)
    assert gpkg == PurePosixPath(node.spec.pkgdir) / "www-apps" / "hello-1.0.gpkg.tar"
    assert portage_tools.binpkg_path(node.runner, str(node.root), CPV) == gpkg
    image = gpkg_image(Path(gpkg))
    assert image["/etc/hello/hello.conf"] == edited.encode()  # real contents, not a placeholder
    assert image["/usr/share/hello/greeting.txt"] == b"hello 1.0\n"

    portage_tools.unmerge(node.runner, CPV)
    assert node.installed() is None
    assert not (node.root / "usr/share/hello/greeting.txt").exists()
    # Gentoo keeps a modified config file on unmerge; remove it to prove the
    # binary package brings it back.
    (node.root / "etc/hello/hello.conf").unlink()

    (node.spec.distdir / "hello-1.0.tar.gz").unlink()  # a binary install needs no distfile
    result = portage_tools.emerge(node.runner, CPV, usepkgonly=True)
    assert result.binary
    assert node.installed() == "1.0"
    assert (node.root / "etc/hello/hello.conf").read_text() == edited
    assert (node.root / "usr/share/hello/greeting.txt").read_text() == "hello 1.0\n"

    # The same package from a binhost (HTTP) onto another node.
    www, server = http_root
    (www / "binpkgs").symlink_to(node.spec.pkgdir)
    other = make_node(tmp_path, "node2",
                      [noderoot.RepoSpec("releaser-staging", location=node.spec.repos[0].location)],
                      binhost=noderoot.BinhostSpec("central", f"{server.url}/binpkgs"))
    result = portage_tools.emerge(other.runner, CPV, usepkgonly=True, getbinpkg=True)
    assert result.binary and other.installed() == "1.0"
    assert (other.root / "etc/hello/hello.conf").read_text() == edited
    assert "/binpkgs/www-apps/hello-1.0.gpkg.tar" in server.requests
    assert (other.root / "var/cache/binhost/central/www-apps/hello-1.0.gpkg.tar").exists()
    with pytest.raises(NodeError, match="no binary packages to satisfy"):
        portage_tools.emerge(node.runner, "www-apps/hello-9.9", usepkgonly=True)
    real_paths_untouched(node)


def _next_second() -> None:
    """Return once the wall clock's whole second has changed."""
    import time

    start = int(time.time())
    while int(time.time()) == start:
        time.sleep(0.05)


def test_a_stock_host_keeps_one_package_per_quickpkg_where_portage_names_it(tmp_path,
                                                                             local_overlay):
    stock = make_node(tmp_path, "stock",
                      [noderoot.RepoSpec("releaser-staging", location=local_overlay)],
                      stock_binpkgs=True)
    assert "binpkg-multi-instance" in portage_tools.envvar(stock.runner, "FEATURES").split()
    make_tarball(stock.spec.distdir)
    portage_tools.manifest(stock.runner, add_ebuild(local_overlay))
    portage_tools.emerge(stock.runner, CPV)

    first = portage_tools.quickpkg(stock.runner, CPV)
    # Portage tells instances of one version apart by BUILD_TIME (whole seconds) and
    # size: two packages of it made within one second share one instance key, and
    # emerge then fails their digest check.  A second package in the same second is
    # no case releaser meets (one backup per version per run): make it the next second.
    _next_second()
    second = portage_tools.quickpkg(stock.runner, CPV)
    where = PurePosixPath(stock.spec.pkgdir) / "www-apps" / "hello"
    assert (first, second) == (where / "hello-1.0-1.gpkg.tar", where / "hello-1.0-2.gpkg.tar")
    assert Path(first).is_file() and Path(second).is_file()
    assert bintree.binpkg_paths(stock.runner, CPV) == [first, second]
    assert bintree.binpkg_paths(stock.runner, "www-apps/hello-9.9") == []
    # A new package goes to a free build id, reserved by an empty file.
    reserved = bintree.allocate_binpkg_path(stock.runner, CPV)
    assert reserved == where / "hello-1.0-3.gpkg.tar"
    assert Path(reserved).stat().st_size == 0
    Path(reserved).unlink()

    portage_tools.unmerge(stock.runner, CPV)
    assert portage_tools.emerge(stock.runner, CPV, usepkgonly=True).binary
    assert stock.installed() == "1.0"


def git(*args: str, cwd: Path | None = None) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@localhost"}
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env)


def test_sync_from_a_bare_git_repository_picks_up_new_commits(tmp_path):
    bare = tmp_path / "central" / "staging.git"
    git("init", "-q", "--bare", "-b", "main", str(bare))
    work = tmp_path / "work"
    git("init", "-q", "-b", "main", str(work))
    overlay.init_overlay(work, "releaser-staging")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "skeleton", cwd=work)
    git("push", "-q", str(bare), "main", cwd=work)

    n = make_node(tmp_path, "node1", [noderoot.RepoSpec(
        "releaser-staging", sync_type="git", sync_uri=f"file://{bare}")])
    portage_tools.sync(n.runner, "releaser-staging")
    clone = n.root / "var/db/repos/releaser-staging"
    assert (clone / "profiles/repo_name").read_text().strip() == "releaser-staging"
    assert not (clone / "www-apps/hello").exists()

    make_tarball(n.spec.distdir)
    portage_tools.manifest(n.runner, add_ebuild(work))
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "www-apps/hello: 1.0", cwd=work)
    git("push", "-q", str(bare), "main", cwd=work)

    portage_tools.sync(n.runner, "releaser-staging")
    assert (clone / "www-apps/hello/hello-1.0.ebuild").exists()
    visible = n.runner.run(["portageq", "best_visible", str(n.root), "www-apps/hello"]).stdout
    assert visible.strip() == CPV

    with pytest.raises(UsageError):
        portage_tools.sync(n.runner, "releaser staging")
    with pytest.raises(NodeError, match="not found"):
        portage_tools.sync(n.runner, "releaser-production")


def test_distfile_is_fetched_over_http_and_checked_against_the_manifest(tmp_path, local_overlay,
                                                                      http_root):
    www, server = http_root
    good = make_tarball(tmp_path / "dist")
    (www / "distfiles").mkdir()
    shutil.copyfile(good, www / "distfiles" / good.name)
    n = make_node(tmp_path, "node1", [noderoot.RepoSpec("releaser-staging", location=local_overlay)])
    ebuild = add_ebuild(local_overlay, dist_url=f"{server.url}/distfiles")
    portage_tools.manifest(n.runner, ebuild, distdir=good.parent)
    assert not any(n.spec.distdir.iterdir())

    portage_tools.emerge(n.runner, CPV)
    assert "/distfiles/hello-1.0.tar.gz" in server.requests
    assert (n.spec.distdir / good.name).read_bytes() == good.read_bytes()
    assert n.installed() == "1.0"

    # Same size, other bytes: Portage's digest check must refuse it.
    (n.spec.distdir / good.name).unlink()
    data = bytearray(good.read_bytes())
    data[-1] ^= 0xFF
    (www / "distfiles" / good.name).write_bytes(bytes(data))
    with pytest.raises(NodeError, match="digest verification failed") as excinfo:
        portage_tools.emerge(n.runner, CPV)
    err = excinfo.value
    assert "hello-1.0.tar.gz" in str(err) and "BLAKE2B" in str(err)
    assert err.phase == "fetch"
    assert any(line.startswith("!!! Expected:") for line in err.details)
    assert not (n.spec.distdir / good.name).exists()

    # Not there at all: curl's reason is in the message.
    (www / "distfiles" / good.name).unlink()
    with pytest.raises(NodeError, match=r"could not download hello-1.0.tar.gz .*404"):
        portage_tools.emerge(n.runner, CPV)


def test_failing_ebuild_raises_node_error_with_the_die_message(node, local_overlay):
    add_ebuild(local_overlay, "1.1", template="hello-dies-in-install.ebuild")
    make_tarball(node.spec.distdir, "1.1")
    portage_tools.manifest(node.runner, local_overlay / "www-apps/hello/hello-1.1.ebuild")
    with pytest.raises(NodeError) as excinfo:
        portage_tools.emerge(node.runner, "www-apps/hello-1.1")
    err = excinfo.value
    assert isinstance(err, PortageError)
    message = str(err)
    assert "\n" not in message
    assert "www-apps/hello-1.1::releaser-staging failed (install phase)" in message
    assert "hello refuses to install: the disk is on fire" in message
    assert err.phase == "install"
    assert err.log_path and Path(err.log_path).is_file()
    assert "the disk is on fire" in Path(err.log_path).read_text()
    assert node.installed() is None


def test_postinst_failure_is_installed_although_emerge_fails(node, local_overlay):
    add_ebuild(local_overlay, "1.2", template="hello-dies-in-postinst.ebuild")
    make_tarball(node.spec.distdir, "1.2")
    portage_tools.manifest(node.runner, local_overlay / "www-apps/hello/hello-1.2.ebuild")
    with pytest.raises(NodeError, match=r"failed \(postinst phase\): hello cannot start") as excinfo:
        portage_tools.emerge(node.runner, "www-apps/hello-1.2")
    assert excinfo.value.phase == "postinst"
    assert node.installed() == "1.2"  # trust the vdb, not the exit code


def test_emerge_of_an_unknown_version_says_so(node):
    with pytest.raises(NodeError, match=r'no ebuilds to satisfy "=www-apps/hello-7.0"'):
        portage_tools.emerge(node.runner, "www-apps/hello-7.0")
    with pytest.raises(NodeError, match="Couldn't find|No packages"):
        portage_tools.unmerge(node.runner, "www-apps/hello-7.0")
    with pytest.raises(NodeError):
        portage_tools.quickpkg(node.runner, "www-apps/hello-7.0")
