"""A node's overlay sync that refuses what Portage alone would take.

Portage's git sync verifies the signature of the fetched top commit and the
age of its ``metadata/timestamp.chk`` (repos.conf ``sync-git-verify-*``), but
has no notion of *ancestry*: an older, validly signed commit force-pushed
back into the central overlay (a rollback attack) or a rewritten history
(someone replaying signed commits in another order) passes.  So after
Portage's own sync, releaser checks on the node, with the node's git, that
the fetched head descends from the commit the node last synced.

That commit is recorded in the node's own clone as ``refs/releaser/synced``:
on the node (out of reach of whoever can write to the central repository),
kept by Portage's fetch and clean, and keeping the commit itself reachable.

On any refusal the overlay is put back on the recorded commit, so the node
keeps what it had; the refusal is an ``OverlayTrustError`` naming the attack.
"""

from __future__ import annotations

import posixpath
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from releaser.central.overlay import parse_timestamp
from releaser.errors import OverlayTrustError, PortageError, UsageError
from releaser.hosts import portage_commands
from releaser.hosts.portage_config import REPOS_DIR
from releaser.hosts.runner import Runner
from releaser.hosts.transfer import place_file
from releaser.trust.keys import NODE_KEYS_DIR, Keyring

#: The ref of a node's overlay clone naming the commit the node last synced and accepted.
SYNCED_REF = "refs/releaser/synced"

#: Portage's sync messages that say which check refused the fetched head.
_REFUSALS = [
    ("unsigned", re.compile(r"No valid signature found: no signature")),
    ("untrusted", re.compile(r"No valid signature found: (.*)")),
    ("untrusted", re.compile(r"Verification impossible due to keyring problem")),
]


def overlay_location(root: str, repo: str) -> str:
    """Where host bootstrap clones overlay ``repo`` on a host with ROOT ``root``."""
    return posixpath.join(root, REPOS_DIR.lstrip("/"), portage_commands.validate_repo(repo))


@dataclass(frozen=True)
class OverlayTrust:
    """What one node verifies its overlay with: the environment's public release keys
    (written to ``key_path``, as the runner reaches it, before every sync) and the
    freeze limit."""

    key_path: str
    keyring: Keyring
    env: str
    max_age_days: int

    @property
    def keys(self) -> str:
        """The environment's public keys, exported when a sync needs them: a node reached
        only to be read (status, doctor) needs no key, so an environment without one
        refuses only the runs that would install (``Keyring.active``)."""
        return self.keyring.export(self.env)

    @classmethod
    def of(cls, config, node: str, root: str) -> "OverlayTrust | None":
        """The trust of node ``node`` (ROOT ``root``); None when ``config`` has no ``[trust]``."""
        if getattr(config, "trust", None) is None:
            return None
        env = next((e.name for e in config.environments.values()
                    if any(n.name == node for n in e.nodes)), None)
        if env is None:
            raise UsageError(f"node {node} is in no environment of {config.path}: its "
                             "overlay's keys are unknown")
        if not config.trust.signs(env):
            return None
        path = posixpath.join(root, NODE_KEYS_DIR.lstrip("/"), f"{env}.asc")
        return cls(path, Keyring(config.trust.gnupghome), env, config.trust.max_age_days)

    def deliver(self, runner: Runner) -> bool:
        """Make the node's key file hold exactly these keys (True if it changed).

        Delivered before every sync from the operator's keyring, never from the
        central repository: after ``keys rotate`` the next promote gives nodes
        both keys, after ``keys retire`` only the new one.
        """
        keys = self.keys
        current = runner.run(["cat", "--", self.key_path], check=False)
        if current.returncode == 0 and current.stdout == keys:
            return False
        with tempfile.TemporaryDirectory(prefix="releaser-keys-") as tmp:
            local = Path(tmp) / "keys.asc"
            local.write_text(keys, encoding="utf-8")
            place_file(runner, local, self.key_path, mode="0644")
        return True


def verified_sync(runner: Runner, root: str, repo: str, *, max_age_days: int | None = None,
                  now: datetime | None = None, trust: OverlayTrust | None = None) -> str:
    """Sync ``repo`` with Portage, then refuse a head that does not descend from the last
    one, or whose ``metadata/timestamp.chk`` is older than ``max_age_days`` (a frozen overlay).

    The age is checked here rather than by Portage's ``sync-git-verify-max-age-days``:
    Portage 3.0.83 looks the file up as ``-1:metadata/timestamp.chk`` after a first
    clone, which git refuses, so no host could ever be bootstrapped with it.

    Returns the accepted head.  Raises ``OverlayTrustError`` for a refusal
    (the overlay left on its recorded commit), ``PortageError`` for any other
    failure of the sync.
    """
    host = getattr(runner, "host", "?")
    if trust is not None:
        trust.deliver(runner)
        max_age_days = trust.max_age_days
    git = _Git(runner, overlay_location(root, repo))
    base = git.rev(SYNCED_REF) or git.rev("HEAD")
    try:
        portage_commands.sync(runner, repo)
    except PortageError as exc:
        refusal = refusal_of(exc)
        if refusal is not None:
            raise OverlayTrustError(host, *refusal) from None
        # Portage cannot merge a rewritten history either ("git merge error"): say why.
        _check_descends(git, host, base, git.rev("@{upstream}"))
        raise
    head, offered = git.rev("HEAD"), git.rev("@{upstream}")
    _check_descends(git, host, base, offered)
    if max_age_days is not None and offered is not None:
        stamp = git.timestamp(offered)
        limit = (now or datetime.now(timezone.utc)) - timedelta(days=max_age_days)
        if stamp is None or stamp < limit:
            git.restore(base or head)
            said = "has no metadata/timestamp.chk" if stamp is None else \
                f"was last signed for at {stamp:%Y-%m-%d %H:%M} UTC"
            raise OverlayTrustError(host, "stale", f"the central overlay {said}, older than "
                                                   f"the {max_age_days} days allowed "
                                                   "([trust] max_age_days): a frozen mirror?")
    if head != offered:
        git.restore(base)
        raise OverlayTrustError(host, "diverged", f"the overlay's checkout {str(head)[:12]} is "
                                                  f"not the synced head {str(offered)[:12]}")
    git.record(head)
    return head


def _check_descends(git: "_Git", host: str, base: str | None, offered: str | None) -> None:
    """Refuse (and put the overlay back on ``base``) a head ``offered`` not descending from it."""
    if base is None or offered is None or git.is_ancestor(base, offered):
        return
    kind = "rollback" if git.is_ancestor(offered, base) else "diverged"
    git.restore(base)
    what = "is older than" if kind == "rollback" else "does not descend from"
    raise OverlayTrustError(host, kind, f"the central overlay's head {offered[:12]} {what} "
                                        f"{base[:12]}, which this node last synced")


def refusal_of(exc: PortageError) -> tuple[str, str] | None:
    """(kind, Portage's reason) when a failed sync was a signature or freshness refusal."""
    text = "\n".join([exc.result.stdout or "", exc.result.stderr or ""])
    for kind, pattern in _REFUSALS:
        m = pattern.search(text)
        if m:
            return kind, m.group(0).strip()
    return None


class _Git:
    """git on the node's overlay clone, through its runner."""

    def __init__(self, runner: Runner, location: str):
        self.runner = runner
        self.location = location

    def _argv(self, *args: str) -> list[str]:
        return ["git", "-c", f"safe.directory={self.location}", "-C", self.location, *args]

    def rev(self, name: str) -> str | None:
        """The commit ``name`` names, or None (no clone yet, no such ref)."""
        result = self.runner.run(self._argv("rev-parse", "--verify", "-q", f"{name}^{{commit}}"),
                                 check=False)
        out = result.stdout.strip()
        return out if result.returncode == 0 and out else None

    def is_ancestor(self, older: str, newer: str) -> bool:
        return self.runner.run(self._argv("merge-base", "--is-ancestor", older, newer),
                               check=False).returncode == 0

    def timestamp(self, commit: str) -> datetime | None:
        """When ``commit``'s metadata/timestamp.chk says it was made (None: no such file)."""
        result = self.runner.run(self._argv("show", f"{commit}:metadata/timestamp.chk"),
                                 check=False)
        if result.returncode != 0:
            return None
        try:
            return parse_timestamp(result.stdout)
        except UsageError:
            return None

    def restore(self, commit: str) -> None:
        """Put the checkout back on ``commit`` (the overlay the node had)."""
        self.runner.run(self._argv("reset", "-q", "--hard", commit))

    def record(self, commit: str) -> None:
        self.runner.run(self._argv("update-ref", SYNCED_REF, commit))
