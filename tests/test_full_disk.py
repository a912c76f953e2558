"""A full disk is one error line and exit 1, and the build leaves no temporary behind."""

import subprocess
import sys

import pytest

from releaser.build.builder import build_release
from releaser.config import load_config

from .conftest import write_config

PAGE = 4096


def test_a_full_disk_is_one_error_line_and_leaves_no_temporaries(tmp_path, app_repo):
    """``releaser build`` into a tmpfs (in a mount namespace of its own) with room for the
    tarball alone: it runs out of space writing the release's package files."""
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("mount namespaces are not available here")
    config = write_config(tmp_path / "releaser.toml", app_repo)
    tarball = build_release(load_config(config), out=tmp_path / "probe").tarball
    size = -(-tarball.stat().st_size // PAGE) * PAGE
    out = tmp_path / "out"
    out.mkdir()
    script = (f'mount -t tmpfs -o size={size} tmpfs "$1" && shift && "$@"; code=$?; '
              'find "$OUT" -mindepth 1 -printf "%P\\n"; exit $code')
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", str(out), sys.executable, "-m", "releaser",
         "-c", str(config), "build", "--out", str(out)],
        capture_output=True, text=True, env={"OUT": str(out), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("releaser: error: ") and done.stderr.count("\n") == 1
    assert done.stderr.endswith("No space left on device\n"), done.stderr
    # the tarball was written; the release folder that ran out of space is gone
    assert sorted(done.stdout.split()) == ["distfiles", f"distfiles/{tarball.name}"]
