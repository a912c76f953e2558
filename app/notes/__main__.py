"""Command line of notes: ``python -m notes`` (installed as /usr/bin/notes).

The only module that prints.  Every expected failure becomes one line on
stderr and exit status 1, because the callers are an OpenRC script and a
release pipeline that log stderr verbatim; a traceback there means a bug.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

from . import create_app
from .backup import dump, dump_backend, restore, verify_dump
from .config import Config, load_config
from .db import SQLITE, DatabaseError, read_schema_version
from .errors import NotesError
from .schema import SCHEMA_VERSION, migrate
from .store import database_stats
from .version import get_version

log = logging.getLogger("notes")

#: waitress worker threads; SQLite serialises writers anyway.
SERVE_THREADS = 4


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree: one sub-command per operation."""
    parser = argparse.ArgumentParser(prog="notes", description="Notes service and its maintenance commands.")
    parser.add_argument("--version", action="version", version=f"notes {get_version()}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML config file (default: $NOTES_CONFIG; without either, built-in defaults)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("serve", help="migrate the database, then serve HTTP with waitress")
    commands.add_parser("migrate", help="bring the database schema up to this release")
    commands.add_parser("schema-version", help="print the database's schema version")
    p = commands.add_parser("dump", help="write a verified backup of the database to OUT")
    p.add_argument("out", metavar="OUT")
    p = commands.add_parser("verify-dump", help="prove FILE is a restorable backup; print its details")
    p.add_argument("file", metavar="FILE")
    p = commands.add_parser("restore", help="verify FILE, then replace the database with it")
    p.add_argument("file", metavar="FILE")
    commands.add_parser("stats", help="print the database's schema version, notes and write "
                                      "high-water marks as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the process exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s notes[%(process)d] %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "verify-dump":
            _print_json(_verify_dump(args.file, args.config))
            return 0
        config = load_config(config_file=args.config)
        if args.command == "serve":
            return _serve(config)
        if args.command == "migrate":
            print(_migrate_message(config))
        elif args.command == "schema-version":
            print(read_schema_version(config.target))
        elif args.command == "dump":
            _print_json(dump(config.target, args.out))
        elif args.command == "restore":
            _print_json(restore(args.file, config.target))
        elif args.command == "stats":
            _print_json(database_stats(config.target))
        return 0
    except (NotesError, DatabaseError) as exc:
        print(f"notes: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"notes: error:{where} {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("notes: interrupted", file=sys.stderr)
        return 130


def _verify_dump(file: str, config_file: str | None) -> dict[str, Any]:
    """A SQLite dump needs no configuration (any host can verify it); a server dump is
    restored on the configured database's server."""
    if dump_backend(file) == SQLITE:
        return verify_dump(file)
    return verify_dump(file, load_config(config_file=config_file).target)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def _migrate_message(config: Config) -> str:
    before, after = migrate(config.target)
    if before > SCHEMA_VERSION:
        return (
            f"database {config.target}: schema {before} is ahead of this release "
            f"({SCHEMA_VERSION}); left unchanged"
        )
    if before == after:
        return f"database {config.target}: schema {after}, up to date"
    return f"database {config.target}: migrated schema {before} -> {after}"


def _serve(config: Config) -> int:
    """Migrate, then serve until SIGTERM/SIGINT; both stop cleanly with status 0."""
    import waitress  # only `serve` needs it; keeps the maintenance commands fast

    before, after = migrate(config.target)
    app = create_app(config)
    try:
        server = waitress.create_server(app, host=config.host, port=config.port, threads=SERVE_THREADS)
    except OSError as exc:
        raise NotesError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None

    migrated = f", migrated from {before}" if before != after else ""
    log.info(
        "notes %s serving on http://%s:%s (database %s, schema %s%s)",
        config.version, config.host, config.port, config.target, after, migrated,
    )
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.close()
    log.info("notes stopped")
    return 0


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    """SIGTERM (OpenRC stop) unwinds like Ctrl-C so the listening socket is closed."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
