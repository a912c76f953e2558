"""Withdrawing a version from an environment: a ``package.mask`` entry in its
overlay, committed with the reason, so no later sync or world update brings
the version back.

Apart from rollback so that a promote that rolls back automatically (through
releaser.deploy.rollout) masks the same way without importing rollback.
"""

from __future__ import annotations

from pathlib import Path

from portage.dep import Atom, isvalidatom

from releaser.build import versions as versioning
from releaser.central import overlay_git
from releaser.central.repository import CentralRepository


def mask_version(central: CentralRepository, env: str, cp: str, version: str,
                 reason: str) -> bool:
    """Mask ``=cp-version`` in the environment's overlay with one commit saying why.

    False when the overlay already masks it (nothing committed).
    """
    atom = f"={cp}-{version}"
    with overlay_git.checkout(central, env) as repo:
        path = Path(repo.working_tree_dir) / "profiles" / "package.mask"
        text = path.read_text() if path.exists() else ""
        if any(masks(line, cp, version) for line in text.splitlines()):
            return False
        entry = f"# releaser: {reason}\n{atom}\n"
        path.write_text((text + "\n" if text and not text.endswith("\n\n") else text) + entry
                        if text else entry)
        overlay_git.commit_and_push(repo, f"{cp}-{version}: mask in {env}\n\n{reason}\n")
    return True


def masks(line: str, cp: str, version: str) -> bool:
    """Whether a package.mask line is ``=cp-V`` with V the same version to Portage."""
    text = line.strip()
    if not text.startswith("=") or not isvalidatom(text):
        return False
    atom = Atom(text)
    return atom.operator == "=" and atom.cp == cp and versioning.same(atom.version, version)
