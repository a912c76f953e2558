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

from releaser import __version__
from releaser.errors import ReleaserError


class _Context:
    def __init__(self, config_path: str | None):
        self.config_path = config_path
        self._config = None

    @property
    def config(self):
        from releaser.config import load_config

        if self._config is None:
            self._config = load_config(self.config_path)
            # Every run shows the protections it runs without (releaser.config.exceptions).
            for exception in self._config.exceptions:
                click.echo(f"releaser: security exception: {exception.describe()}", err=True)
        return self._config

    def changing(self, env: str):
        """The configuration, for a command that publishes to or installs ``env``: refused
        (exit 2, one line) when ``env``'s overlay would be unsigned without a documented
        exception (``releaser.trust.keys.require_signing``), before anything runs."""
        from releaser.trust.keys import require_signing

        config = self.config
        config.environment(env)  # an unknown environment is named as such first
        require_signing(config, env)
        return config


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
    from releaser.build.builder import build_release

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


def _reason(value: str | None) -> str | None:
    """``--reason``, checked before anything runs (one line, recorded in the ledger)."""
    from releaser.config import validate
    from releaser.errors import UsageError

    if value is None:
        return None
    try:
        return validate.reason(value)
    except validate.Invalid as exc:
        raise UsageError(f"--reason: {exc}") from None


def _progress(quiet: bool):
    import time

    start = time.monotonic()

    def show(message: str) -> None:
        if not quiet:
            click.echo(f"[{time.monotonic() - start:6.1f}s] {message}", err=True)
    return show


@cli.command()
@click.argument("env")
@click.option("--ref", default="HEAD", show_default=True, help="Git ref to build (first environment).")
@click.option("--version", "version", help="Version to promote (later environments; default: newest healthy).")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing anywhere.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
@click.option("--concurrency", type=int, help="Nodes worked on at once (default: policy).")
@click.option("--canary", type=int, help="Nodes of the first stage; any failure there halts.")
@click.option("--batch-size", help="Nodes per batch after the canary: a count, a percentage of "
              "the nodes (25%), 0: all at once (default: policy).")
@click.option("--max-fail", help="Failures tolerated: a count in all (2), or a share of each "
              "batch (25%); exceeding it halts.")
@click.option("--reason", metavar="WHY", help="Why: recorded with every event of the run.")
@click.option("--gate", "gate", is_flag=True,
              help="Hold the build to the quality gate ([gate]) before publishing it.")
@click.pass_obj
def promote(obj: _Context, env: str, ref: str, version: str | None, dry_run: bool,
            as_json: bool, quiet: bool, concurrency: int | None, canary: int | None,
            batch_size: str | None, max_fail: str | None, reason: str | None,
            gate: bool) -> None:
    """Publish a release to ENV and install it on every node of ENV."""
    from releaser.exitcodes import INTERRUPTED, PROMOTE_FAILED, ROLLED_BACK
    from releaser.deploy.promote import promote as run_promote
    from releaser.cli.report import print_promote
    from releaser.cli.signals import stop_on_signals

    with stop_on_signals() as stop:
        report = run_promote(obj.changing(env), env, ref=ref, version=version, dry_run=dry_run,
                             progress=_progress(quiet or as_json), concurrency=concurrency,
                             canary=canary, batch_size=batch_size, max_fail=max_fail,
                             stop=stop, reason=_reason(reason), gate=gate)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        print_promote(report)
    if report.interrupted:
        raise SystemExit(INTERRUPTED)
    if report.rolled_back:
        raise SystemExit(ROLLED_BACK)
    if not report.ok:
        raise SystemExit(PROMOTE_FAILED)


@cli.command()
@click.argument("env")
@click.option("--to", "to", help="Version to roll back to (default: the previous healthy one).")
@click.option("--restore-db", is_flag=True, help="Also restore the database dump taken while it ran.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--force", "force_reason", metavar="REASON",
              help="Roll back the nodes that can, although some cannot; REASON is recorded.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
@click.option("--reason", metavar="WHY", help="Why: recorded with every event of the rollback.")
@click.pass_obj
def rollback(obj: _Context, env: str, to: str | None, restore_db: bool, yes: bool,
             dry_run: bool, force_reason: str | None, as_json: bool, reason: str | None) -> None:
    """Put ENV back on the previous healthy version (or --to), from binary packages."""
    from releaser.hosts.node import shared_connections

    config = obj.changing(env)
    reason = _reason(reason)
    # One connection per host for the plan and the rollback: a dropped idle
    # connection (a long confirmation) is opened again on its next command.
    with shared_connections(config):
        _rollback(config, env, to, restore_db, yes, dry_run, force_reason, as_json, reason)


def _rollback(config, env: str, to: str | None, restore_db: bool, yes: bool, dry_run: bool,
              force_reason: str | None, as_json: bool, reason: str | None) -> None:
    import sys as _sys

    from releaser.errors import UsageError
    from releaser.exitcodes import PROMOTE_FAILED
    from releaser.central.repository import CentralRepository
    from releaser.cli.report import print_rollback, print_rollback_plan
    from releaser.deploy.rollback import execute_rollback, plan_rollback

    central = CentralRepository.from_config(config)
    plan = plan_rollback(config, central, env, to=to, restore_db=restore_db)
    if not as_json:
        print_rollback_plan(plan)
    if dry_run:
        if as_json:
            click.echo(json.dumps(plan.to_dict(), indent=2))
        click.echo("dry run: nothing was changed", err=True)
        return
    if not yes:
        if not _sys.stdin.isatty():
            raise UsageError("rollback needs confirmation: run it in a terminal or pass --yes")
        if not click.confirm(f"roll {env} back to {plan.target}?"):
            # A "no" is an answer, not an interruption: exit 2, as for other input.
            raise UsageError("rollback not confirmed: nothing was changed")
    from releaser.cli.signals import stop_on_signals
    from releaser.exitcodes import INTERRUPTED

    with stop_on_signals() as stop:
        report = execute_rollback(config, central, plan, force_reason=force_reason,
                                  progress=_progress(as_json), stop=stop, reason=reason)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        print_rollback(report)
    if report.interrupted:
        raise SystemExit(INTERRUPTED)
    if not report.ok:
        raise SystemExit(PROMOTE_FAILED)


@cli.group()
def backups() -> None:
    """Binary packages and database dumps kept for rollback."""


@backups.command("list")
@click.argument("env")
@click.pass_obj
def backups_list(obj: _Context, env: str) -> None:
    """List ENV's binary packages and verified dumps on the central repository."""
    from releaser.backup import format_backups, list_backups
    from releaser.central.repository import CentralRepository

    obj.config.environment(env)
    click.echo(format_backups(list_backups(CentralRepository.from_config(obj.config), env)))


@cli.command()
@click.argument("env", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def status(obj: _Context, env: str | None, as_json: bool) -> None:
    """Per node: the installed version (from its vdb) next to what the overlay offers."""
    from releaser.exitcodes import DRIFT, FAILURE
    from releaser.central.repository import CentralRepository
    from releaser.cli.report import print_status
    from releaser.deploy.status import environment_status

    config = obj.config
    names = [env] if env else list(config.environments)
    central = CentralRepository.from_config(config)
    statuses = [environment_status(config, central, name) for name in names]
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in statuses], indent=2))
    else:
        for s in statuses:
            print_status(s)
    if any(s.overlay_error for s in statuses):
        raise SystemExit(FAILURE)  # an overlay could not be read: the answer is incomplete
    if any(s.drifted for s in statuses):
        raise SystemExit(DRIFT)


@cli.group()
def central() -> None:
    """The central repository: distfiles, overlays, backups, ledger, locks."""


@central.command("init")
@click.pass_obj
def central_init(obj: _Context) -> None:
    """Create the central repository at [central] path (nothing else creates one)."""
    from releaser.central.repository import CentralRepository

    config = obj.config
    repo = CentralRepository.from_config(config, must_exist=False)
    created = repo.init()
    host = f" on {config.central.address}" if config.central.address else ""
    click.echo(f"central repository {'created' if created else 'already exists'} at "
               f"{repo.root}{host}")


@cli.group()
def lock() -> None:
    """An environment's lock: who holds it and why; maintenance windows; breaking it."""


def _env_central(obj: _Context, env: str):
    from releaser.central.repository import CentralRepository

    obj.config.environment(env)
    return CentralRepository.from_config(obj.config)


@lock.command("status")
@click.argument("env")
@click.option("--json", "as_json", is_flag=True, help="Print the owner record as JSON.")
@click.pass_obj
def lock_status_cmd(obj: _Context, env: str, as_json: bool) -> None:
    """Who holds ENV's lock, since when, why, and until when its lease runs."""
    from releaser.central.lock import describe, lock_status

    owner = lock_status(_env_central(obj, env), env)
    if as_json:
        public = None if owner is None else {k: v for k, v in owner.items() if k != "token"}
        click.echo(json.dumps(public, indent=2, sort_keys=True))
    elif owner is None:
        click.echo(f"{env}: not locked")
    else:
        stale = f" (stale: {owner['stale']}; the next run takes it over)" if owner["stale"] else ""
        click.echo(f"{env}: locked by {describe(owner)}{stale}")


@lock.command("acquire")
@click.argument("env")
@click.option("-m", "--message", "--reason", "message", required=True,
              help="Why: shown to anyone the lock stops, and recorded.")
@click.option("--lease", default="1h", show_default=True,
              help="How long the window lasts (seconds, or 30m, 2h, 1d).")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the lock's token here, to release it from another account or host.")
@click.pass_obj
def lock_acquire(obj: _Context, env: str, message: str, lease: str,
                 token_file: Path | None) -> None:
    """Hold ENV's lock for a maintenance window: promote and rollback are refused until
    it is released or its lease ends."""
    from releaser.central.lock import EnvironmentLock
    from releaser.config import validate
    from releaser.errors import UsageError
    from releaser.files import write_atomic

    try:
        seconds = validate.duration(lease)
    except validate.Invalid as exc:
        raise UsageError(f"--lease: {exc}") from None
    if not message.strip() or not message.isprintable():
        raise UsageError("--message must be one non-empty line")
    held = EnvironmentLock(_env_central(obj, env), env, f"lock acquire {env}", lease=seconds,
                           message=message, maintenance=True).acquire()
    if token_file is not None:
        write_atomic(token_file, held.token + "\n", perm=0o600)
    click.echo(f"{env}: locked for {lease}: {message}")


@lock.command("release")
@click.argument("env")
@click.option("--break", "reason", metavar="REASON",
              help="Break someone else's lock (a live run's too); the reason is recorded.")
@click.option("--token-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The token file lock acquire wrote.")
@click.pass_obj
def lock_release(obj: _Context, env: str, reason: str | None, token_file: Path | None) -> None:
    """Release your own maintenance window on ENV, or --break another's lock."""
    from releaser.central.lock import break_lock, describe, release_own

    central = _env_central(obj, env)
    if reason is not None:
        owner = break_lock(central, env, reason)
        click.echo(f"{env}: broke the lock of "
                   f"{describe(owner) if owner else 'unknown owner'} ({reason})")
        return
    token = token_file.read_text().strip() if token_file else None
    owner = release_own(central, env, token)
    click.echo(f"{env}: released ({owner.get('message') or owner.get('command')})")


@cli.group()
def host() -> None:
    """The hosts of an environment: prepare them to take releases."""


@host.command("bootstrap")
@click.argument("env")
@click.argument("nodes", nargs=-1)
@click.option("--dry-run", is_flag=True, help="Print what would change; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
@click.pass_obj
def host_bootstrap(obj: _Context, env: str, nodes: tuple[str, ...], dry_run: bool,
                   as_json: bool, quiet: bool) -> None:
    """Prepare ENV's nodes (or only NODES): overlay repos.conf, make.conf, app user, folders.

    Idempotent: a second run changes nothing and says so.  A host that fails the
    preflight (Portage, git, python3, the app's dependencies, free disk) is
    left as it was, with the reason.
    """
    from releaser.exitcodes import FAILURE
    from releaser.hosts.bootstrap import bootstrap

    report = bootstrap(obj.changing(env), env, nodes, dry_run=dry_run,
                       progress=_progress(quiet or as_json))
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for line in report.describe():
            click.echo(line)
    if not report.ok:
        raise SystemExit(FAILURE)


@cli.group()
def sandbox() -> None:
    """A local sandbox fleet: central repository, HTTP server, node roots."""


@sandbox.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--nodes", "nodes_spec", default="staging=2,production=2", show_default=True,
              help="Nodes per environment, ENV=COUNT,...")
@click.option("--source", type=click.Path(file_okay=False, path_type=Path),
              help="Git repository of the app (default: the config's [app] source).")
@click.option("--ssh", is_flag=True,
              help="Reach every node and the central repository through its own real sshd.")
@click.option("--hosts", type=click.Choice(["dir", "lxc"]), default="dir", show_default=True,
              help="dir: every node a folder of this machine; lxc: every node an LXC "
                   "container (OpenRC, sshd, its own address), prepared by host bootstrap.")
@click.option("--db", type=click.Choice(["sqlite", "postgresql", "mariadb"]), default="sqlite",
              show_default=True,
              help="The app's database: a SQLite file per node, or a server of the sandbox's "
                   "own with a database per environment (stopped by `sandbox down`).")
@click.option("--unsigned", is_flag=True,
              help="Unsigned overlays, written into DIRECTORY/releaser.toml as an "
                   "unsigned-overlay exception (default: a [trust] keyring in DIRECTORY/gnupg "
                   "with a release key per environment, verified by every node, --hosts lxc "
                   "too; README: Trust).")
@click.pass_obj
def sandbox_init(obj: _Context, directory: Path, nodes_spec: str, source: Path | None,
                 ssh: bool, hosts: str, db: str, unsigned: bool) -> None:
    """Create a sandbox fleet under DIRECTORY and write DIRECTORY/releaser.toml."""
    from releaser.sandbox.world import init_sandbox, ordered_environments, parse_nodes

    nodes = parse_nodes(nodes_spec)
    app = _app_config(obj, source)
    path = init_sandbox(directory, app, nodes, progress=_progress(False), ssh=ssh, hosts=hosts,
                        db=db, trust=not unsigned)
    if db != "sqlite":
        from releaser.sandbox.dbserver import PASSWORD_FILE

        click.echo(f"the database password is releaser's {app.contract.password_env}: "
                   f"export {app.contract.password_env}=\"$(cat "
                   f"{path.parent / PASSWORD_FILE})\"")
    click.echo(f"sandbox ready: releaser -c {path} promote {ordered_environments(nodes)[0]}")


def _app_config(obj: _Context, source: Path | None):
    import dataclasses

    from releaser.errors import ConfigError

    try:
        app = obj.config.app
    except ConfigError:
        if obj.config_path:
            raise
        from releaser.sandbox.world import default_app

        app = default_app()
    if source is not None:
        app = dataclasses.replace(app, source=source.resolve())
    return app


@sandbox.command("down")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def sandbox_down(directory: Path) -> None:
    """Stop what `sandbox init` and later runs started under DIRECTORY."""
    from releaser.sandbox.world import down_sandbox

    down_sandbox(directory, progress=_progress(False))


@sandbox.group("vagrant")
def sandbox_vagrant() -> None:
    """The developers' Vagrant boxes (Vagrantfile, vagrant/): the box and its triggers."""


@sandbox_vagrant.command("build-box")
@click.option("--no-add", is_flag=True, help="Only build (or find) the box file; no `vagrant box add`.")
def sandbox_vagrant_build_box(no_add: bool) -> None:
    """Build the LXC box from the hosts' cached image (skipped when unchanged) and add it."""
    from releaser.sandbox.vagrant_box import BOX_NAME, add_box, ensure_box

    box = ensure_box(_progress(False))
    if not no_add:
        add_box(box, BOX_NAME, _progress(False))
    click.echo(str(box))


@sandbox_vagrant.command("prepare")
@click.option("--lxc-net", is_flag=True, help="Start LXC's bridge (lxc-net) if it is not up.")
@click.option("--serve", is_flag=True, help="Start the central HTTP server on the bridge address.")
@click.pass_obj
def sandbox_vagrant_prepare(obj: _Context, lxc_net: bool, serve: bool) -> None:
    """Keys, known_hosts, central repository and overlays the boxes need (idempotent)."""
    from releaser.sandbox.vagrant_dev import prepare

    prepare(obj.config, lxc_net=lxc_net, serve=serve, progress=_progress(False))


@sandbox_vagrant.command("down")
@click.pass_obj
def sandbox_vagrant_down(obj: _Context) -> None:
    """Stop the central HTTP server, and LXC's bridge if prepare started it."""
    from releaser.sandbox.vagrant_dev import down

    down(obj.config, progress=_progress(False))


@cli.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Where to create the sandbox (default: a new temporary folder).")
@click.option("--keep", is_flag=True, help="Leave the sandbox running at the end.")
@click.pass_obj
def demo(obj: _Context, directory: Path | None, keep: bool) -> None:
    """The whole pipeline on a local sandbox fleet: two releases through staging and production."""
    from releaser.sandbox.demo import run_demo

    run_demo(directory, project=Path.cwd(), keep=keep, echo=click.echo)


from releaser.cli.doctor import doctor  # noqa: E402  (command modules of their own)
from releaser.cli.gate import gate  # noqa: E402
from releaser.cli.history import history  # noqa: E402

cli.add_command(history)
cli.add_command(doctor)
cli.add_command(gate)

from releaser.cli.keys import keys  # noqa: E402  (the release keys, releaser.trust)

cli.add_command(keys)

from releaser.cli.secrets import secrets  # noqa: E402  (releaser.trust.secrets)

cli.add_command(secrets)

from releaser.cli.db import db  # noqa: E402  (releaser.db: refresh)

cli.add_command(db)


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
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("releaser: interrupted", err=True)
        return 130
    except OSError as exc:
        # A full disk, a read-only or vanished directory: the system's reason, in one line.
        click.echo(f"releaser: error: {_os_error(exc)}", err=True)
        return 1
    return 0


def _os_error(exc: OSError) -> str:
    """``[Errno 28] No space left on device: '/x'`` as ``/x: No space left on device``."""
    reason = exc.strerror or str(exc)
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    return f"{' -> '.join(names)}: {reason}" if names else reason


if __name__ == "__main__":
    sys.exit(main())
