"""Per-environment secrets: encrypted in the app's repository, decrypted only to install.

The sensitive settings the app needs (database passwords, API keys) live in
the app's own git repository as ``secrets/ENV/NAME.gpg``, each encrypted to
the environment's release key and to the operators' keys (``[trust]
operators``), so they are versioned with the code and never copied to servers
by hand.  At install time releaser decrypts them on the operator's side and
writes each to the node as ``/etc/APP/secrets/NAME``: mode 0600, owned by the
app's user, outside the package (never in a tarball, binary package or
Manifest).  The app reads them there (its contract: ``notes.config.secret``).

A value only ever travels through gpg's and the runner's stdin: never in an
argv, a log line, a report, the ledger or an error message.  Values are UTF-8
text.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
import subprocess
import tempfile
from pathlib import Path

from releaser.errors import KeyringError, UsageError
from releaser.hosts.runner import Runner
from releaser.trust.keys import Keyring

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: Where a node keeps the app's secrets (``{app}``: the app's service name).
NODE_SECRETS_DIR = "/etc/{app}/secrets"
SUFFIX = ".gpg"


def check_name(name: str) -> str:
    """A secret's name: a file name on the node and in the repository."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name.endswith(SUFFIX):
        raise UsageError(f"{name!r} is not a secret name (a letter or digit, then letters, "
                         "digits, '.', '_' or '-'; at most 64)")
    return name


class SecretStore:
    """The secrets of the app's repository, read and written with the release keyring."""

    def __init__(self, config):
        self.keyring = Keyring.from_config(config)
        self.operators = tuple(config.trust.operators)
        self.source = Path(config.app.source)
        self.config = config

    def folder(self, env: str) -> Path:
        self.config.environment(env)  # unknown environments are refused
        return self.source / "secrets" / env

    def path(self, env: str, name: str) -> Path:
        return self.folder(env) / f"{check_name(name)}{SUFFIX}"

    def names(self, env: str) -> list[str]:
        folder = self.folder(env)
        if not folder.is_dir():
            return []
        return sorted(p.name[:-len(SUFFIX)] for p in folder.iterdir()
                      if p.name.endswith(SUFFIX) and _NAME.fullmatch(p.name[:-len(SUFFIX)]))

    def recipients(self, env: str) -> list[str]:
        """Who can decrypt ``env``'s secrets: its release key, then every operator's key."""
        return [self.keyring.active(env), *self.operators]

    def set(self, env: str, name: str, value: str) -> Path:
        """Encrypt ``value`` as ``secrets/ENV/NAME.gpg`` and commit that file alone."""
        path = self.path(env, name)
        if not value:
            raise UsageError(f"secret {name}: empty value (give it on stdin)")
        result = self.keyring.gpg().encrypt(value.encode("utf-8"), self.recipients(env),
                                            armor=True, always_trust=True)
        if not result.ok:
            raise KeyringError(f"cannot encrypt secret {name} for {env}: {result.status} "
                               "(is every [trust] operators key imported into the keyring?)")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(result.data)
        os.replace(tmp, path)
        self._commit(path, f"secrets: {env}/{name} (encrypted)")
        return path

    def get(self, env: str, name: str) -> str:
        """The decrypted value of ``env``'s secret ``name`` (KeyringError if it cannot be)."""
        path = self.path(env, name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise UsageError(f"{env} has no secret {name} ({path})") from None
        result = self.keyring.gpg().decrypt(data)
        if not result.ok:
            raise KeyringError(f"cannot decrypt {path}: {result.status}")
        return result.data.decode("utf-8")

    def edit(self, env: str, name: str, editor: str) -> bool:
        """Open the secret's value in ``editor`` (a private 0600 file, removed after);
        re-encrypt if it changed.  A new secret starts empty."""
        current = self.get(env, name) if self.path(env, name).exists() else ""
        with tempfile.TemporaryDirectory(prefix="releaser-secret-") as tmp:
            plain = Path(tmp) / name
            plain.touch(mode=0o600)
            plain.write_text(current, encoding="utf-8")
            subprocess.run([*shlex.split(editor), str(plain)], check=True)
            value = plain.read_text(encoding="utf-8")
        if value == current:
            return False
        self.set(env, name, value)
        return True

    def _commit(self, path: Path, message: str) -> None:
        """Commit ``path`` alone to the app's repository (nothing else staged is taken)."""
        relative = str(path.relative_to(self.source))
        git = ["git", "-C", str(self.source)]
        subprocess.run([*git, "add", "--", relative], check=True, capture_output=True)
        done = subprocess.run([*git, "commit", "-q", "-m", message, "--", relative],
                              capture_output=True, text=True)
        if done.returncode != 0 and "nothing to commit" not in done.stdout + done.stderr:
            raise UsageError(f"secret written to {path} but not committed: "
                             f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}")


def install_secrets(runner: Runner, root: str, store: SecretStore, env: str, app: str,
                    owner: tuple[int, int]) -> list[str]:
    """Write every secret of ``env`` to the node as ``/etc/APP/secrets/NAME`` (0600, owned
    by ``owner``, uid and gid), each replaced whole; the names written."""
    names = store.names(env)
    if not names:
        return []
    folder = posixpath.join(root, NODE_SECRETS_DIR.format(app=app).lstrip("/"))
    uid, gid = (str(i) for i in owner)
    runner.run(["mkdir", "-p", "--", folder])
    runner.run(["chown", f"{uid}:{gid}", "--", folder])
    runner.run(["chmod", "0700", "--", folder])
    for name in names:
        target = posixpath.join(folder, name)
        tmp = posixpath.join(folder, f".{name}.releaser-new")
        try:
            # The value reaches install on its stdin; argv names only paths and ids.
            runner.run(["install", "-m", "0600", "-o", uid, "-g", gid, "/dev/stdin", tmp],
                       input=store.get(env, name))
            runner.run(["mv", "-f", "--", tmp, target])
        except BaseException:
            runner.run(["rm", "-f", "--", tmp], check=False)
            raise
    return names


def deliver_for(config, env: str, node) -> list[str]:
    """Install ``env``'s secrets on ``node`` (a ``releaser.hosts.node.Node``) before its
    release is installed; nothing without ``[trust]`` or without secrets."""
    if getattr(config, "trust", None) is None:
        return []
    store = SecretStore(config)
    if not store.names(env):
        return []
    from releaser.hosts.host_probe import Account, Host, account_ids

    contract = config.app.contract
    owner = account_ids(Host(node.name, node.runner, node.root), Account.of(contract))
    return install_secrets(node.runner, node.root, store, env, contract.service, owner)
