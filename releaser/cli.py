"""The command line: thin click commands over the core.

This is the one place where exceptions become messages and exit codes:
a ``ReleaserError`` prints ``releaser: error: <one line>`` on stderr and exits
with its ``exit_code``; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import __version__
from .errors import ReleaserError


class _Context:
    def __init__(self, config_path: str | None):
        self.config_path = config_path
        self._config = None

    @property
    def config(self):
        from .config import load_config

        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="releaser")
@click.option("-c", "--config", "config_path", envvar="RELEASER_CONFIG", metavar="FILE",
              help="Configuration file (default: ./releaser.toml; env RELEASER_CONFIG).")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Build, publish, promote and roll back releases on fleets of Gentoo hosts."""
    ctx.obj = _Context(config_path)


@cli.command()
@click.option("--ref", default="HEAD", show_default=True, help="Git ref to build.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
              help="Output directory (default: [build] out of the config).")
@click.option("--build-number", type=click.IntRange(min=0), help="CI build number to record.")
@click.option("--allow-dirty", is_flag=True, help="Build uncommitted changes; production refuses such a build.")
@click.option("--json", "as_json", is_flag=True, help="Print the release record as JSON.")
@click.pass_obj
def build(obj: _Context, ref: str, out: Path | None, build_number: int | None,
          allow_dirty: bool, as_json: bool) -> None:
    """Build the tarball, ebuild and Manifest of REF."""
    from .build import build_release

    result = build_release(obj.config, ref=ref, out=out, build_number=build_number,
                           allow_dirty=allow_dirty)
    if as_json:
        click.echo(result.release.to_json(), nl=False)
    else:
        r = result.release
        click.echo(f"built {r.cpv} from {r.commit[:12]}"
                   f"{' (DIRTY)' if r.dirty else ''} in {result.seconds:.2f}s")
        click.echo(f"  tarball  {result.tarball}  {r.tarball['size']} bytes")
        click.echo(f"  ebuild   {result.release_dir / r.ebuild['name']}")
        click.echo(f"  record   {result.release_dir / 'release.json'}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, mapping releaser errors to one line and an exit code."""
    try:
        cli.main(args=argv, prog_name="releaser", standalone_mode=False)
    except ReleaserError as exc:
        click.echo(f"releaser: error: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("releaser: aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("releaser: interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
