"""Files on a host, through its Runner: digests where they lie, copies that land whole.

A file is placed on a host one way, whatever it is (a distfile, a release
record, a ledger, a backup) and whatever the host is (local, SSH): its bytes
go to a hidden temporary name in the destination's folder (``temp_name``),
are synced to disk, digested *where they landed* when a digest is expected,
given their mode, and only then renamed to the final name.  A copy that
lands different is removed and reported (``CorruptCopy``), never left under
a name someone could later trust.  Digests on a host come from coreutils
(``sha256sum``, ``sha512sum``, ``b2sum``), which every host has.

Why one command: every round trip to an SSH host costs milliseconds, and a
release writes dozens of small files (the ledger's state at each node's
phase, indexes, records).  So everything after the bytes arrive (sync,
digest check, chmod, rename, and the removal of a bad copy) is one ``sh``
run of the constant ``PLACE_SCRIPT``, the paths and values passed as its
arguments (never interpolated).  A small text (``place_text``) travels on
that command's stdin, written by ``dd conv=fsync`` and checked against its
SHA-256, so a text is placed in one round trip; a file (``place_file``) is
copied first by the runner's ``put`` (which makes the folder).
"""

from __future__ import annotations

import hashlib
import posixpath
import uuid
from pathlib import Path
from typing import Sequence

from releaser.errors import CommandError, CorruptCopy, ReleaserError, UsageError
from releaser.hosts.runner import Runner

#: coreutils program of each digest algorithm.
_SUM = {"sha256": "sha256sum", "sha512": "sha512sum", "blake2b": "b2sum"}

#: Exit statuses of ``PLACE_SCRIPT`` that say how far it got.
FIRST_FAILED = 81  # the command run first failed: nothing else was done
NOT_PLACED = 82    # the copy could not be written, synced or renamed: the path is untouched
CORRUPT = 83       # the copy landed with another digest (printed): removed, path untouched

#: POSIX sh, run as ``sh -c PLACE_SCRIPT releaser-place DIR TMP FINAL MODE SUM EXPECTED
#: SOURCE [FIRST...]``.  SOURCE ``stdin``: make DIR, write stdin to TMP with
#: ``dd conv=fsync``; else TMP is already there (``put``) and is synced.  SUM
#: (a coreutils digest program, or empty) must give EXPECTED; MODE (or empty)
#: is chmod'ed; TMP is then renamed to FINAL.  Any failure removes TMP.  FIRST,
#: when given, is a command run before all that on the same stdin, which must
#: read exactly its own bytes of it (a ledger event's append, ``dd count=1``).
PLACE_SCRIPT = f"""\
dir=$1 tmp=$2 final=$3 mode=$4 sum=$5 expected=$6 source=$7
shift 7
if [ "$#" -gt 0 ]; then "$@" || exit {FIRST_FAILED}; fi
fail() {{ rm -f -- "$tmp"; exit "$1"; }}
if [ "$source" = stdin ]; then
  if [ -n "$dir" ]; then mkdir -p -- "$dir" || exit {NOT_PLACED}; fi
  dd of="$tmp" conv=fsync status=none || fail {NOT_PLACED}
else
  sync -- "$tmp" || fail {NOT_PLACED}
fi
if [ -n "$sum" ]; then
  landed=$("$sum" < "$tmp") || fail {NOT_PLACED}
  landed=${{landed%% *}}
  if [ "$landed" != "$expected" ]; then printf '%s\\n' "$landed"; fail {CORRUPT}; fi
fi
if [ -n "$mode" ]; then chmod "$mode" -- "$tmp" || fail {NOT_PLACED}; fi
mv -f -- "$tmp" "$final" || fail {NOT_PLACED}
"""

#: A command run first on the shared stdin (``place_text``'s ``first``) and its input.
Step = tuple[Sequence[str], str]


def temp_name(path: str) -> str:
    """A temporary name beside ``path``, unique per process and thread (hidden, ``.partial``)."""
    return posixpath.join(posixpath.dirname(path),
                          f".{posixpath.basename(path)}.partial-{uuid.uuid4().hex[:12]}")


#: Exit status of ``DIGEST_SCRIPT`` for a file that is not there.
ABSENT = 84
#: POSIX sh, run as ``sh -c DIGEST_SCRIPT releaser-digest SUM PATH``: the digest of
#: PATH, or exit ``ABSENT`` when there is none (one command, where "no such file"
#: must not be told from a failing read by a message that depends on the locale).
DIGEST_SCRIPT = f"""\
[ -e "$2" ] || exit {ABSENT}
exec "$1" -- "$2"
"""


def host_digest(runner: Runner, path: str, algo: str) -> str | None:
    """The ``algo`` (sha256, sha512, blake2b) digest of a file on the host; None if absent.

    CommandError when the file exists but cannot be read.
    """
    result = runner.run(["sh", "-c", DIGEST_SCRIPT, "releaser-digest", _sum(algo), path],
                        check=False)
    if result.ok:
        return result.stdout.split()[0]
    if result.returncode == ABSENT:
        return None
    raise CommandError([_sum(algo), "--", path], result.returncode, result.stdout,
                       result.stderr, runner.host)


def _sum(algo: str) -> str:
    if algo not in _SUM:
        raise UsageError(f"no digest program for {algo!r} (known: {', '.join(_SUM)})")
    return _SUM[algo]


def host_size(runner: Runner, path: str) -> int:
    """The size in bytes of a file on the host."""
    return int(runner.run(["stat", "-c", "%s", "--", path]).stdout.strip())


def place_file(runner: Runner, local: Path, path: str, *,
               digest: tuple[str, str] | None = None, mode: str | None = None) -> None:
    """Copy ``local`` to ``path`` on the host, so that ``path`` is whole or untouched.

    ``digest``: ``(algo, hex)`` the copy must have where it landed, else
    CorruptCopy and nothing is placed.  ``mode``: ``chmod`` mode of the file
    (``0600`` for backups).  Copy failures are the runner's (CommandError,
    OSError).  Two round trips: the ``put`` (which makes the folder), then
    ``PLACE_SCRIPT``.
    """
    tmp = temp_name(path)
    try:
        runner.put(local, tmp)
    except BaseException:
        _remove_quietly(runner, tmp)
        raise
    _finish(runner, tmp, path, digest=digest, mode=mode, source="put")


def place_text(runner: Runner, text: str, path: str, *, mode: str | None = None,
               first: Step | None = None) -> None:
    """Write ``text`` (as UTF-8) to ``path`` on the host, whole or untouched, in one command.

    The text goes on the command's stdin and is checked where it landed
    against its SHA-256 (a stdin cut short by a lost connection is never
    renamed into place).  ``first``: ``(argv, input)``, a command run before
    the write on the same stdin, reading exactly ``input`` (all ASCII) from
    it; if it fails nothing is written (CommandError with ``FIRST_FAILED``).
    """
    first_argv, first_input = first if first is not None else ((), "")
    if not first_input.isascii():
        raise ValueError("the first command's input must be ASCII (its byte count is fixed)")
    expected = hashlib.sha256(text.encode("utf-8")).hexdigest()
    _finish(runner, temp_name(path), path, digest=("sha256", expected), mode=mode,
            source="stdin", first=first_argv, input=first_input + text)


def _finish(runner: Runner, tmp: str, path: str, *, digest: tuple[str, str] | None,
            mode: str | None, source: str, first: Sequence[str] = (),
            input: str | None = None) -> None:
    """Run ``PLACE_SCRIPT``: ``tmp`` (on the host, or on stdin) becomes ``path`` or is removed."""
    algo, expected = digest if digest is not None else ("", "")
    argv = ["sh", "-c", PLACE_SCRIPT, "releaser-place", posixpath.dirname(path), tmp, path,
            mode or "", _sum(algo) if algo else "", expected, source, *first]
    try:
        result = runner.run(argv, check=False, input=input)
    except BaseException:
        _remove_quietly(runner, tmp)  # the command's outcome is unknown: no temporary left
        raise
    if result.returncode == CORRUPT:
        raise CorruptCopy(runner.host, path, algo, expected, result.stdout.strip() or None)
    if not result.ok:  # named for messages: the script itself says nothing to an operator
        raise CommandError(["place", path], result.returncode, result.stdout, result.stderr,
                           runner.host)


def _remove_quietly(runner: Runner, tmp: str) -> None:
    """Best effort: the host may be the thing that failed."""
    try:
        runner.run(["rm", "-f", "--", tmp], check=False)
    except (ReleaserError, OSError):
        pass


__all__ = ["ABSENT", "CORRUPT", "DIGEST_SCRIPT", "FIRST_FAILED", "NOT_PLACED", "PLACE_SCRIPT",
           "Step", "host_digest", "host_size", "place_file", "place_text", "temp_name"]
