"""The central repository host: distfiles, environment overlays, binary packages,
release records, the ledger and the locks.

Layout under ``[central] path``::

    distfiles/PN-PV.tar.gz          served over HTTP at ``distfiles_url``
    overlays/ENV.git                one bare git overlay per environment
    binpkgs/ENV/CAT/PF.gpkg.tar     binary packages kept for rollback (+ index.json)
    dumps/ENV/NODE/...              verified database dumps
    releases/PN-PV.json             records of published releases
    ledger/ENV.json                 each environment's state (releases, nodes, current)
    ledger/ENV.jsonl                its audit log: every event, appended (releaser history)
    locks/ENV.lock                  held while a run changes ENV (its owner record)

Every operation is an argv run through a ``Runner`` (local here, SSH for a
remote central host), so the sandbox and production take the same path.
Files appear under their final name only by ``mv`` from a temporary name in the
same directory, after their digests were checked where they landed
(``releaser.hosts.transfer``).
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from releaser.errors import CentralMissing, CommandError, CorruptCopy, PublishError, UsageError
from releaser.files import Digests
from releaser.hosts.runner import LocalRunner, Runner
from releaser.hosts.transfer import Step, host_digest, host_size, place_file, place_text

if TYPE_CHECKING:
    from releaser.config import Config

#: Written by ``CentralRepository.init``: what makes a directory a central repository.
MARKER = "central.json"
FORMAT_VERSION = 1

DIRS = ("distfiles", "overlays", "binpkgs", "dumps", "releases", "ledger", "locks")

#: Folders where a killed run can leave ``.NAME.partial-*`` temporaries behind.
TEMPORARY_DIRS = ("distfiles", "releases", "ledger")
#: A temporary older than this is a killed run's: no live upload or write keeps
#: one that long between writing it and renaming it to its final name.
STALE_TEMPORARY_MINUTES = 60


def _central_runner(config: "Config") -> Runner:
    """A local runner, or an SSH runner with the configured pinned trust (the run's
    shared one within ``releaser.hosts.ssh_pool.shared_connections``)."""
    if config.central.address is None:
        return LocalRunner(host="central")
    # Imported here: paramiko/fabric are only needed when there is an SSH host.
    from releaser.hosts.ssh import HostSpec
    from releaser.hosts.ssh_pool import runner_for

    return runner_for(HostSpec.configured(config.ssh, address=config.central.address,
                                          port=config.central.port, name="central",
                                          where=str(config.path)))


@dataclass
class CentralRepository:
    runner: Runner
    root: str
    #: ``[trust]`` of the configuration (a ``TrustConfig``): overlay commits are signed
    #: with the environment's release key (releaser.central.overlay_git); None: unsigned.
    trust: object | None = None

    @classmethod
    def from_config(cls, config: "Config", *, must_exist: bool = True) -> "CentralRepository":
        """The central repository ``config`` names, reached locally or over SSH.

        ``must_exist``: refuse (CentralMissing, exit 2) a path that holds no
        central repository before anything changes, so a mistyped path never
        becomes a new, empty central; only ``releaser central init`` passes False.
        """
        if config.central is None:
            raise UsageError(f"{config.path}: no [central] repository configured")
        central = cls(_central_runner(config), str(config.central.path),
                      trust=getattr(config, "trust", None))
        if must_exist:
            central.ensure_exists(str(config.path))
        return central

    # --- paths -------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def overlay_repo(self, env: str) -> str:
        return self.path("overlays", f"{env}.git")

    def distfile(self, name: str) -> str:
        return self.path("distfiles", name)

    # --- small file operations ---------------------------------------------
    def exists(self, path: str) -> bool:
        return self.runner.run(["test", "-e", path], check=False).ok

    def read_text(self, path: str) -> str | None:
        result = self.runner.run(["cat", "--", path], check=False)
        if not result.ok:
            if self.exists(path):
                raise CommandError(["cat", path], result.returncode, "", result.stderr,
                                   self.runner.host)
            return None
        return result.stdout

    def write_text(self, path: str, text: str, *, first: Step | None = None) -> None:
        """Write ``text`` to ``path`` atomically (temporary name, fsync, rename), in one
        command; ``first``: a command run before it (``transfer.place_text``)."""
        place_text(self.runner, text, path, first=first)

    def put_file(self, local: Path, path: str) -> None:
        place_file(self.runner, local, path)

    def read_json(self, path: str, default=None):
        text = self.read_text(path)
        return default if text is None else json.loads(text)

    def write_json(self, path: str, data, *, first: Step | None = None) -> None:
        self.write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n", first=first)

    def listdir(self, path: str) -> list[str]:
        result = self.runner.run(["ls", "-1", "--", path], check=False)
        return sorted(result.stdout.split()) if result.ok else []

    # --- set-up ------------------------------------------------------------
    def init_dirs(self) -> None:
        self.runner.run(["mkdir", "-p", "--", *(self.path(d) for d in DIRS)])

    def init(self) -> bool:
        """Create the central repository: its folders, then its marker.  True if created.

        The only way a central repository comes to be (``releaser central
        init``, the sandbox): every other command refuses a path without the
        marker, so a mistyped ``[central] path`` never becomes a new, empty
        central that releases are published to.  Running it again changes nothing.
        """
        if self._marker() is not None:
            return False
        self.init_dirs()
        self.write_json(self.path(MARKER), {"format": FORMAT_VERSION})
        return True

    def ensure_exists(self, where: str = "") -> None:
        """Raise CentralMissing unless ``root`` holds a central repository (its marker).

        ``where`` names the configuration the path came from, for the hint.
        """
        if self._marker() is None:
            raise CentralMissing(
                f"{self.runner.host}: {self.root} is no central repository (no {MARKER}); "
                f"check [central] path{f' in {where}' if where else ''}, or create it "
                "with `releaser central init`")

    def _marker(self) -> dict | None:
        try:
            marker = self.read_json(self.path(MARKER))
        except ValueError:
            marker = "unreadable"
        if marker is None:
            return None
        if not isinstance(marker, dict) or marker.get("format") != FORMAT_VERSION:
            raise CentralMissing(f"{self.runner.host}: {self.path(MARKER)} is not a central "
                                 f"repository marker of format {FORMAT_VERSION} ({marker!r})")
        return marker

    # --- distfiles -----------------------------------------------------------
    def remote_digests(self, path: str) -> Digests | None:
        """Size, BLAKE2B and SHA512 of a file on the central host (coreutils)."""
        sha = host_digest(self.runner, path, "sha512")
        if sha is None:
            return None
        return Digests(host_size(self.runner, path), host_digest(self.runner, path, "blake2b"),
                       sha)

    def upload_distfile(self, local: Path, digests: Digests) -> bool:
        """Place a distfile, checked where it lands.  Returns False if it was already there.

        The same bytes again is a no-op; other bytes under the same name are
        refused: a published distfile never changes.
        """
        final = self.distfile(local.name)
        existing = self.remote_digests(final)
        if existing is not None:
            if existing != digests:
                raise PublishError(f"distfile {local.name} already exists on the central "
                                   "repository with other bytes; a version is never rebuilt "
                                   "with different content")
            return False
        try:
            place_file(self.runner, local, final, digest=("sha512", digests.sha512))
        except CorruptCopy as exc:
            raise PublishError(f"distfile {local.name} arrived corrupted on the central "
                               f"repository ({exc.detail}); nothing was published") from None
        return True

    def remove_stale_temporaries(self, minutes: int = STALE_TEMPORARY_MINUTES) -> list[str]:
        """Remove the temporaries killed runs left in TEMPORARY_DIRS; return their paths.

        Age decides, not the environment lock: runs on other environments
        upload to the same distfiles/ at the same time, and their fresh
        temporaries must stay.  Housekeeping never fails the caller.
        """
        return self.stale_temporaries(minutes, remove=True)

    def stale_temporaries(self, minutes: int = STALE_TEMPORARY_MINUTES, *,
                          remove: bool = False) -> list[str]:
        """The temporaries killed runs left (``releaser doctor`` lists them), removed
        with ``remove``."""
        result = self.runner.run(
            ["find", *(self.path(d) for d in TEMPORARY_DIRS), "-maxdepth", "1", "-type", "f",
             "-name", ".*.partial-*", "-mmin", f"+{int(minutes)}", "-print",
             *(["-delete"] if remove else [])], check=False)
        return result.stdout.splitlines()

    def fetch_file(self, path: str, local: Path) -> None:
        self.runner.get(path, local)
