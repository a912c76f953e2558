"""Helpers for tests that need a sandbox fleet (real Portage, git, HTTP)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from releaser.config import load_config
from releaser.sandbox import ssh as sandbox_ssh
from releaser.sandbox.world import STATE, default_app, down_sandbox, init_sandbox
from releaser.sandbox.sshd import SandboxSSHD

from .conftest import APP_DIR, commit_all, git


def make_source(dest: Path) -> Path:
    """A git repository holding this project's app, tagged v1.0.0."""
    dest.mkdir(parents=True)
    git(dest, "init", "-q", "-b", "main")
    shutil.copytree(APP_DIR, dest / "app",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache"))
    commit_all(dest, "notes 1.0.0")
    git(dest, "tag", "v1.0.0")
    return dest


def add_migration(source: Path, tag: str, number: int = 2) -> None:
    """A new release whose app changes the schema (one more migration)."""
    schema = source / "app" / "notes" / "schema.py"
    text = schema.read_text()
    at = text.rindex("\n]")
    column = f"extra{number}"
    text = (text[:at] + f'\n    ({number}, "additive", """ALTER TABLE notes ADD COLUMN {column} TEXT '
            f"NOT NULL DEFAULT '';\"\"\"),{text[at:]}")
    schema.write_text(text)
    commit_all(source, f"migration {number}", when="2026-02-01T00:00:00+00:00")
    git(source, "tag", tag)


class Sandbox:
    """A sandbox fleet under ``base``; ``ssh=True``: every host behind its own sshd;
    ``stock_binpkgs=True``: nodes keep Portage's default binpkg-multi-instance;
    ``overlays``: overlay repository names by environment (default releaser-ENV);
    ``hosts="lxc"``: every node an LXC container (releaser.sandbox.lxc_world);
    ``trust``: signed overlays nodes verify, the default as for ``sandbox init``
    (False: releaser.toml documents an unsigned-overlay exception)."""

    def __init__(self, base: Path, nodes: dict[str, int], *, ssh: bool = False,
                 stock_binpkgs: bool = False, overlays: dict[str, str] | None = None,
                 trust: bool = True, hosts: str = "dir"):
        self.base = base
        self.ssh = ssh
        self.source = make_source(base / "src")
        app = default_app(self.source)
        self.init_lines: list[str] = []  # what init said, in order
        self.config_path = init_sandbox(base / "sandbox", app, nodes, ssh=ssh,
                                        stock_binpkgs=stock_binpkgs, overlays=overlays,
                                        trust=trust, hosts=hosts,
                                        progress=self.init_lines.append)
        self.config = load_config(self.config_path)

    @property
    def directory(self) -> Path:
        return self.base / "sandbox"

    @property
    def state(self) -> dict:
        """What ``init_sandbox`` recorded in sandbox.json."""
        return json.loads((self.directory / STATE).read_text())

    def sshd(self, name: str) -> SandboxSSHD:
        """The sshd of node ``name`` (or ``"central"``) of an SSH sandbox, to stop/restart."""
        return sandbox_ssh.from_state(self.state["ssh"]["sshd"][name])

    @property
    def central(self) -> Path:
        return self.base / "sandbox" / "central"

    def node_root(self, name: str) -> Path:
        return self.base / "sandbox" / "nodes" / name

    def down(self) -> None:
        down_sandbox(self.base / "sandbox")


def kill_9_when(sb: "Sandbox", args: list[str], marker: str) -> list[str]:
    """Run ``releaser ARGS`` on the sandbox, SIGKILL it on the first output line holding
    ``marker``; return the lines it printed."""
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "releaser", "-c", str(sb.config_path), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if marker in line:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, seen
    return seen


def wait_for_orphaned_emerges(timeout: float = 120.0) -> None:
    """Wait until no emerge is left running from a killed releaser.

    ``kill -9`` stops releaser, not the emerge it started on a node: that one
    finishes by itself.  A re-run started meanwhile races it (the node's
    version changes under the backup step, which then refuses, truthfully);
    an operator would re-run once more, a test waits instead.
    """
    import subprocess
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(["pgrep", "-f", "bin/emerge --ask=n"], capture_output=True).returncode:
            return
        time.sleep(0.2)
    raise AssertionError("an orphaned emerge is still running")


def tree_digests(*roots: Path) -> dict[str, str]:
    """sha256 of every regular file under the roots (symlinks by target)."""
    out = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in filenames:
                p = Path(dirpath) / name
                if p.is_symlink():
                    out[str(p)] = "-> " + os.readlink(p)
                elif p.is_file():
                    out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def tree_state(root: Path) -> dict[str, tuple]:
    """Everything under ``root`` a change could touch: per path its kind, mode, owner, and a
    file's sha256 or a link's target (``tree_digests`` sees file contents only)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            st = p.lstat()
            if p.is_symlink():
                what = "-> " + os.readlink(p)
            elif p.is_file():
                what = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                what = "dir" if p.is_dir() else "other"
            out[str(p.relative_to(root))] = (what, st.st_mode, st.st_uid, st.st_gid)
    return out
