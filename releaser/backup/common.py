"""What the backup modules share: the records, digests, verified copies, indexes.

Public names are re-exported by ``releaser.backup`` (import them from there).
Every file moves the same way, whatever the hosts are (local sandbox or SSH):
the source's digest is known first, the bytes travel through a local
temporary file (``Runner.get`` then ``Runner.put``), land under a temporary
name next to their destination, are digested *there*, and only then renamed
to their final name (``releaser.hosts.transfer.place_file``).  A copy that
arrives different is deleted and reported, never left under a name someone
could later trust.
"""

from __future__ import annotations

import os
import posixpath
import re
import subprocess
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from releaser.central.repository import CentralRepository
from releaser.errors import BackupError, CommandError, CorruptCopy, UsageError, last_line
from releaser.files import file_digest
from releaser.hosts import transfer
from releaser.hosts.runner import Runner

#: Version of the index files' layout (``"format"`` key).
INDEX_FORMAT = 1
#: Path components releaser builds from names (environment, node): no ``/``,
#: no leading ``.`` or ``-``, nothing a shell or option parser could misread.
_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")

#: One lock for every index read-modify-write in this process, so nodes backed
#: up in parallel threads (fleet fan-out) never lose each other's entries.
#: Across processes the environment lock (``releaser.central.lock``) serialises runs.
_INDEX_LOCK = threading.Lock()


@dataclass(frozen=True)
class BinpkgBackup:
    """The rollback package of one version in one environment (an index entry).

    ``node``/``node_path``: the node the central copy was made on and its path
    there (where that node's Portage put it).  ``sha512``/``size`` describe the
    central copy at ``central_path``.  ``made``/``uploaded`` say what *this*
    call did (ran quickpkg, copied to central); they are not stored.
    """

    cpv: str
    node: str
    node_path: str
    central_path: str
    size: int
    sha512: str
    created: str
    made: bool = field(default=False, compare=False)
    uploaded: bool = field(default=False, compare=False)

    @property
    def version(self) -> str:
        from portage.versions import cpv_getversion

        return cpv_getversion(self.cpv)

    def to_index(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("made", "uploaded")}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_index(cls, entry: dict, **flags: bool) -> "BinpkgBackup":
        stored = {f.name for f in fields(cls)} - {"made", "uploaded"}
        return cls(**{k: entry[k] for k in stored}, **flags)


@dataclass(frozen=True)
class DumpBackup:
    """A verified dump of one node's database (an index entry).

    ``version``: the app version running when it was dumped (the version to
    roll back to with it).  ``node_path`` as the node's runner sees it (the
    node root prefixed in the sandbox).  ``sha256``, ``schema_version``,
    ``notes`` and ``writes`` (the write high-water marks, None if the app
    gave none: ``releaser.appcontract``) are what the app's ``verify-dump``
    reported; ``app`` is the app whose commands made it (and can verify and
    restore it).  ``backend`` and ``tables`` (rows per table of the scratch
    restore) too; ``database``: a server database's URL (a server dump is
    verified by a restore on that server), "" for a SQLite file.
    """

    node: str
    version: str
    node_path: str
    central_path: str
    size: int
    sha256: str
    schema_version: int
    notes: int
    created: str
    app: str = ""
    writes: dict[str, int] | None = None
    backend: str = "sqlite"
    tables: dict[str, int] | None = None
    database: str = ""

    @property
    def name(self) -> str:
        return posixpath.basename(self.central_path)

    def to_index(self) -> dict:
        return asdict(self)

    to_dict = to_index

    @classmethod
    def from_index(cls, entry: dict) -> "DumpBackup":
        return cls(**{f.name: entry[f.name] for f in fields(cls) if f.name in entry})


# ---------------------------------------------------------------------- small helpers


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    """ISO 8601 UTC with microseconds, so entries made within a second still sort."""
    return moment.isoformat(timespec="microseconds")


def check_component(value: str, what: str) -> str:
    """``value`` if it is safe as one path component on a host, else UsageError."""
    if not isinstance(value, str) or not _COMPONENT.fullmatch(value) or ".." in value:
        raise UsageError(f"invalid {what} name for a backup path: {value!r}")
    return value


def on_node(root: str, path: str) -> str:
    """Host path of ``path`` (absolute, as on a host) under a node's ROOT.

    ``/`` on a real host gives ``path`` itself; a sandbox root prefixes it.
    """
    if not path.startswith("/") or "\0" in path or "\n" in path or ".." in path.split("/"):
        raise UsageError(f"not an absolute path without '..': {path!r}")
    return posixpath.normpath(posixpath.join(root, path.lstrip("/")))


def is_url(database: str) -> bool:
    """True for a server database's URL, False for a SQLite file's path."""
    return "://" in database


def database_password(database) -> str | None:
    """The password of a server database (a ``DatabaseConfig``) from releaser's own
    environment (its ``password_env``); None for SQLite or when unset."""
    if not database.is_server or not database.password_env:
        return None
    return os.environ.get(database.password_env) or None


def reason(exc: BaseException) -> str:
    """The one line worth showing of a failed command or copy."""
    if isinstance(exc, CommandError):
        return last_line(exc.stderr, exc.stdout, default=f"exit status {exc.returncode}")
    if isinstance(exc, subprocess.TimeoutExpired):
        return f"timed out after {exc.timeout:g}s"
    if isinstance(exc, OSError):
        return f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")
    return str(exc)


#: Failures of a command or a copy that become a BackupError.
COPY_FAILURES = (CommandError, OSError, subprocess.TimeoutExpired)


# ---------------------------------------------------------------------------- digests


def host_digest(runner: Runner, path: str, algo: str) -> str | None:
    """``algo`` (sha256/sha512) of a file on a host, or None if absent; a file that is
    there but cannot be read is a BackupError (nothing can vouch for it)."""
    try:
        return transfer.host_digest(runner, path, algo)
    except CommandError as exc:
        raise BackupError(f"{runner.host}: cannot read {path}: {reason(exc)}") from exc


# ------------------------------------------------------------------- verified copies


@contextmanager
def local_scratch() -> Iterator[Path]:
    """A private (0700) local directory for bytes in transit."""
    with tempfile.TemporaryDirectory(prefix="releaser-backup-") as tmp:
        yield Path(tmp)


def pull(runner: Runner, path: str, local: Path, algo: str, expected: str) -> None:
    """Copy ``path`` from a host to ``local`` and prove it arrived as ``expected``."""
    try:
        runner.get(path, local)
    except COPY_FAILURES as exc:
        raise BackupError(f"{runner.host}: cannot copy {path}: {reason(exc)}") from exc
    got = file_digest(local, algo)
    if got != expected:
        raise BackupError(f"{runner.host}: {path} does not match its recorded {algo} "
                          f"(expected {expected[:16]}..., got {got[:16]}...)")


def push(runner: Runner, local: Path, path: str, algo: str, expected: str,
         mode: str = "0600") -> bool:
    """Place ``local`` at ``path`` on a host, checked where it lands.

    Returns False when ``path`` already holds exactly these bytes (nothing is
    copied).  Otherwise the bytes go to a temporary name in the same
    directory, are digested there, made ``mode`` (backups hold configuration
    and user data: private by default), and renamed into place.
    """
    if host_digest(runner, path, algo) == expected:
        return False
    try:
        transfer.place_file(runner, local, path, digest=(algo, expected), mode=mode)
    except CorruptCopy as exc:
        raise BackupError(f"{runner.host}: copy of {posixpath.basename(path)} arrived "
                          f"corrupted ({exc.detail}); nothing was stored") from None
    except COPY_FAILURES as exc:
        raise BackupError(f"{runner.host}: cannot store {path}: {reason(exc)}") from exc
    return True


# ---------------------------------------------------------------------------- indexes


def read_index(central: CentralRepository, path: str, key: str, empty) -> dict:
    """An index file, or an empty one; a damaged index is an error, never "no backups"."""
    try:
        data = central.read_json(path, None)
    except ValueError as exc:
        raise BackupError(f"central repository: {path} is not valid JSON ({exc}); "
                          "repair or remove it") from exc
    if data is None:
        return {"format": INDEX_FORMAT, key: empty}
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT or key not in data:
        raise BackupError(f"central repository: {path} is not a releaser backup index "
                          f"(format {INDEX_FORMAT} with {key!r})")
    return data


def update_index(central: CentralRepository, path: str, key: str, empty,
                 change: Callable[[dict], object]):
    """Read ``path``, apply ``change`` to it, write it back atomically; return what change did."""
    with _INDEX_LOCK:
        data = read_index(central, path, key, empty)
        result = change(data)
        central.write_json(path, data)
        return result
