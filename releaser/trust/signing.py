"""Signing an overlay commit with an environment's release key.

git signs by running ``gpg -bsau KEY``; which keyring it uses is given by the
environment (``GNUPGHOME``) and the key and program by the temporary clone's
own git config, so nothing secret is ever on a command line, and the
operator's own git and gpg configuration play no part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from releaser.trust.keys import Keyring


@dataclass(frozen=True)
class Signer:
    """The key that signs one environment's overlay commits, and where it lives."""

    environment: str
    fingerprint: str
    keyring: Keyring

    @classmethod
    def for_env(cls, keyring: Keyring, env: str) -> "Signer":
        """``env``'s active release key (KeyringError if it has none)."""
        return cls(env, keyring.active(env), keyring)

    def git_config(self) -> Mapping[str, str]:
        """Settings of the clone that make ``git commit -S`` sign with this key."""
        return {"user.signingkey": self.fingerprint, "gpg.program": "gpg",
                "gpg.format": "openpgp", "commit.gpgsign": "true"}

    def env(self) -> Mapping[str, str]:
        return self.keyring.env()

