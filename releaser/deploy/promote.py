"""``releaser promote ENV``: publish a release to an environment and install it
on every node of that environment with Portage.

staging (an environment with no ``promote_from``): build REF (reproducible, so
an unchanged ref gives the identical release), publish it, roll it out.

production (``promote_from = "staging"``): take a release that was healthy on
the source environment (newest by default), refuse a dirty build, copy its
ebuild, metadata.xml and Manifest entry byte for byte from the source overlay,
refusing any file whose digest is not the one recorded at build, roll it out.

Per node: sync the overlay, install ``=CAT/PN-PV``, restart the service,
health-check; what is installed is read back from the vdb, never assumed from
an exit code.  Every node's result goes to the ledger; the release becomes
*healthy* in the environment only when every node is.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from releaser.backup.compat import promote_warning
from releaser.central import ledger as ledger_mod
from releaser.central import overlay_git
from releaser.build import versions as versioning
from releaser.build.builder import build_release
from releaser.central.repository import CentralRepository
from releaser.config import Config, EnvironmentConfig
from releaser.errors import ReleaseNotFound, ReleaserError, UsageError
from releaser.deploy.interrupts import interrupted_by, record_interruption
from releaser.deploy.notify import Notifier
from releaser.deploy.fleet import STOPPED, RolloutPolicy, plan_stages, run_stages
from releaser.central.audit import Actor
from releaser.doctor import fast_check
from releaser.deploy.policy import check_policy
from releaser.central.ledger import Ledger
from releaser.central.masking import mask_version
from releaser.deploy.reinstall import sync_nodes
from releaser.central.lock import EnvironmentLock
from releaser.hosts.node import connect, shared_connections
from releaser.deploy.rollout import (FleetReport, FAILED, INSTALLED, PLANNED, ROLLED_BACK, SKIPPED, UNCHANGED, NodeOutcome,
                      NodeRollout, still_on_withdrawn)
from releaser.central.publish import PublishOutcome, ReleaseFiles, load_published, publish
from releaser.deploy.binhost_release import publish_binpkg
from releaser.build.release import Release

Progress = Callable[[str], None]

@dataclass
class PromoteReport(FleetReport):
    env: str
    release: Release
    publish: PublishOutcome | None
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.halted and all(n.status in (INSTALLED, UNCHANGED, PLANNED)
                                       for n in self.nodes)

    @property
    def rolled_back(self) -> bool:
        return any(n.status == ROLLED_BACK for n in self.nodes)

    @property
    def withdrawn(self) -> bool:
        """Rolled back and the rollout halted: the release is bad, not one node.

        A rollback within ``max_fail`` is a node's failure: the release stays
        offered, and the next promote tries that node again (also when the
        operator stopped the run, which says nothing of the release).
        """
        return self.rolled_back and bool(self.halted) and self.halted != STOPPED

    @property
    def portage_seconds(self) -> float:
        return sum(n.portage_seconds for n in self.nodes)

    @property
    def changed(self) -> bool:
        return any(n.status == INSTALLED for n in self.nodes) or bool(
            self.publish and self.publish.published)

    def to_dict(self) -> dict:
        return {"env": self.env, "version": self.release.version, "cpv": self.release.cpv,
                "ok": self.ok, "dry_run": self.dry_run, "seconds": round(self.seconds, 3),
                "halted": self.halted, "interrupted": self.interrupted,
                "rolled_back": self.rolled_back,
                "warnings": self.warnings,
                "published": bool(self.publish and self.publish.published),
                "nodes": [n.to_dict() for n in self.nodes]}


def effective_policy(env: EnvironmentConfig, **overrides) -> RolloutPolicy:
    """The environment's rollout policy with the command line's overrides."""
    base = env.policy
    values = {"concurrency": base.concurrency, "canary": base.canary,
              "batch_size": base.batch_size, "max_fail": base.max_fail}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return RolloutPolicy(**values)


def promote(config: Config, env_name: str, *, ref: str = "HEAD", version: str | None = None,
            dry_run: bool = False, progress: Progress = lambda _msg: None,
            stop: threading.Event | None = None, reason: str | None = None,
            gate: bool = False, **policy_overrides) -> PromoteReport:
    """Build or take the release, publish it, roll it out; ``stop`` once set (an
    operator's SIGINT, ``releaser.deploy.interrupts``) starts no further node.
    ``reason``: the operator's why, on every event the run records; ``gate``: the
    build passes the quality gate (``releaser.gate``) before anything is published.
    Each SSH host (central, every node) is connected once for the whole run."""
    with shared_connections(config):
        return _promote(config, env_name, ref=ref, version=version, dry_run=dry_run,
                        progress=progress, stop=stop, reason=reason, gate=gate,
                        **policy_overrides)


def _promote(config: Config, env_name: str, *, ref: str, version: str | None, dry_run: bool,
             progress: Progress, stop: threading.Event | None, reason: str | None,
             gate: bool, **policy_overrides) -> PromoteReport:
    started = time.monotonic()
    actor = Actor.here(reason)
    env = config.environment(env_name)
    policy = effective_policy(env, **policy_overrides)
    if not env.nodes:
        raise UsageError(f"environment {env_name} has no nodes configured")
    central = CentralRepository.from_config(config)
    if not dry_run:
        fast_check(config, env_name)  # central writable, room, lock: before building anything
    breaking = None  # a breaking migration this promote brings (promote_from only)
    if env.promote_from:
        if ref != "HEAD" or gate:
            raise UsageError(f"{env_name} takes releases from {env.promote_from}: give "
                             "--version, not --ref or --gate (the gate runs where it is built)")
        release, files_from = _release_from_source(config, central, env, version, progress)
        tarball = None
        breaking = promote_warning(config, env_name, release.version)
        if breaking:
            progress(f"warning: {breaking}")
    else:
        if version is not None:
            raise UsageError(f"{env_name} builds from git: give --ref, not --version")
        progress(f"build {config.app.cp} from {ref}")
        built = build_release(config, ref=ref, reuse=True, allow_dirty=env.allow_dirty)
        release, files_from, tarball = built.release, built.release_dir, built.tarball
        progress(f"  {release.cpv} from commit {release.commit[:12]}"
                 f"{' (dirty)' if release.dirty else ''}"
                 f"{': reusing the identical release already built' if built.reused else ''}")
        if release.dirty:
            progress(f"  note: a dirty build can reach {env_name} but never production")
        if gate:
            _gate(config, ref, built.release_dir, env.allow_dirty, progress)

    check_policy(env, release)
    known = Ledger.load(central, env_name)
    _refuse_downgrade(known, release)
    withdrawn = known.release(release.version) or {}
    if withdrawn.get("state") == ledger_mod.WITHDRAWN:
        where = ("is masked there" if withdrawn.get("masked", True)
                 else "its mask in the overlay failed: mask it by hand")
        raise UsageError(f"{release.cpv} was rolled back in {env_name} and {where} "
                         f"({withdrawn.get('reason', 'no reason recorded')}); release a new version")

    if dry_run:
        planned = _plan(config, central, env, release, files_from, tarball, progress, started)
        planned.warnings += [breaking] if breaking else []
        return planned

    with EnvironmentLock(central, env_name, f"promote {env_name} {release.version}",
                         lease=config.central.lock_lease) as lock, \
            Notifier(env.notify, env_name, "promote") as notifier:
        notifier.send("start", f"promoting {release.cpv} to {len(env.nodes)} node(s)",
                      version=release.version, commit=release.commit,
                      nodes=[n.name for n in env.nodes])
        if lock.taken_over:
            progress(f"took over a stale lock left by {lock.taken_over.get('user')}@"
                     f"{lock.taken_over.get('host')} pid {lock.taken_over.get('pid')}: "
                     f"{lock.taken_over.get('why')}")
        ledger = Ledger.load(central, env_name, actor)
        ledger.event("promote-start", version=release.version, commit=release.commit,
                     nodes=[n.name for n in env.nodes])
        package = (publish_binpkg(config, central, env, release, files_from, tarball, progress)
                   if env.install == "binary" else None)
        outcome = _publish(central, env, release, files_from, tarball)
        progress(outcome.describe())
        if outcome.published or not ledger.release(release.version):
            ledger.set_release(release.version, ledger_mod.PUBLISHED, commit=release.commit,
                               overlay_commit=outcome.commit)
        if package is not None:
            ledger.note_release(release.version, binpkg_sha256=package.sha256,
                                binpkg_md5=package.md5)
        ledger.save()
        report = PromoteReport(env_name, release, outcome)
        report.warnings += [breaking] if breaking else []
        work = NodeRollout(config, env, release, central, ledger, progress,
                           binpkg_md5=package.md5 if package else None)
        run = run_stages(plan_stages(list(env.nodes), policy), work, policy=policy,
                         failed=lambda o: o.failed,
                         on_stage=lambda i, stage: _stage(progress, notifier, i, stage,
                                                          release.version), stop=stop)
        report.interrupted = interrupted_by(stop, run.untouched)
        if report.interrupted:
            record_interruption(ledger, "promote", report.interrupted, run, progress,
                                version=release.version)
        report.nodes = [o for _n, o in run.results]
        report.nodes += [NodeOutcome(n.name, SKIPPED, detail=f"not touched: {run.halted}")
                         for n in run.untouched]
        report.halted = run.halted
        if run.halted:
            progress(f"rollout halted: {run.halted}")
        previous = ledger.current
        _notify_outcome(notifier, report)
        _record_outcome(ledger, report)
        stranded = report.withdrawn and still_on_withdrawn(report.nodes, release.version,
                                                           env_name, previous)
        if stranded:
            report.warnings.append(stranded)
            progress(f"warning: {stranded}")
        ledger.save()
        _side_steps(config, central, env, report, ledger, previous, progress)
        if report.withdrawn and (ledger.release(release.version) or {}).get("masked"):
            report.warnings += sync_nodes(config, env, [n.node for n in report.nodes
                                                        if n.status != SKIPPED])
        ledger.save()
        outcome_text = "healthy on every node" if report.ok else "failed"
        notifier.send("finish", f"{release.cpv} {outcome_text}", version=release.version, ok=report.ok, withdrawn=report.withdrawn,
                      nodes={n.node: n.status for n in report.nodes})
    report.warnings += notifier.problems()
    if lock.lost:
        report.warnings.append(f"lock: {lock.lost}")
    report.seconds = time.monotonic() - started
    return report


def _gate(config: Config, ref: str, release_dir: Path, allow_dirty: bool,
          progress: Progress) -> None:
    """The quality gate on the build; GateFailed (nothing published) when it fails."""
    from releaser.gate import check_gate, run_gate

    report = run_gate(config, ref=ref, release_dir=release_dir, allow_dirty=allow_dirty)
    for line in report.lines():
        progress(line)
    check_gate(report)


def _stage(progress: Progress, notifier: Notifier, index: int, stage, version: str) -> None:
    names = [n.name for n in stage]
    progress(f"stage {index + 1}: {', '.join(names)}")
    notifier.send("stage", f"stage {index + 1}: {', '.join(names)}", stage=index + 1,
                  nodes=names, version=version)


def _notify_outcome(notifier: Notifier, report: PromoteReport) -> None:
    """The rollout's halt, automatic rollbacks and interruption, as events."""
    version = report.release.version
    if report.halted:
        notifier.send("halt", f"rollout of {version} halted: {report.halted}",
                      version=version, reason=report.halted)
    rolled = [n.node for n in report.nodes if n.status == ROLLED_BACK]
    if rolled:
        notifier.send("auto-rollback", f"{version} rolled back on {', '.join(rolled)}",
                      version=version, nodes=rolled)
    if report.interrupted:
        notifier.send("interrupted", f"promote of {version} interrupted", version=version,
                      interrupted=report.interrupted)


def _refuse_downgrade(ledger: Ledger, release: Release) -> None:
    """Promote only goes forward: an older version goes back with ``rollback --to``,
    which checks the database schema against it and offers the dumps; a promote
    would install it over a newer schema without a word."""
    current = ledger.current
    if current is not None and versioning.compare(release.version, current) < 0:
        raise UsageError(f"{release.cpv} is older than {current}, which {ledger.env} runs: "
                         f"promote never goes back; roll back with `releaser rollback "
                         f"{ledger.env} --to {release.version}` (it checks the schema and "
                         "the database dumps first)")


def _record_outcome(ledger: Ledger, report: PromoteReport) -> None:
    """What the rollout established: healthy and current, withdrawn, or failed.

    Recorded and saved before any side step (mask, retention) runs, so a
    side step that fails cannot lose it.
    """
    release = report.release
    if report.ok:
        nodes = [n.node for n in report.nodes]
        ledger.set_release(release.version, ledger_mod.HEALTHY, nodes=nodes)
        ledger.set_current(release.version, "promote", nodes=nodes)
    elif report.withdrawn:
        ledger.set_release(release.version, ledger_mod.WITHDRAWN, reason=_withdrawn_reason(report),
                           masked=False, nodes=[n.node for n in report.nodes
                                                if n.status == ROLLED_BACK])
    elif report.interrupted:
        ledger.set_release(release.version, ledger_mod.INTERRUPTED,
                           interrupted_by=report.interrupted)
    else:
        failed = [n.node for n in report.nodes if n.failed]
        ledger.set_release(release.version, ledger_mod.FAILED, failed_nodes=failed, nodes=failed)


def _withdrawn_reason(report: PromoteReport) -> str:
    nodes = ", ".join(n.node for n in report.nodes if n.status == ROLLED_BACK)
    return (f"{report.release.version} failed in {report.env} ({nodes}: install, start or "
            "health check) and was rolled back automatically")


def _side_steps(config: Config, central: CentralRepository, env: EnvironmentConfig,
                report: PromoteReport, ledger: Ledger, previous: str | None,
                progress: Progress) -> None:
    """Mask a withdrawn release, or prune old backups and versions after a healthy one.

    The outcome is already saved: a failure here is reported (and recorded in
    the ledger's events), never allowed to undo it.
    """
    release = report.release
    if report.withdrawn:
        reason = _withdrawn_reason(report)
        failure = ledger.side_step("mask", lambda: mask_version(
            central, env.name, release.cp, release.version, reason))
        if failure is None:
            ledger.note_release(release.version, masked=True)
            progress(f"{release.cpv} masked in the {env.name} overlay: {reason}")
        else:
            failure += (f"; {release.cpv} is withdrawn in the ledger but still offered by the "
                        "overlay: mask it by hand")
    elif report.ok:
        failures = [ledger.side_step("retention", lambda: _retain(
            central, env, {release.version, previous} - {None}, progress)),
            ledger.side_step("version retention", lambda: _retain_versions(
                config, central, env.name, ledger, progress))]
        failure = "; ".join(f for f in failures if f) or None
    else:
        return
    if failure is not None:
        report.warnings.append(failure)
        progress(f"warning: {failure}")


def _publish(central, env: EnvironmentConfig, release: Release, files_from, tarball):
    if isinstance(files_from, Path):
        files = ReleaseFiles(release, files_from)
        return publish(central, env.name, env.overlay, files, tarball)
    with overlay_git.checkout(central, files_from) as source:
        pkg = Path(source.working_tree_dir) / release.category / release.name
        return publish(central, env.name, env.overlay, ReleaseFiles(release, pkg), tarball)


def _release_from_source(config: Config, central, env: EnvironmentConfig, version, progress):
    source = env.promote_from
    ledger = Ledger.load(central, source)
    withdrawn = set(ledger.versions(ledger_mod.WITHDRAWN))
    healthy = [v for v in ledger.ever_healthy() if v not in withdrawn]
    if version is not None:
        versioning.validate(version)
        known = ledger.spelling(version)
        if known is None:
            raise ReleaseNotFound(f"{config.app.name}-{version} was never published to {source}")
        version = known  # as published (Portage's equality: 1.00.50 is 1.0.50)
        if version in withdrawn:
            raise UsageError(f"{config.app.name}-{version} was rolled back in {source} "
                             f"({ledger.release(version).get('reason', 'no reason recorded')})")
        skip = config.exception_for("skip-staging", env.name)
        if version not in healthy and skip is None:
            raise UsageError(f"{config.app.name}-{version} was never healthy on {source}; "
                             f"promote it there first")
        if version not in healthy:
            progress(f"warning: {config.app.name}-{version} was never healthy on {source}; "
                     f"taken anyway under the exception: {skip.describe()}")
    elif not healthy:
        raise UsageError(f"nothing has been healthy on {source} yet: promote {source} first")
    else:
        version = healthy[-1]
    release = load_published(central, f"{config.app.name}-{version}")
    if release is None:
        raise ReleaseNotFound(f"no release record for {config.app.name}-{version} on the "
                              "central repository")
    if release.dirty:
        raise UsageError(f"{release.cpv} is a dirty build (uncommitted changes); "
                         f"{env.name} never takes one")
    if version in healthy:
        progress(f"{release.cpv} was healthy on {source}; promoting it to {env.name}")
    return release, source


def _plan(config, central, env, release, files_from, tarball, progress, started) -> PromoteReport:
    """What promote would do, touching nothing (no lock, no publish, no install)."""
    outcome = None
    if isinstance(files_from, Path):
        outcome = publish(central, env.name, env.overlay, ReleaseFiles(release, files_from),
                          tarball, dry_run=True)
    progress(f"plan: publish {release.cpv} to {env.name} (if not already there)")
    report = PromoteReport(env.name, release, outcome, dry_run=True)
    for node_cfg in env.nodes:
        node = connect(config, node_cfg)
        try:
            before = node.installed_version(config.app.cp)
        except ReleaserError as exc:
            report.nodes.append(NodeOutcome(node_cfg.name, FAILED, detail=str(exc)))
            continue
        finally:
            node.close()
        if versioning.same(before, release.version):
            action = "already runs it: health check only"
        else:
            action = f"sync, emerge ={release.cpv}, restart, health check"
        progress(f"plan: {node_cfg.name}: {before or 'nothing'} -> {release.version}: {action}")
        report.nodes.append(NodeOutcome(node_cfg.name, PLANNED, before=before,
                                        after=release.version, detail=action))
    report.seconds = time.monotonic() - started
    return report


def _retain_versions(config: Config, central: CentralRepository, env: str, ledger: Ledger,
                     progress: Progress) -> None:
    """Old versions leave the overlay and the distfile store (``keep_versions``)."""
    from releaser.deploy.version_retention import retain_versions

    done = retain_versions(config, central, env, ledger)
    if done.removed:
        progress(f"retention: removed {', '.join(done.removed)} from the {env} overlay"
                 + (f" and {len(done.distfiles)} tarball(s)" if done.distfiles else ""))


def _retain(central: CentralRepository, env: EnvironmentConfig, protect: set[str],
            progress: Progress) -> None:
    """Keep the last ``keep_backups`` packages and dumps; never the running one or the target."""
    from releaser.backup import apply_retention

    removed = apply_retention(central, env.name, env.policy.keep_backups, protect)
    if removed:
        progress(f"retention: removed {len(removed)} old backup(s) of {env.name}")
