"""``releaser db refresh TARGET --from SOURCE``: an earlier environment's database made a
complete, verified, masked copy of a later one's (``releaser.db.refresh``)."""

from __future__ import annotations

import json

import click


@click.group()
def db() -> None:
    """The environments' databases as a whole."""


@db.command("refresh")
@click.argument("target")
@click.option("--from", "source", required=True, metavar="ENV",
              help="The environment whose database is copied (it must promote from TARGET).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
@click.pass_obj
def refresh(obj, target: str, source: str, yes: bool, as_json: bool) -> None:
    """Replace TARGET's database with a verified copy of SOURCE's, masked by TARGET's
    refresh_hook before it goes live (staging --from production; never the reverse)."""
    import sys

    from releaser.db.refresh import check_direction, refresh as run_refresh
    from releaser.errors import UsageError

    config = obj.config
    check_direction(config, target, source)
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("db refresh needs confirmation: run it in a terminal or pass --yes")
        if not click.confirm(f"replace {target}'s database with a copy of {source}'s?"):
            raise UsageError("db refresh not confirmed: nothing was changed")
    report = run_refresh(config, target, source,
                         progress=(lambda _m: None) if as_json else click.echo)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    masked = "masked by refresh_hook" if report.masked else "NOT masked (no refresh_hook)"
    click.echo(f"{target} now runs on a copy of {source}'s database "
               f"({report.dump['central_path']}, rows "
               f"{report.dump['tables']}), {masked} ({report.seconds:.1f}s)")
