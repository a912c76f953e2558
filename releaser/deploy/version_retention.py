"""Old versions leave an environment: ``[environments.NAME] keep_versions = N``.

After a healthy promote, the environment's overlay keeps the N newest versions
of the app and drops the older ones, by one overlay commit (signed as every
commit when ``[trust]`` is configured) that removes their ebuilds and their
Manifest's DIST entries, so the Manifest describes exactly the ebuilds left.
Never removed, whatever N says (``protected``):

- the version the environment is on (the ledger's current one) and anything
  newer (a release not healthy yet, one in flight);
- the version ``releaser rollback`` would go back to;
- every version a node still has installed, as the ledger recorded it (a
  node's last journal entry, and both ends of an install under way).

A tarball leaves the distfile store only when no environment's overlay offers
its version any more: production may still run what staging dropped.  Binary
packages and dumps follow ``keep_backups`` (``releaser.backup``), apart from this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from releaser.build import versions as versioning
from releaser.central import overlay_git
from releaser.central.ledger import Ledger
from releaser.central.repository import CentralRepository
from releaser.config import Config
from releaser.errors import UsageError


@dataclass
class VersionRetention:
    removed: list[str] = field(default_factory=list)  # versions dropped from the overlay
    distfiles: list[str] = field(default_factory=list)  # tarballs removed from central
    commit: str | None = None


def protected(ledger: Ledger, cp: str) -> set[str]:
    """The versions retention never removes from ``ledger``'s environment (see above)."""
    from releaser.deploy.rollback import choose_target

    keep = {ledger.current} if ledger.current else set()
    try:
        keep.update(choose_target(ledger, cp.split("/", 1)[1], None))
    except UsageError:
        pass  # nothing to roll back to
    for entry in ledger.data["nodes"].values():
        keep.add(entry.get("version"))
        attempt = entry.get("attempt") or {}
        keep.update((attempt.get("target"), attempt.get("before")))
    return {v for v in keep if v}


def retain_versions(config: Config, central: CentralRepository, env_name: str,
                    ledger: Ledger) -> VersionRetention:
    """Drop the versions of the app beyond ``keep_versions`` from ``env_name``."""
    env = config.environment(env_name)
    outcome = VersionRetention()
    if env.keep_versions <= 0:
        return outcome
    app = config.app
    keep = protected(ledger, app.cp)
    with overlay_git.checkout(central, env_name) as repo:
        pkg = Path(repo.working_tree_dir) / app.category / app.name
        offered = _offered(pkg, app.name)
        doomed = _beyond(offered, env.keep_versions, keep, ledger.current)
        if not doomed:
            return outcome
        tarballs = {v: _tarball(central, app.name, v) for v in doomed}
        for version in doomed:
            (pkg / f"{app.name}-{version}.ebuild").unlink()
        _drop_dist_entries(pkg / "Manifest", set(tarballs.values()))
        outcome.commit = overlay_git.commit_and_push(repo, _message(
            app.cp, env_name, doomed, env.keep_versions, sorted(keep, key=versioning.sort_key)))
    outcome.removed = doomed
    outcome.distfiles = _remove_unoffered(config, central, app, tarballs)
    ledger.event("versions-removed", versions=doomed, distfiles=outcome.distfiles,
                 keep_versions=env.keep_versions, commit=outcome.commit)
    return outcome


def _offered(pkg: Path, name: str) -> list[str]:
    """Versions with an ebuild in the package folder, oldest first (Portage's order)."""
    prefix, suffix = f"{name}-", ".ebuild"
    found = [p.name[len(prefix):-len(suffix)] for p in pkg.glob(f"{prefix}*{suffix}")]
    return sorted(found, key=versioning.sort_key)


def _beyond(offered: list[str], keep_versions: int, keep: set[str],
            current: str | None) -> list[str]:
    """The versions to drop: older than the ``keep_versions`` newest, and not protected."""
    def shielded(version: str) -> bool:
        newer = current is not None and versioning.compare(version, current) > 0
        return newer or any(versioning.same(version, k) for k in keep)

    return [v for v in offered[:-keep_versions] if not shielded(v)]


def _tarball(central: CentralRepository, name: str, version: str) -> str:
    from releaser.central.publish import load_published

    record = load_published(central, f"{name}-{version}")
    return record.tarball["name"] if record else f"{name}-{version}.tar.gz"


def _drop_dist_entries(manifest: Path, tarballs: set[str]) -> None:
    lines = manifest.read_text().splitlines(keepends=True)
    kept = [line for line in lines
            if not (line.startswith("DIST ") and line.split()[1] in tarballs)]
    manifest.write_text("".join(kept))


def _remove_unoffered(config: Config, central: CentralRepository, app,
                      tarballs: dict[str, str]) -> list[str]:
    """Remove the tarballs of versions no environment's overlay offers any more."""
    from releaser.deploy.status import offered_versions

    still = [v for env in config.environments
             for v in offered_versions(central, env, app.cp)]
    removed = []
    for version, tarball in tarballs.items():
        if any(versioning.same(version, v) for v in still):
            continue
        central.runner.run(["rm", "-f", "--", central.distfile(tarball)])
        removed.append(tarball)
    return removed


def _message(cp: str, env: str, doomed: list[str], keep_versions: int,
             kept: list[str]) -> str:
    return (f"{cp}: remove {', '.join(doomed)} from {env}\n\n"
            f"Retention: keep_versions = {keep_versions}; never removed: the current "
            f"version, the rollback target and what nodes run ({', '.join(kept)}).\n")
