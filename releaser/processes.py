"""Looking at local processes through /proc: shared by everything that records a pid.

A recorded pid is only trusted while the process is alive (a zombie has
exited) and, for killing, while its command line is still the one recorded:
the kernel reuses pids.
"""

from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (a zombie has already exited)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def process_cmdline(pid: int) -> list[str]:
    """The argv of ``pid`` from /proc, or [] when it is gone or unreadable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
