"""Artifacts the sandbox builds once and keeps: the LXC hosts' image, the dev boxes' box.

Both take minutes to build and are the same for every sandbox made from the
same inputs, so each is kept in a cache folder outside any sandbox
(``cache_dir``) under a name that carries a digest of everything that goes
into it (``digest``): a change of input is a new name, never a stale file.
``ensure`` builds a missing one into a ``.partial`` file renamed when
complete (a build killed half way leaves no file that looks finished), then
removes that artifact's older versions, which nothing will use again.

Also the two commands both builds run on this machine: ``run`` (a clean
environment, a SandboxError with the command's last line) and ``unpack``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Mapping

from releaser.errors import SandboxError, last_line

#: What the commands of a build see: no caller's locale, proxies or Python settings.
BUILD_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}


def cache_dir() -> Path:
    """Where built artifacts are kept: ``$RELEASER_LXC_CACHE``, else
    ``/var/cache/releaser-sandbox`` as root, else ``$XDG_CACHE_HOME/releaser-sandbox``."""
    if os.environ.get("RELEASER_LXC_CACHE"):
        return Path(os.environ["RELEASER_LXC_CACHE"])
    if os.geteuid() == 0:
        return Path("/var/cache/releaser-sandbox")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "releaser-sandbox"


def digest(inputs: Mapping[str, object]) -> str:
    """A short digest of an artifact's inputs (JSON values), the key in its file name."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def ensure(folder: Path, name: str, key: str, suffix: str,
           build: Callable[[Path, Path], None], progress=lambda _m: None, *,
           label: str | None = None) -> Path:
    """``folder/NAME-KEY SUFFIX``, built first if missing; the others of ``name`` removed.

    ``build(work, partial)`` writes the artifact to ``partial``, using the
    scratch folder ``work`` (removed afterwards, as is ``partial`` on failure);
    ``label`` names the artifact in progress lines (default ``name``).
    """
    label = label or name
    path = folder / f"{name}-{key}{suffix}"
    if path.is_file():
        progress(f"{label}: cached {path}")
        return path
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    partial = path.with_name(path.name + ".partial")
    try:
        with tempfile.TemporaryDirectory(prefix=f"{name}-build-", dir=folder) as work:
            build(Path(work), partial)
        partial.rename(path)
    finally:
        partial.unlink(missing_ok=True)
    for old in folder.glob(f"{name}-*{suffix}"):  # other inputs: never used again
        if old != path:
            old.unlink(missing_ok=True)
    progress(f"{label}: built {path} in {time.monotonic() - started:.0f} s")
    return path


def run(argv: list[str], what: str, *, timeout: float = 600) -> str:
    """Run a command of a build on this machine (``BUILD_ENV``); its stdout, or a
    SandboxError naming ``what`` with the command's last line."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env=BUILD_ENV)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxError(f"{what}: {exc}") from None
    if done.returncode != 0:
        raise SandboxError(f"{what} exited {done.returncode}: "
                           f"{last_line(done.stderr, done.stdout)}")
    return done.stdout


def unpack(tarball: Path, dest: Path) -> None:
    """A tarball of a root filesystem into the new folder ``dest`` (owners kept by number)."""
    dest.mkdir(parents=True, exist_ok=False)
    run(["tar", "--numeric-owner", "-C", str(dest), "-xf", str(tarball)], "tar")
