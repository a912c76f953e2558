"""One gate step: a command run to its end (or its timeout), pass or fail with a reason."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from releaser.errors import last_line


@dataclass
class StepResult:
    name: str
    ok: bool
    detail: str
    seconds: float = 0.0
    output: str = ""

    def line(self) -> str:
        return f"{'pass' if self.ok else 'FAIL'}  {self.name}: {self.detail} ({self.seconds:.1f}s)"

    def to_dict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "detail": self.detail,
                "seconds": round(self.seconds, 3)}


def run_command(name: str, argv: list[str], cwd: Path, timeout: float) -> StepResult:
    """Run ``argv`` in ``cwd``; failed when it exits non-zero, times out or cannot start."""
    started = time.monotonic()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        done = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return StepResult(name, False, f"{argv[0]} is not installed (not on PATH)",
                          time.monotonic() - started)
    except subprocess.TimeoutExpired:
        return StepResult(name, False, f"timed out after {timeout:g} s ([gate] timeout)",
                          time.monotonic() - started)
    seconds = time.monotonic() - started
    output = done.stdout + done.stderr
    if done.returncode != 0:
        return StepResult(name, False, f"exited {done.returncode}: "
                          f"{last_line(done.stdout, done.stderr)}", seconds, output)
    return StepResult(name, True, "ok", seconds, output)
