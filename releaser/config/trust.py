"""``[trust]``: where the release keys live and what nodes demand of their overlay.

Signing is the default: a configuration without a ``[trust]`` table gets these
defaults (``releaser.config.parse_config``), and only a documented
``unsigned-overlay`` exception leaves an environment unsigned.  Every overlay
commit releaser makes is signed with
the environment's release key, and host bootstrap makes every node refuse a
commit that key did not sign (Portage's ``sync-git-verify-commit-signature``),
an overlay whose ``metadata/timestamp.chk`` is older than ``max_age_days``
(a frozen mirror), and an overlay older than or diverged from what the node
last synced (releaser's own ancestry check).

The keyring holds secret keys: it lives on the operator's side, never in the
central repository (whose overlays nodes clone) and never in the app's source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

#: ``[trust] gnupghome`` when not set: the operator's own data folder.
DEFAULT_GNUPGHOME = "~/.local/share/releaser/gnupg"
#: ``[trust] max_age_days`` when not set: an overlay no release touched for a month is
#: refused by nodes; ``releaser keys refresh``-style re-signing is a publish or a mask.
DEFAULT_MAX_AGE_DAYS = 30
_FINGERPRINT = re.compile(r"[0-9A-F]{40}")


@dataclass(frozen=True)
class TrustConfig:
    """``[trust]``: the keyring of release keys and the freeze limit nodes apply."""

    gnupghome: Path
    max_age_days: int = DEFAULT_MAX_AGE_DAYS
    operators: tuple[str, ...] = ()  # fingerprints secrets are also encrypted to
    #: Environments whose overlay stays unsigned by a documented ``unsigned-overlay``
    #: exception (releaser.config.exceptions).
    unsigned: frozenset[str] = frozenset()

    def signs(self, env: str) -> bool:
        """Whether ``env``'s overlay commits are signed and verified by its nodes."""
        return env not in self.unsigned


def parse_trust(r, base: Path, central_path: Path | None, source: Path | None,
                unsigned: set[str] = frozenset()) -> TrustConfig:
    """Read ``[trust]`` with the config reader ``r`` (a ``releaser.config._Reader``).

    ``central_path``: a local central repository's folder; ``source``: the app's
    folder that becomes the tarball.  The keyring may be in neither.
    """
    r.unknown({"gnupghome", "max_age_days", "operators"})
    home = r.local_path("gnupghome", base, DEFAULT_GNUPGHOME)
    for where, what in ((central_path, "the central repository"), (source, "the app's files")):
        if where is not None and (home == where or where in home.parents):
            raise r.fail("gnupghome", f"{home} is inside {what} ({where}): the keyring holds "
                                      "secret keys and must stay on the operator's side")
    age = r.get("max_age_days", int, DEFAULT_MAX_AGE_DAYS)
    if age <= 0:
        raise r.fail("max_age_days", f"must be a positive number of days, not {age}")
    operators = r.get("operators", list, [])
    for fpr in operators:
        if not isinstance(fpr, str) or not _FINGERPRINT.fullmatch(fpr):
            raise r.fail("operators", f"{fpr!r} is not an OpenPGP fingerprint (40 upper-case "
                                      "hex digits)")
    return TrustConfig(gnupghome=home, max_age_days=age, operators=tuple(operators),
                       unsigned=frozenset(unsigned))
