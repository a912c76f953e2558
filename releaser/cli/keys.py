"""``releaser keys init|list|rotate|retire``: the per-environment release keys (releaser.trust)."""

from __future__ import annotations

import json

import click


@click.group()
def keys() -> None:
    """The release keys that sign each environment's overlay commits."""


def _keyring(obj):
    from releaser.trust.keys import Keyring

    return Keyring.from_config(obj.config)


@keys.command("init")
@click.argument("env")
@click.pass_obj
def keys_init(obj, env: str) -> None:
    """Make ENV's release key; then `releaser host bootstrap ENV` gives it to the nodes."""
    obj.config.environment(env)
    fpr = _keyring(obj).init(env)
    click.echo(f"created the {env} release key {fpr}")
    click.echo(f"next: releaser host bootstrap {env} (its nodes then verify every overlay "
               "commit with it)")


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the keys as JSON.")
@click.pass_obj
def keys_list(obj, as_json: bool) -> None:
    """Every environment's keys: active (signs), verify (nodes still accept it), retired."""
    found = _keyring(obj).keys()
    if as_json:
        click.echo(json.dumps([k.to_dict() for k in found], indent=2))
        return
    if not found:
        click.echo("no release keys: releaser keys init ENV")
    for key in found:
        click.echo(f"{key.env:<12} {key.status:<8} {key.fingerprint}  created {key.created}")


@keys.command("rotate")
@click.argument("env")
@click.pass_obj
def keys_rotate(obj, env: str) -> None:
    """A new key signs ENV's commits; nodes keep accepting the old one until `keys retire`."""
    obj.config.environment(env)
    new, old = _keyring(obj).rotate(env)
    click.echo(f"{env}: {new} signs from now on; {old} is still accepted by the nodes")
    click.echo(f"next: releaser host bootstrap {env} (gives the nodes both keys), then "
               f"releaser keys retire {env} and bootstrap again")


@keys.command("retire")
@click.argument("env")
@click.pass_obj
def keys_retire(obj, env: str) -> None:
    """End ENV's rotation: the nodes are given only the active key from the next bootstrap."""
    obj.config.environment(env)
    gone = _keyring(obj).retire(env)
    if not gone:
        click.echo(f"{env}: no rotation under way; nothing retired")
        return
    click.echo(f"{env}: retired {', '.join(gone)}")
    click.echo(f"next: releaser host bootstrap {env} (its nodes then refuse commits the "
               "retired key signed)")
