"""``releaser secrets set|edit|list ENV``: the app's encrypted per-environment secrets
(releaser.trust.secrets).  A value is read from stdin or typed hidden, never an argument."""

from __future__ import annotations

import json
import os
import sys

import click


@click.group()
def secrets() -> None:
    """Secrets encrypted in the app's repository, installed on the nodes at promote."""


def _store(obj):
    from releaser.trust.secrets import SecretStore

    return SecretStore(obj.config)


@secrets.command("set")
@click.argument("env")
@click.argument("name")
@click.pass_obj
def secrets_set(obj, env: str, name: str) -> None:
    """Set NAME in ENV from stdin (typed hidden on a terminal); encrypted and committed."""
    if sys.stdin.isatty():
        value = click.prompt(f"{env}/{name}", hide_input=True, confirmation_prompt=True)
    else:
        value = sys.stdin.read()
    path = _store(obj).set(env, name, value)
    click.echo(f"{env}/{name}: encrypted to {path} and committed")


@secrets.command("edit")
@click.argument("env")
@click.argument("name")
@click.pass_obj
def secrets_edit(obj, env: str, name: str) -> None:
    """Edit NAME in ENV with $VISUAL or $EDITOR (a private temporary file, removed after)."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    changed = _store(obj).edit(env, name, editor)
    click.echo(f"{env}/{name}: {'changed, encrypted and committed' if changed else 'unchanged'}")


@secrets.command("list")
@click.argument("env")
@click.option("--json", "as_json", is_flag=True, help="Print the names as JSON.")
@click.pass_obj
def secrets_list(obj, env: str, as_json: bool) -> None:
    """The names of ENV's secrets (never their values)."""
    names = _store(obj).names(env)
    if as_json:
        click.echo(json.dumps({"env": env, "secrets": names}))
        return
    for name in names:
        click.echo(name)
    if not names:
        click.echo(f"{env} has no secrets: releaser secrets set {env} NAME")
