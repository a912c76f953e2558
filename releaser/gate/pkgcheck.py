"""pkgcheck on the generated ebuild: the release's files in a scratch overlay laid
out from the environment overlays' own skeleton, scanned offline.

pkgcheck comes with releaser's ``gate`` (and ``test``) extra; it needs no
network and no Gentoo repository: the skeleton's profile provides the app's
runtime dependencies (``releaser.central.overlay``).  Only results of error
level fail the gate; warnings are listed in the step's output.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from releaser.gate.steps import StepResult

#: The scratch overlay's repository name (any name works: the skeleton renders it).
OVERLAY_NAME = "releaser-gate"
TIMEOUT = 300.0


def pkgcheck_program() -> str | None:
    """pkgcheck next to the running Python (a virtualenv), else on PATH."""
    beside = Path(sys.executable).parent / "pkgcheck"
    return str(beside) if beside.exists() else shutil.which("pkgcheck")


def pkgcheck_step(release_dir: Path, scratch: Path) -> StepResult:
    started = time.monotonic()
    program = pkgcheck_program()
    if program is None:
        return StepResult("pkgcheck", False, "pkgcheck is not installed: pip install "
                          "'releaser[gate]'", 0.0)
    ebuild = _lay_out(release_dir, scratch)
    env = {**os.environ, "XDG_CACHE_HOME": str(scratch.parent / "pkgcheck-cache")}
    try:
        done = subprocess.run([program, "scan", "--exit", "error", "--reporter", "JsonReporter",
                               "--", str(scratch)], env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return StepResult("pkgcheck", False, f"timed out after {TIMEOUT:g} s",
                          time.monotonic() - started)
    seconds = time.monotonic() - started
    errors = _errors(done.stdout)
    if done.returncode != 0 or errors:
        detail = "; ".join(errors[:3]) or (done.stderr.strip().splitlines() or ["failed"])[-1]
        return StepResult("pkgcheck", False, f"{ebuild}: {detail}", seconds,
                          done.stdout + done.stderr)
    return StepResult("pkgcheck", True, f"{ebuild}: no error", seconds, done.stdout)


def _lay_out(release_dir: Path, dest: Path) -> str:
    """The release's ebuild, metadata.xml and Manifest in a fresh overlay; the ebuild's name."""
    from releaser.build.release import load_release
    from releaser.central import overlay

    release = load_release(release_dir / "release.json")
    overlay.one_release_overlay(dest, OVERLAY_NAME, release, release_dir)
    return release.ebuild["name"]


def _errors(stdout: str) -> list[str]:
    """``Check: message`` of every error-level result in JsonReporter output."""
    found = []
    for line in stdout.splitlines():
        try:
            result = json.loads(line)
        except ValueError:
            continue
        found += list(_walk(result))
    return found


def _walk(node) -> list[str]:
    if not isinstance(node, dict):
        return []
    out = []
    for key, value in node.items():
        if key == "_error" and isinstance(value, dict):
            out += [f"{check}: {'; '.join(map(str, msgs)) if isinstance(msgs, list) else msgs}"
                    for check, msgs in value.items()]
        else:
            out += _walk(value)
    return out
