"""``releaser history [ENV]``: the audit log of one environment or all of them."""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("env", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the events as recorded (JSON).")
@click.option("--since", metavar="WHEN",
              help="From this moment on: an ISO date or time, or a duration ago (2h, 7d).")
@click.option("--limit", type=int, metavar="N", help="Only the newest N events.")
@click.pass_obj
def history(obj, env: str | None, as_json: bool, since: str | None, limit: int | None) -> None:
    """Every promote, rollback, node step and lock event: who, when, why, which nodes."""
    from releaser.central.repository import CentralRepository
    from releaser.deploy.history import describe, history as read_history, parse_since

    config = obj.config
    if env is not None:
        config.environment(env)  # an unknown name is refused, not shown as "nothing"
    names = [env] if env else list(config.environments)
    events = read_history(CentralRepository.from_config(config), names,
                          since=parse_since(since) if since else None, limit=limit)
    if as_json:
        click.echo(json.dumps(events, indent=2, sort_keys=True))
        return
    if not events:
        click.echo(f"no events recorded{f' in {env}' if env else ''}")
    for event in events:
        click.echo(describe(event))
