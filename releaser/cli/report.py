"""Human-readable tables for the CLI: one row per node, the truth first."""

from __future__ import annotations

import click

from releaser.build import versions as versioning
from releaser.deploy.promote import FAILED, PromoteReport
from releaser.deploy.rollback import RollbackPlan, RollbackReport
from releaser.deploy.rollout import SKIPPED
from releaser.deploy.status import EnvStatus


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def print_promote(report: PromoteReport) -> None:
    title = "plan" if report.dry_run else "promote"
    click.echo(f"\n{title} {report.release.cpv} -> {report.env}")
    if report.publish and not report.dry_run:
        click.echo(f"  {report.publish.describe()}")
    rows = [[n.node, n.before or "-", n.after or "-", n.status.upper() if n.failed
             else n.status, f"{n.seconds:.1f}s", n.detail] for n in report.nodes]
    _table(["NODE", "BEFORE", "AFTER", "RESULT", "TIME", "DETAIL"], rows)
    if report.halted:
        click.echo(f"HALTED: {report.halted}")
    _warnings(report.warnings)
    failed = [n.node for n in report.nodes if n.status != "installed" and n.status != "unchanged"
              and n.status != "planned"]
    if report.dry_run:
        click.echo("dry run: nothing was changed")
    elif report.interrupted:
        _interrupted(report.interrupted, report.nodes)
    elif failed:
        click.echo(f"FAILED on {len(failed)} of {len(report.nodes)} node(s): {', '.join(failed)}"
                   f" ({report.seconds:.1f}s)")
    else:
        click.echo(f"{report.env} runs {report.release.version} on all "
                   f"{len(report.nodes)} node(s), healthy ({report.seconds:.1f}s)")


def _interrupted(signal: str, nodes) -> None:
    untouched = [n.node for n in nodes if n.status == SKIPPED]
    click.echo(f"INTERRUPTED by {signal}: the nodes in flight were finished; not started: "
               f"{', '.join(untouched)}; run the same command again to finish")


def _warnings(warnings: list[str]) -> None:
    """Side steps that failed after the outcome was recorded: on stderr, never lost."""
    for warning in warnings:
        click.echo(f"WARNING: {warning}", err=True)


def print_status(status: EnvStatus) -> None:
    if status.offered is None:
        offered = f"UNKNOWN ({status.overlay_error})"
    else:
        offered = ", ".join(f"{v} (masked)" if versioning.find(v, status.masked) else v
                            for v in status.offered) or "nothing"
    click.echo(f"\n{status.env}: overlay offers {offered}; environment is on "
               f"{status.current or 'nothing yet'}")
    rows = [[n.name, n.installed or "-",
             {True: "healthy", False: "UNHEALTHY", None: "-"}[n.healthy],
             f"DRIFT: {n.drift}" if n.drift else "ok", _last_change(n.last_change)]
            for n in status.nodes]
    _table(["NODE", "INSTALLED", "HEALTH", "STATE", "LAST CHANGE"], rows)
    if status.interrupted:
        i = status.interrupted
        click.echo(f"INTERRUPTED: {i.get('command')} {i.get('version') or i.get('target') or ''} "
                   f"by {i.get('signal')} at {i.get('at')} ({i.get('by')}); done: "
                   f"{', '.join(f'{k} {v}' for k, v in (i.get('done') or {}).items()) or 'none'};"
                   f" not started: {', '.join(i.get('untouched') or []) or 'none'}; run it "
                   "again to finish")
    for n in status.nodes:
        if n.in_flight:
            click.echo(f"UNFINISHED on {n.name}: an install of {n.in_flight.get('target')} "
                       f"begun {n.in_flight.get('started')} was never settled (the run was "
                       f"killed); the next promote or rollback of {status.env} finishes it")


def _last_change(change: dict | None) -> str:
    """A node's last journal entry: phase, version, when, by whom."""
    if not change:
        return "-"
    version = change.get("version") or change.get("target") or ""
    return " ".join(str(p) for p in (change.get("phase"), version, change.get("at"),
                                       f"by {change['by']}" if change.get("by") else "") if p)


def print_rollback_plan(plan: RollbackPlan) -> None:
    click.echo(f"\nrollback plan for {plan.env}: {plan.bad or '?'} -> {plan.target}"
               f"{' with database restore' if plan.restore_db else ''}")
    rows = [[n.node, n.current or "-", n.target, n.binpkg or "MISSING",
             f"{n.db_schema if n.db_schema is not None else '?'} vs "
             f"{n.target_schema if n.target_schema is not None else '?'}",
             n.verdict or "-",
             "nothing to do" if n.noop and not plan.restore_db else
             ("CANNOT: " + "; ".join(n.problems) if n.problems else
              "REFUSED without --restore-db or --force"
              if any(u.startswith(f"{n.node}: ") for u in plan.unsafe) else "ok")]
            for n in plan.nodes]
    _table(["NODE", "CURRENT", "TARGET", "PACKAGE", "SCHEMA db vs target", "DATABASE", "STATE"],
           rows)
    for n in plan.nodes:
        if n.compat:
            click.echo(f"  database: {n.node}: {n.compat}")
        for w in n.warnings:
            click.echo(f"  warning: {n.node}: {w}")


def print_rollback(report: RollbackReport) -> None:
    rows = [[n.node, n.before or "-", n.after or "-", n.status.upper() if n.status == FAILED
             else n.status, f"{n.seconds:.1f}s", n.detail] for n in report.nodes]
    _table(["NODE", "BEFORE", "AFTER", "RESULT", "TIME", "DETAIL"], rows)
    if report.masked:
        click.echo(f"{report.plan.cp}-{report.plan.bad} is masked in the {report.plan.env} overlay")
    _warnings(report.warnings)
    if report.interrupted:
        _interrupted(report.interrupted, report.nodes)
    elif report.ok:
        click.echo(f"{report.plan.env} is back on {report.plan.target} ({report.seconds:.1f}s)")
    else:
        click.echo(f"rollback INCOMPLETE ({report.seconds:.1f}s): re-run it to finish")
