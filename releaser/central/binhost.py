"""Each binhost-mode environment's binary-package repository on the central host.

Layout, inside the folder the central host already serves over HTTP::

    distfiles/binhost/ENV/Packages             Portage's index (portage.getbinpkg.PackageIndex)
    distfiles/binhost/ENV/CAT/PF.gpkg.tar      the packages it lists

served at ``DISTFILES_URL/binhost/ENV``, which host bootstrap writes into each
node's ``binrepos.conf`` (``binhost_url``).  A package is placed under a
temporary name, checked by SHA256 where it landed, then renamed; the index is
rewritten atomically after it, so a node never reads an entry whose file is
missing.  Production gets the very file staging ran (``copy_package``: a
copy on the central host, checked by SHA256), never a rebuild.

With ``[trust]`` every package carries a detached signature by its
environment's release key (``PF.gpkg.tar.asc``, as rollback packages do:
``releaser.trust.packages``); staging's is verified before production's copy
is made and signed with production's key.
"""

from __future__ import annotations

import io
import posixpath
import time

from portage.getbinpkg import PackageIndex

import tempfile
from pathlib import Path

from releaser.central.repository import CentralRepository
from releaser.errors import BackupError, CorruptCopy, PublishError
from releaser.hosts.transfer import host_digest, place_file, temp_name
from releaser.trust.packages import sign_package, verify_package

INDEX = "Packages"


def binhost_dir(central: CentralRepository, env: str) -> str:
    return central.path("distfiles", "binhost", env)


def binhost_url(distfiles_url: str, env: str) -> str:
    """The URL ``env``'s nodes fetch binary packages from (their ``binrepos.conf``)."""
    return f"{distfiles_url.rstrip('/')}/binhost/{env}"


def read_index(central: CentralRepository, env: str) -> PackageIndex:
    """``env``'s binhost index as Portage reads it (empty when there is none yet)."""
    index = PackageIndex()
    text = central.read_text(posixpath.join(binhost_dir(central, env), INDEX))
    if text:
        index.read(io.StringIO(text))
    return index


def index_entry(central: CentralRepository, env: str, cpv: str) -> dict | None:
    """The index entry of ``cpv`` in ``env``'s binhost, or None."""
    return next((dict(e) for e in read_index(central, env).packages if e.get("CPV") == cpv),
                None)


def package_sha256(central: CentralRepository, env: str, cpv: str) -> str | None:
    """SHA256 of ``cpv``'s package file in ``env``'s binhost, or None when absent."""
    entry = index_entry(central, env, cpv)
    if entry is None:
        return None
    return host_digest(central.runner, _file(central, env, entry), "sha256")


def publish_package(central: CentralRepository, env: str, package) -> bool:
    """Put a built package (``binpkg_build.BuiltPackage``) in ``env``'s binhost.

    False when the very same bytes are already there; other bytes for the
    same version are refused (a published package never changes).
    """
    cpv = package.entry["CPV"]
    if _already(central, env, cpv, package.sha256):
        return False
    final = _file(central, env, package.entry)
    central.runner.run(["mkdir", "-p", "--", posixpath.dirname(final)])
    try:
        place_file(central.runner, package.path, final, digest=("sha256", package.sha256))
    except CorruptCopy as exc:
        raise PublishError(f"{posixpath.basename(final)} arrived corrupted in the {env} binhost "
                           f"({exc.detail}); nothing was published") from None
    sign_package(central, env, package.path, final)
    _add_entry(central, env, package.header, package.entry)
    return True


def copy_package(central: CentralRepository, source_env: str, env: str, cpv: str,
                 sha256: str) -> bool:
    """Give ``env`` the package of ``cpv`` that ``source_env`` ran, byte for byte.

    ``sha256`` is what ``source_env`` recorded for it; the copy is checked
    against it where it landed.  False when ``env`` already has it.
    """
    entry = index_entry(central, source_env, cpv)
    if entry is None:
        raise PublishError(f"{cpv} has no binary package in the {source_env} binhost; "
                           f"promote it to {source_env} in binary mode first")
    source = _file(central, source_env, entry)
    if host_digest(central.runner, source, "sha256") != sha256:
        raise PublishError(f"the {source_env} binhost's package of {cpv} is not the one "
                           f"{source_env} ran (SHA256 differs): not copying it")
    if _already(central, env, cpv, sha256):
        return False
    final = _file(central, env, entry)
    tmp = temp_name(final)
    central.runner.run(["mkdir", "-p", "--", posixpath.dirname(final)])
    central.runner.run(["cp", "--", source, tmp])
    if host_digest(central.runner, tmp, "sha256") != sha256:
        central.runner.run(["rm", "-f", "--", tmp], check=False)
        raise PublishError(f"the copy of {cpv}'s package to the {env} binhost arrived "
                           "corrupted; nothing was published")
    _verify_and_sign(central, source_env, env, source, tmp, final)
    central.runner.run(["mv", "-f", "--", tmp, final])
    header = dict(read_index(central, source_env).header)
    _add_entry(central, env, header, entry)
    return True


def _verify_and_sign(central: CentralRepository, source_env: str, env: str, source: str,
                     copy: str, final: str) -> None:
    """With ``[trust]``: ``copy`` (of ``source``) must carry ``source_env``'s signature;
    it gets ``env``'s, stored for ``final``.  Nothing without trust."""
    if getattr(central, "trust", None) is None:
        return
    with tempfile.TemporaryDirectory(prefix="releaser-binhost-") as tmp:
        local = Path(tmp) / posixpath.basename(source)
        central.fetch_file(copy, local)
        try:
            verify_package(central, source_env, local, source)
        except BackupError as exc:
            central.runner.run(["rm", "-f", "--", copy], check=False)
            raise PublishError(str(exc)) from None
        sign_package(central, env, local, final)


def _already(central: CentralRepository, env: str, cpv: str, sha256: str) -> bool:
    have = package_sha256(central, env, cpv)
    if have is not None and have != sha256:
        raise PublishError(f"{cpv} is already in the {env} binhost with other bytes; a "
                           "version is never republished (tag a new version)")
    return have is not None


def _file(central: CentralRepository, env: str, entry: dict) -> str:
    path = entry.get("PATH") or f"{entry['CPV']}.gpkg.tar"
    if path.startswith("/") or ".." in path.split("/"):
        raise PublishError(f"binhost index entry of {entry.get('CPV')} has an unsafe PATH "
                           f"{path!r}")
    return posixpath.join(binhost_dir(central, env), path)


def _add_entry(central: CentralRepository, env: str, header: dict, entry: dict) -> None:
    """Rewrite ``env``'s index with ``entry`` (replacing any of the same CPV)."""
    index = read_index(central, env)
    new = PackageIndex()
    new.header.update(header)
    new.header.update(index.header)
    new.header["TIMESTAMP"] = str(int(time.time()))
    new.packages = [e for e in index.packages if e.get("CPV") != entry["CPV"]]
    new.packages.append(dict(entry))
    new.modified = True
    out = io.StringIO()
    new.write(out)
    central.write_text(posixpath.join(binhost_dir(central, env), INDEX), out.getvalue())
