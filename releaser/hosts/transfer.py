"""Files on a host, through its Runner: digests where they lie, copies that land whole.

A file is placed on a host one way, whatever it is (a distfile, a release
record, a ledger, a backup) and whatever the host is (local, SSH): its bytes
go to a hidden temporary name in the destination's folder (``temp_name``),
are synced to disk, digested *where they landed* when a digest is expected,
given their mode, and only then renamed to the final name (``place_file``).
A copy that lands different is removed and reported (``CorruptCopy``), never
left under a name someone could later trust.  Digests on a host come from
coreutils (``sha256sum``, ``sha512sum``, ``b2sum``), which every host has.
"""

from __future__ import annotations

import posixpath
import uuid
from pathlib import Path

from releaser.errors import CommandError, CorruptCopy, UsageError
from releaser.hosts.runner import Runner

#: coreutils program of each digest algorithm.
_SUM = {"sha256": "sha256sum", "sha512": "sha512sum", "blake2b": "b2sum"}


def temp_name(path: str) -> str:
    """A temporary name beside ``path``, unique per process and thread (hidden, ``.partial``)."""
    return posixpath.join(posixpath.dirname(path),
                          f".{posixpath.basename(path)}.partial-{uuid.uuid4().hex[:12]}")


def host_digest(runner: Runner, path: str, algo: str) -> str | None:
    """The ``algo`` (sha256, sha512, blake2b) digest of a file on the host; None if absent.

    CommandError when the file exists but cannot be read.
    """
    if algo not in _SUM:
        raise UsageError(f"no digest program for {algo!r} (known: {', '.join(_SUM)})")
    result = runner.run([_SUM[algo], "--", path], check=False)
    if result.ok:
        return result.stdout.split()[0]
    if runner.run(["test", "-e", path], check=False).ok:
        raise CommandError(result.argv, result.returncode, result.stdout, result.stderr,
                           runner.host)
    return None


def host_size(runner: Runner, path: str) -> int:
    """The size in bytes of a file on the host."""
    return int(runner.run(["stat", "-c", "%s", "--", path]).stdout.strip())


def place_file(runner: Runner, local: Path, path: str, *,
               digest: tuple[str, str] | None = None, mode: str | None = None) -> None:
    """Copy ``local`` to ``path`` on the host, so that ``path`` is whole or untouched.

    ``digest``: ``(algo, hex)`` the copy must have where it landed, else
    CorruptCopy and nothing is placed.  ``mode``: ``chmod`` mode of the file
    (``0600`` for backups).  Copy failures are the runner's (CommandError,
    OSError).
    """
    tmp = temp_name(path)
    runner.run(["mkdir", "-p", "--", posixpath.dirname(path)])
    try:
        runner.put(local, tmp)
        runner.run(["sync", "--", tmp])
        if digest is not None:
            algo, expected = digest
            landed = host_digest(runner, tmp, algo)
            if landed != expected:
                raise CorruptCopy(runner.host, path, algo, expected, landed)
        if mode is not None:
            runner.run(["chmod", mode, "--", tmp])
        runner.run(["mv", "-f", "--", tmp, path])
    except BaseException:
        runner.run(["rm", "-f", "--", tmp], check=False)
        raise


__all__ = ["host_digest", "host_size", "place_file", "temp_name"]
