"""Binary packages kept for rollback, signed on the operator's side.

A node's package reaches the central repository through the operator's
machine (``releaser.backup.binpkg``: node -> local file -> central).  There,
with ``[trust]``, releaser makes a detached signature of the very bytes with
the environment's release key and stores it beside the package
(``PF.gpkg.tar.asc``).  Before a rollback puts a central package on a node, the
local copy must carry a good signature by one of that environment's release
keys (any of them: packages made before a rotation still roll back), else it
is refused: whoever can write to the central repository can replace a package
and its digest in the index, but cannot sign.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from releaser.errors import BackupError
from releaser.trust.keys import Keyring

SIGNATURE_SUFFIX = ".asc"


def signature_path(package_path: str) -> str:
    """Where the detached signature of a central package is kept."""
    return package_path + SIGNATURE_SUFFIX


def keyring_for(central, env: str) -> Keyring | None:
    """The release keyring when ``env``'s packages are signed, else None."""
    trust = getattr(central, "trust", None)
    if trust is None or not trust.signs(env):
        return None
    return Keyring(trust.gnupghome)


def sign_package(central, env: str, local: Path, package_path: str) -> bool:
    """Sign ``local`` (the bytes stored at ``package_path`` on central) and store the
    signature beside it.  False when ``env`` signs nothing."""
    keyring = keyring_for(central, env)
    if keyring is None:
        return False
    with local.open("rb") as fh:
        sig = keyring.gpg().sign_file(fh, keyid=keyring.active(env), detach=True)
    if not sig.data:
        raise BackupError(f"cannot sign the binary package {local.name} with the {env} "
                          f"release key: {sig.status or 'gpg failed'}")
    central.write_text(signature_path(package_path), str(sig))
    return True


def is_signed(central, env: str, package_path: str) -> bool:
    """Whether a central package has its signature beside it (True when ``env`` signs
    nothing: there is nothing to have)."""
    return keyring_for(central, env) is None or central.exists(signature_path(package_path))


def verify_package(central, env: str, local: Path, package_path: str) -> None:
    """Refuse (BackupError) ``local``, fetched from ``package_path`` on central, unless it
    carries a good signature by one of ``env``'s release keys."""
    keyring = keyring_for(central, env)
    if keyring is None:
        return
    name = Path(package_path).name
    text = central.read_text(signature_path(package_path))
    if text is None:
        raise BackupError(f"the binary package {name} on the central repository is not "
                          f"signed: not installing it (only packages signed by the {env} "
                          "release key are)")
    with tempfile.TemporaryDirectory(prefix="releaser-sig-") as tmp:
        sig = Path(tmp) / "package.asc"
        sig.write_text(text)
        with sig.open("rb") as fh:
            verified = keyring.gpg().verify_file(fh, data_filename=str(local))
    signer = getattr(verified, "pubkey_fingerprint", None) or verified.fingerprint
    if not verified.valid or signer not in keyring.env_keys(env):
        said = f"signed by {signer}" if verified.valid else (verified.status or "bad signature")
        raise BackupError(f"the binary package {name} on the central repository is not "
                          f"signed by the {env} release key ({said}): not installing it")
