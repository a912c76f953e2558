"""The release keyring: one OpenPGP key per environment, made and used through python-gnupg.

Why one key per environment: a node verifies its overlay against a key file
holding only its environment's key(s), so a staging key (or a developer's
key, or any key in the operator's own keyring) can never make a production
node accept a commit.  Portage accepts a valid signature from *any* key it
knows with only a warning, hence the file must hold nothing else.

The keyring is a GnuPG home of its own (``[trust] gnupghome``), on the
operator's side.  Beside the keys it holds ``releaser-keys.json``: per
environment the ``active`` key (the one that signs) and the ``verify`` keys
(what nodes are given: the active one, plus the previous one during a
rotation until ``keys retire`` ends it), and the ``head`` of the overlay
releaser last pushed (the next one must descend from it).

Keys have no passphrase: releaser signs unattended; the folder is mode 0700
and the secret never leaves it (only public keys are exported).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import gnupg

from releaser.config import validate
from releaser.errors import KeyringError, UsageError

STATE_FILE = "releaser-keys.json"
#: Where a host keeps the public release keys its overlay is verified with:
#: ``ENV.asc`` holds only that environment's keys (Portage trusts every key it is given).
NODE_KEYS_DIR = "/etc/portage/releaser/keys"
ACTIVE, VERIFY, RETIRED, HEAD = "active", "verify", "retired", "head"


@dataclass(frozen=True)
class KeyInfo:
    """One release key as ``keys list`` shows it."""

    env: str
    fingerprint: str
    status: str  # "active" (signs), "verify" (still given to nodes), "retired"
    created: str  # ISO date

    def to_dict(self) -> dict:
        return {"env": self.env, "fingerprint": self.fingerprint, "status": self.status,
                "created": self.created}


class Keyring:
    """The release keys in GnuPG home ``home``."""

    def __init__(self, home: Path):
        self.home = Path(home)

    @classmethod
    def from_config(cls, config) -> "Keyring":
        """The keyring ``[trust] gnupghome`` names (KeyringError without ``[trust]``)."""
        if config.trust is None:
            raise KeyringError(f"{config.path}: no [trust] table: overlays are unsigned and "
                               "there is no release keyring (add [trust], see README 'Trust')")
        return cls(config.trust.gnupghome)

    # --- gpg ----------------------------------------------------------------
    def gpg(self) -> gnupg.GPG:
        """python-gnupg on this keyring (made, mode 0700, on first use)."""
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        return gnupg.GPG(gnupghome=str(self.home))

    def env(self) -> dict[str, str]:
        """Environment variables that point gpg (run by git) at this keyring."""
        return {"GNUPGHOME": str(self.home)}

    # --- state --------------------------------------------------------------
    def _state(self) -> dict:
        path = self.home / STATE_FILE
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise KeyringError(f"{path}: unreadable keyring state: {exc}") from None

    def _save(self, state: dict) -> None:
        path = self.home / STATE_FILE
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)

    # --- operations ---------------------------------------------------------
    def init(self, env: str) -> str:
        """Make ``env``'s first release key; its fingerprint.  Refused if it has one."""
        state = self._state()
        if _env_name(env) in state:
            raise KeyringError(f"environment {env} already has a release key "
                               f"({state[env][ACTIVE]}); use 'releaser keys rotate {env}'")
        fpr = self._generate(env)
        state[env] = {ACTIVE: fpr, VERIFY: [fpr], RETIRED: []}
        self._save(state)
        return fpr

    def rotate(self, env: str) -> tuple[str, str]:
        """A new key signs ``env``'s commits from now on; the old one stays among the keys
        nodes verify with until ``retire``.  Returns (new, old) fingerprints."""
        state = self._state()
        old = self.active(env)
        new = self._generate(env)
        entry = state[env]
        entry[ACTIVE] = new
        entry[VERIFY] = [new] + [f for f in entry[VERIFY] if f != new]
        self._save(state)
        return new, old

    def retire(self, env: str) -> list[str]:
        """End a rotation: nodes are given only the active key from now on.  The retired
        fingerprints (none when no rotation was under way)."""
        state = self._state()
        active = self.active(env)
        entry = state[env]
        gone = [f for f in entry[VERIFY] if f != active]
        entry[VERIFY] = [active]
        entry[RETIRED] = entry.get(RETIRED, []) + gone
        self._save(state)
        return gone

    def active(self, env: str) -> str:
        """The fingerprint of the key that signs ``env``'s overlay commits."""
        entry = self._state().get(_env_name(env))
        if not entry:
            raise KeyringError(unsigned_refusal(env, f"has no release key in {self.home}"))
        return entry[ACTIVE]

    def verify_keys(self, env: str) -> list[str]:
        """The fingerprints ``env``'s nodes accept (the active key first)."""
        self.active(env)
        return list(self._state()[env][VERIFY])

    def last_head(self, env: str) -> str | None:
        """The overlay commit releaser last pushed for ``env`` from this keyring."""
        return (self._state().get(_env_name(env)) or {}).get(HEAD)

    def record_head(self, env: str, commit: str) -> None:
        """Remember ``commit`` as ``env``'s overlay head: the next commit must descend from it."""
        state = self._state()
        self.active(env)
        state[env][HEAD] = commit
        self._save(state)

    def env_keys(self, env: str) -> list[str]:
        """Every key ``env`` ever had (active, still given to nodes, retired): what
        binary packages made before a rotation were signed with."""
        self.active(env)
        entry = self._state()[env]
        return list(dict.fromkeys([*entry[VERIFY], *entry.get(RETIRED, [])]))

    def export(self, env: str) -> str:
        """The ASCII-armoured public keys ``env``'s nodes verify with, and nothing else."""
        fprs = self.verify_keys(env)
        text = self.gpg().export_keys(fprs, armor=True)
        if not text or "BEGIN PGP PUBLIC KEY BLOCK" not in text:
            raise KeyringError(f"cannot export the {env} release key(s) from {self.home}")
        return text

    def keys(self) -> list[KeyInfo]:
        """Every release key of every environment, newest state first per environment."""
        created = {k["fingerprint"]: k["date"] for k in self.gpg().list_keys(secret=True)}
        out = []
        for env, entry in sorted(self._state().items()):
            for fpr in dict.fromkeys([*entry[VERIFY], *entry.get(RETIRED, [])]):
                status = (ACTIVE if fpr == entry[ACTIVE] else
                          VERIFY if fpr in entry[VERIFY] else RETIRED)
                out.append(KeyInfo(env, fpr, status, _date(created.get(fpr))))
        return out

    def _generate(self, env: str) -> str:
        """A new ed25519 signing key with a cv25519 encryption subkey (secrets), no expiry."""
        gpg = self.gpg()
        spec = gpg.gen_key_input(
            key_type="EDDSA", key_curve="ed25519", key_usage="sign",
            subkey_type="ECDH", subkey_curve="cv25519", subkey_usage="encrypt",
            name_real=f"releaser {env} release key", name_email=f"release-{env}@releaser.invalid",
            expire_date=0, no_protection=True)
        result = gpg.gen_key(spec)
        if not result.fingerprint:
            raise KeyringError(f"gpg could not make a key for {env}: "
                               f"{_last_gpg_line(result.stderr)}")
        return str(result.fingerprint)


def unsigned_refusal(env: str, why: str) -> str:
    """The one line a run refused for an unsigned overlay prints: both ways out."""
    return (f"environment {env} {why}, so its overlay would be unsigned: run 'releaser keys "
            f"init {env}' (then 'releaser host bootstrap {env}'), or document an "
            f'[[exceptions]] entry with setting = "unsigned-overlay", environments = '
            f'["{env}"], reason, owner and expires')


def require_signing(config, env: str):
    """Refuse (KeyringError, exit 2) a run that would publish to or install ``env`` with an
    unsigned overlay; the active ``unsigned-overlay`` exception when one allows it, else None.

    The one check every command that publishes or installs runs first (the CLI's
    ``_Context.changing``), before it builds, locks or touches a host.  Why there and
    not at loading: read-only commands (status, history, doctor, build) must keep
    working on such a configuration, doctor to say what is missing.  The places that
    sign (``Signer.for_env``) and deliver keys to nodes (``OverlayTrust.deliver``) go
    through ``Keyring.active`` and so refuse with this same line when reached any other
    way: nothing unsigned is ever pushed.
    """
    excepted = config.exception_for("unsigned-overlay", env)
    if excepted is not None:
        return excepted
    if config.trust is None:  # a Config made in code, not loaded: say how to load one
        raise KeyringError(unsigned_refusal(env, f"has no [trust] in {config.path}"))
    Keyring(config.trust.gnupghome).active(env)
    return None


def _env_name(env: str) -> str:
    try:
        return validate.env_name(env)
    except validate.Invalid as exc:
        raise UsageError(str(exc)) from None


def _date(stamp: str | None) -> str:
    if not stamp:
        return "-"
    return datetime.fromtimestamp(int(stamp), timezone.utc).date().isoformat()


def _last_gpg_line(stderr: str) -> str:
    lines = [line for line in (stderr or "").splitlines()
             if line.strip() and not line.startswith("[GNUPG:]")]
    return lines[-1] if lines else "no reason given"
