"""``releaser gate``: build REF and hold it to the quality gate, as ``promote --gate`` does."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.option("--ref", default="HEAD", show_default=True, help="Git ref to build and check.")
@click.option("--reports", type=click.Path(file_okay=False, path_type=Path),
              help="Where the JUnit reports go (default: [build] out/reports).")
@click.option("--allow-dirty", is_flag=True, help="Check uncommitted changes (a dirty build).")
@click.option("--json", "as_json", is_flag=True, help="Print the gate's report as JSON.")
@click.pass_obj
def gate(obj, ref: str, reports: Path | None, allow_dirty: bool, as_json: bool) -> None:
    """The app's tests (JUnit report), pkgcheck on the ebuild, the configured linters.

    Exits 8 when a step fails: what failed and why, one line each.
    """
    from releaser.build.builder import build_release
    from releaser.exitcodes import GATE_FAILED
    from releaser.gate import run_gate

    config = obj.config
    built = build_release(config, ref=ref, reuse=True, allow_dirty=allow_dirty)
    report = run_gate(config, ref=ref, release_dir=built.release_dir, reports=reports,
                      allow_dirty=allow_dirty)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for line in report.lines():
            click.echo(line)
    if not report.ok:
        raise SystemExit(GATE_FAILED)
