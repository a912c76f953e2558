"""``releaser doctor [ENV]``: is the environment ready?  One line per finding, with its fix."""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("env", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--fast", is_flag=True, help="Only configuration, central and lock (what "
              "promote checks first); no node is contacted.")
@click.pass_obj
def doctor(obj, env: str | None, as_json: bool, fast: bool) -> None:
    """Check ENV (or every environment): configuration, central, lock, leftovers, nodes.

    Exits 7 when a finding blocks (the environment is not ready), 2 when the
    configuration itself is invalid.
    """
    from releaser.doctor import diagnose
    from releaser.errors import ConfigError
    from releaser.exitcodes import BAD_INPUT, NOT_READY

    try:
        config = obj.config
    except ConfigError as exc:
        click.echo(f"NOT READY: configuration: {exc}; fix: correct it and run doctor again")
        raise SystemExit(BAD_INPUT) from None
    names = [env] if env else list(config.environments)
    diagnoses = [diagnose(config, name, nodes=not fast) for name in names]
    if as_json:
        click.echo(json.dumps([d.to_dict() for d in diagnoses], indent=2))
    else:
        click.echo(f"ok: configuration {config.path}")
        for d in diagnoses:
            for line in d.lines():
                click.echo(line)
    if not all(d.ready for d in diagnoses):
        raise SystemExit(NOT_READY)
