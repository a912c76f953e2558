"""Runtime configuration: one TOML file plus environment overrides.

OpenRC starts the service with ``NOTES_CONFIG`` naming a CONFIG_PROTECTed file
in /etc; tests and ad-hoc runs override single values through ``NOTES_DATABASE``,
``NOTES_HOST`` and ``NOTES_PORT`` without writing files, so the environment wins
over the file.  Every bad value is reported as a one-line ConfigError naming the
key and where it came from, because the operator reading it is usually looking
at an init script that refused to start.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .db import Target, parse_database
from .errors import ConfigError
from .version import get_version

__all__ = ["Config", "ConfigError", "load_config"]

log = logging.getLogger(__name__)

DEFAULT_DATABASE = Path("/var/lib/notes/notes.db")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080

KNOWN_KEYS = ("database", "host", "port")


@dataclass(frozen=True)
class Config:
    """Everything the app needs to run; immutable once loaded."""

    #: A SQLite file, or a server database's URL (``notes.db.parse_database``).
    database: Path | str = DEFAULT_DATABASE
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    version: str = field(default_factory=get_version)
    #: A server database's password: from ``NOTES_DATABASE_PASSWORD``, never from a file.
    password: str | None = field(default=None, repr=False)

    @property
    def target(self) -> Target:
        """The database this configuration names, with its password."""
        return parse_database(self.database, self.password)


def load_config(
    environ: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
) -> Config:
    """Build the Config from defaults, the TOML file, then environment overrides.

    ``config_file`` (the CLI's ``--config``) takes precedence over
    ``$NOTES_CONFIG``; with neither, no file is read and defaults apply.
    Empty environment variables count as unset.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}

    file_name = os.fspath(config_file) if config_file is not None else env.get("NOTES_CONFIG", "")
    if file_name:
        values.update(_read_file(Path(file_name)))

    source_env = "environment variable"
    if env.get("NOTES_DATABASE"):
        values["database"] = _parse_database(env["NOTES_DATABASE"], f"{source_env} NOTES_DATABASE", None)
    if env.get("NOTES_HOST"):
        values["host"] = _parse_host(env["NOTES_HOST"], f"{source_env} NOTES_HOST")
    if env.get("NOTES_PORT"):
        values["port"] = _parse_port(env["NOTES_PORT"], f"{source_env} NOTES_PORT")

    password = env.get("NOTES_DATABASE_PASSWORD") or None
    return Config(version=get_version(env), password=password, **values)


def _read_file(path: Path) -> dict[str, Any]:
    """Read and validate the ``[notes]`` table of one TOML file."""
    try:
        with path.open("rb") as fh:
            document = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: invalid TOML: not UTF-8") from None

    table = document.get("notes", {})
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: 'notes' must be a table ([notes]), got {type(table).__name__}")

    unknown = sorted(set(table) - set(KNOWN_KEYS))
    if unknown:
        # Tolerated, not fatal: after a rollback the older code must still start
        # with a config file written for the newer one (CONFIG_PROTECT keeps it).
        log.warning("config file %s: ignoring unknown key(s) in [notes]: %s", path, ", ".join(unknown))

    values: dict[str, Any] = {}
    if "database" in table:
        values["database"] = _parse_database(table["database"], f"config file {path}: key 'database'", path.parent)
    if "host" in table:
        values["host"] = _parse_host(table["host"], f"config file {path}: key 'host'")
    if "port" in table:
        values["port"] = _parse_port(table["port"], f"config file {path}: key 'port'")
    return values


def _parse_database(value: object, where: str, relative_to: Path | None) -> Path | str:
    """A non-empty path (relative ones in a file are relative to that file's directory),
    or a database URL (``notes.db.parse_database``), checked here so a bad one stops the start."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected a non-empty path string, got {value!r}")
    if "://" in value:
        try:
            parse_database(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        return value
    path = Path(value)
    if not path.is_absolute() and relative_to is not None:
        path = relative_to / path
    return path


def _parse_host(value: object, where: str) -> str:
    """A host name or address to bind; whitespace would only fail later, inside waitress."""
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        raise ConfigError(f"{where}: expected a host name or IP address, got {value!r}")
    return value


def _parse_port(value: object, where: str) -> int:
    """A TCP port 1-65535: an integer in TOML, a decimal string in the environment."""
    port: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        port = value
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        port = int(value.strip())
    if port is None or not 1 <= port <= 65535:
        raise ConfigError(f"{where}: expected an integer port between 1 and 65535, got {value!r}")
    return port


#: Where releaser installs the app's secrets (``releaser secrets``): one file per
#: secret, mode 0600, owned by the app's user, outside the package.
DEFAULT_SECRETS_DIR = Path("/etc/notes/secrets")


def secret(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The value of secret ``name`` (its file's text, without the final newline), or None.

    The folder is ``$NOTES_SECRETS_DIR`` or /etc/notes/secrets.  Values are never
    logged: a missing or unreadable secret is reported by name only.
    """
    env = os.environ if environ is None else environ
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"secret name {name!r}: not a file name")
    folder = Path(env.get("NOTES_SECRETS_DIR") or DEFAULT_SECRETS_DIR)
    try:
        return (folder / name).read_text(encoding="utf-8").removesuffix("\n")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"secret {name}: cannot read {folder / name}: {exc.strerror}") from None
