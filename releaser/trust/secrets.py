"""Per-environment secrets: encrypted in the app's repository, decrypted only to install.

The sensitive settings the app needs (database passwords, API keys) live in
the app's own git repository as ``secrets/ENV/NAME.gpg``, each encrypted to
the environment's release key and to the operators' keys (``[trust]
operators``), so they are versioned with the code and never copied to servers
by hand.  At install time releaser decrypts them on the operator's side and
writes each to the node as ``/etc/APP/secrets/NAME``: mode 0600, owned by the
app's user, outside the package (never in a tarball, binary package or
Manifest).  The app reads them there (its contract: ``notes.config.secret``).

A node gets the secrets of the release it runs: promote and rollback read
them from git at the release's commit (``SecretStore(config, commit=...)``),
not from the working tree, so a secret changed for 2.0.0 is not given to
1.0.0 when the environment rolls back to it, nor is an uncommitted edit ever
delivered.  ``secrets set``/``edit``/``list`` work on the working tree.

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

from releaser.errors import GitError, KeyringError, UsageError
from releaser.hosts.runner import Runner
from releaser.trust.keys import Keyring

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: A full commit id (SHA-1 or SHA-256).
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
#: Where a node keeps the app's secrets (``{app}``: the app's service name).
NODE_SECRETS_DIR = "/etc/{app}/secrets"
SUFFIX = ".gpg"


def check_name(name: str) -> str:
    """A secret's name: a file name on the node and in the repository."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name.endswith(SUFFIX):
        raise UsageError(f"{name!r} is not a secret name (a letter or digit, then letters, "
                         "digits, '.', '_' or '-'; at most 64)")
    return name


def check_commit(commit: str) -> str:
    """A full commit id, before it reaches git's argv."""
    if not isinstance(commit, str) or not _COMMIT.fullmatch(commit):
        raise UsageError(f"{commit!r} is not a full commit id")
    return commit


class SecretStore:
    """The secrets of the app's repository, read and written with the release keyring.

    ``commit``: read them as that commit holds them (what a release was built
    from), never the working tree; such a store is read-only.
    """

    def __init__(self, config, commit: str | None = None):
        self.keyring = Keyring.from_config(config)
        self.operators = tuple(config.trust.operators)
        self.source = Path(config.app.source)
        self.config = config
        self.commit = None if commit is None else check_commit(commit)

    def folder(self, env: str) -> Path:
        self.config.environment(env)  # unknown environments are refused
        return self.source / "secrets" / env

    def path(self, env: str, name: str) -> Path:
        return self.folder(env) / f"{check_name(name)}{SUFFIX}"

    def names(self, env: str) -> list[str]:
        folder = self.folder(env)
        if self.commit is not None:
            files = self._git("ls-tree", "--name-only", self.commit, "--",
                              f"{self._relative(folder)}/").decode("utf-8").splitlines()
        else:
            files = [p.name for p in folder.iterdir()] if folder.is_dir() else []
        files = [posixpath.basename(f) for f in files]
        return sorted(f[:-len(SUFFIX)] for f in files
                      if f.endswith(SUFFIX) and _NAME.fullmatch(f[:-len(SUFFIX)]))

    def recipients(self, env: str) -> list[str]:
        """Who can decrypt ``env``'s secrets: its release key, then every operator's key."""
        return [self.keyring.active(env), *self.operators]

    def set(self, env: str, name: str, value: str) -> Path:
        """Encrypt ``value`` as ``secrets/ENV/NAME.gpg`` and commit that file alone."""
        self._writable()
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
        data = self._encrypted(env, name, path)
        result = self.keyring.gpg().decrypt(data)
        if not result.ok:
            raise KeyringError(f"cannot decrypt {path}: {result.status}")
        return result.data.decode("utf-8")

    def _encrypted(self, env: str, name: str, path: Path) -> bytes:
        """The encrypted file's bytes, from the working tree or from ``commit``."""
        if self.commit is None:
            try:
                return path.read_bytes()
            except FileNotFoundError:
                raise UsageError(f"{env} has no secret {name} ({path})") from None
        if name not in self.names(env):
            raise UsageError(f"{env} has no secret {name} at commit {self.commit[:12]}")
        return self._git("show", f"{self.commit}:./{self._relative(path)}")

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.source).as_posix()

    def _git(self, *args: str) -> bytes:
        """git's output in the app's repository (its stdout holds encrypted bytes at most)."""
        done = subprocess.run(["git", "-C", str(self.source), *args], capture_output=True)
        if done.returncode != 0:
            why = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
            raise GitError(f"cannot read the secrets at commit {self.commit[:12]} in "
                           f"{self.source}: {why[0] if why else 'git failed'}")
        return done.stdout

    def _writable(self) -> None:
        if self.commit is not None:
            raise UsageError("the secrets of a commit are read-only: change them in the "
                             "working tree (releaser secrets set)")

    def edit(self, env: str, name: str, editor: str) -> bool:
        """Open the secret's value in ``editor`` (a private 0600 file, removed after);
        re-encrypt if it changed.  A new secret starts empty."""
        self._writable()
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


def _store_with_secrets(config, env: str, commit: str) -> SecretStore | None:
    """The store of ``env``'s secrets at ``commit``; None without ``[trust]`` or secrets."""
    if getattr(config, "trust", None) is None:
        return None
    store = SecretStore(config, commit=commit)
    return store if store.names(env) else None


def has_secrets(config, env: str, commit: str) -> bool:
    """Whether ``deliver_for`` would install anything (a run skips the step otherwise)."""
    return _store_with_secrets(config, env, commit) is not None


def deliver_for(config, env: str, node, commit: str) -> list[str]:
    """Install ``env``'s secrets as ``commit`` (the release's) holds them on ``node`` (a
    ``releaser.hosts.node.Node``) before that release is installed; nothing without
    ``[trust]`` or without secrets."""
    store = _store_with_secrets(config, env, commit)
    if store is None:
        return []
    from releaser.hosts.host_probe import Account, Host, account_ids

    contract = config.app.contract
    owner = account_ids(Host(node.name, node.runner, node.root), Account.of(contract))
    return install_secrets(node.runner, node.root, store, env, contract.service, owner)
