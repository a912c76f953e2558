"""The sandbox's stand-in for OpenRC's ``rc-update``.

The rollout adds the app's service to the ``default`` runlevel the first time
it installs it (``releaser.hosts.services.OpenRC.enable``), so a host that
reboots starts the app again.  A sandbox node is a directory with no OpenRC
to boot, but the question and the record must be the same as on a host: the
stand-in keeps the runlevel where OpenRC keeps it, a symlink
``NODE/etc/runlevels/RUNLEVEL/NAME -> /etc/init.d/NAME`` (the target is the
host's path, as ``rc-update`` writes it), and answers in OpenRC's words and
exit statuses:

* ``rc-update add NAME [RUNLEVEL]``: the service must be one of the node's
  (``services.json``, the stand-in's ``/etc/init.d``); already there:
  "already installed ... skipping", exit 0.
* ``rc-update del NAME [RUNLEVEL]``: exit 1 if it is not there.
* ``rc-update show [RUNLEVEL]``: ``NAME | RUNLEVEL...`` per service.

``install_rc_service`` (``releaser.sandbox.rc``) installs it beside
``rc-service`` in ``NODE/.releaser/bin``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from releaser.errors import UsageError
from releaser.hosts.services import DEFAULT_RUNLEVEL, check_service_name

#: Inside a node root: OpenRC's runlevels, one folder each, one symlink per service.
RUNLEVELS = Path("etc/runlevels")

SCRIPT = """#!{python}
# rc-update stand-in of a releaser sandbox node (releaser.sandbox.rc_update); do not edit.
import sys

from releaser.sandbox.rc_update import main

sys.exit(main(script=__file__))
"""


def runlevels(root: Path) -> dict[str, list[str]]:
    """Each service of the node root's runlevels, with the runlevels it is in (sorted)."""
    found: dict[str, list[str]] = {}
    base = root / RUNLEVELS
    for level in sorted(base.iterdir()) if base.is_dir() else []:
        for entry in sorted(level.iterdir()) if level.is_dir() else []:
            found.setdefault(entry.name, []).append(level.name)
    return found


def add(root: Path, service: str, runlevel: str, known: Sequence[str]) -> tuple[int, str]:
    """``rc-update add``: (exit status, what it says)."""
    if service not in known:
        return 1, f" * rc-update: service `{service}' does not exist"
    link = root / RUNLEVELS / runlevel / service
    if link.is_symlink():
        return 0, f" * rc-update: {service} already installed in runlevel `{runlevel}'; skipping"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(f"/etc/init.d/{service}")
    return 0, f" * service {service} added to runlevel {runlevel}"


def delete(root: Path, service: str, runlevel: str) -> tuple[int, str]:
    """``rc-update del``: (exit status, what it says)."""
    link = root / RUNLEVELS / runlevel / service
    if not link.is_symlink():
        return 1, f" * rc-update: service `{service}' is not in the runlevel `{runlevel}'"
    link.unlink()
    return 0, f" * service {service} removed from runlevel {runlevel}"


def show(root: Path, runlevel: str | None) -> tuple[int, str]:
    """``rc-update show [RUNLEVEL]``: one ``NAME | RUNLEVEL...`` line per service."""
    lines = [f"{name:>20} | {' '.join(levels)}" for name, levels in runlevels(root).items()
             if runlevel is None or runlevel in levels]
    return 0, "\n".join(lines)


def main(argv: Sequence[str] | None = None, *, script: str | None = None) -> int:
    """The ``rc-update`` command: ``add|del SERVICE [RUNLEVEL]``, ``show [RUNLEVEL]``."""
    from releaser.sandbox.rc import find_node_root, load_services

    parser = argparse.ArgumentParser(prog="rc-update",
                                     description="releaser sandbox stand-in for OpenRC's rc-update")
    parser.add_argument("action", choices=("add", "del", "delete", "show"))
    parser.add_argument("names", nargs="*", metavar="SERVICE|RUNLEVEL")
    args = parser.parse_args(argv)
    try:
        root = find_node_root(script=script)
        names = [check_service_name(n) for n in args.names]
        if args.action == "show":
            if len(names) > 1:
                raise UsageError("show takes at most one runlevel")
            code, said = show(root, names[0] if names else None)
        elif len(names) not in (1, 2):
            raise UsageError(f"{args.action} takes a service and an optional runlevel")
        elif args.action == "add":
            code, said = add(root, names[0], (names[1:] or [DEFAULT_RUNLEVEL])[0],
                             list(load_services(root)))
        else:
            code, said = delete(root, names[0], (names[1:] or [DEFAULT_RUNLEVEL])[0])
    except UsageError as exc:
        print(f" * rc-update: {exc}", file=sys.stderr)
        return 1
    if said:
        print(said, file=sys.stdout if code == 0 else sys.stderr, flush=True)
    return code


__all__ = ["RUNLEVELS", "SCRIPT", "add", "delete", "main", "runlevels", "show"]

if __name__ == "__main__":
    sys.exit(main())
