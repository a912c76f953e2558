"""The app's contract: everything releaser expects of the application it ships.

releaser builds, installs, backs up, restores and health-checks one
application, and knows nothing else of it than what this module states.  The
demo app ``app/notes`` keeps the contract (app/README.md); any other app that
keeps it can be shipped the same way.  Values marked *configured* come from
``releaser.toml`` (validated when the configuration loads); the others are
fixed, and this module is the one place that spells them.

Source tree (``[app] subdir`` of the git repository)
    ``NAME/`` (the Python package), ``bin/NAME`` (launcher), ``etc/NAME.toml``
    (default configuration, CONFIG_PROTECTed), ``openrc/NAME.initd`` and
    ``openrc/NAME.confd``, ``README.md``: what the ebuild installs.
Python package (``[app] name``, *configured*)
    the package name ``NAME`` (PN) is an importable Python package, run as
    ``python3 -P -m NAME`` with ``PYTHONPATH`` set to the install location.
Install location
    ``/usr/lib/NAME``: the package and a ``VERSION`` file holding the PV,
    which the app reports as its version.
Service
    OpenRC's ``/etc/init.d/NAME`` (``openrc/NAME.initd``), driven with
    ``rc-service NAME ...``; it runs the app as the app's user, keeps its pid
    in ``/run/NAME.pid`` (its ``pidfile``), appends the app's output to
    ``/var/log/NAME/NAME.log`` (its ``output_log``) and migrates the database
    before it starts.  ``releaser.hosts.services`` reads exactly these: the
    exit status of ``rc-service``, the pidfile, and the log's last lines when
    the service fails.
Database (``[app] database_env``, ``database.path`` or ``database.url``, *configured*)
    the app reads its database path (or server URL) from one environment variable
    (``NAME_DATABASE`` by default); one path serves every environment, since
    the ebuild carries it (``/var/lib/NAME/NAME.db`` by default).  Dumps go to
    ``backups/`` beside the database (the ebuild keeps that folder).  A server
    database (PostgreSQL, MariaDB) is given as its URL in the same variable,
    its password in ``NAME_DATABASE_PASSWORD``; its dumps go to
    ``/var/lib/NAME/backups``.
Maintenance commands
    ``dump OUT`` writes a consistent backup of the live database;
    ``verify-dump FILE`` proves a dump restorable by restoring it into a
    scratch database (a SQLite dump needs no database; a server dump is
    restored on the configured database's server) and reports its schema
    version and rows per table (``tables``), which must match the dump's;
    ``restore FILE`` verifies, then replaces the database (service stopped).
    Each exits 0 and prints one JSON object on stdout with ``REPORT_FIELDS``
    (``integrity`` ``"ok"``; ``restore`` adds ``database``), or exits
    non-zero with its reason as the last line on stderr.  ``stats`` prints
    the live database's ``schema_version``, ``writes``, ``tables`` and
    ``migrations`` (``[{"version", "kind"}]``, kind ``additive`` or
    ``breaking``: what the rollback plan reads, ``releaser.backup.compat``)
    (read-only).  The ebuild's
    ``pkg_preinst`` runs the new version's ``dump`` before it replaces files.
Write high-water marks (optional)
    ``writes`` in those reports: per table, a number that only grows, moved
    in the same transaction as each write (the notes app: the highest id
    AUTOINCREMENT issued).  The live mark minus a dump's is what restoring
    that dump loses; an app that cannot count leaves ``writes`` out, and the
    rollback plan then says only that every later write is lost.
Health endpoint (a node's ``health_url``, or ``app_url`` + ``[app] health_path``, *configured*)
    ``GET`` answers 200 and a JSON object whose ``status`` is ``"ok"`` and
    whose ``version`` is the installed PV when the app can serve; anything
    else is "not healthy (yet)".  ``HealthFacts`` names every field read.
Schema version
    an integer the app's code expects and the database holds, reported by
    the maintenance commands (``schema_version``) and by the health answer
    (``database.schema_version``, ``database.app_schema_version``);
    releaser records it per release and rollback compares it before it
    installs older code.

The ebuild template (``ebuild_templates/ebuild.j2``) takes these values as
template variables (``AppContract.template_variables``), the backup code its
commands (``AppContract.command``, ``AppContract.environment``), the health
check its fields (``HealthFacts.read``).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any

from releaser.errors import UsageError

#: Where the init script keeps the service's pid, and appends its output (``{name}``: the app).
PIDFILE = "/run/{name}.pid"
SERVICE_LOG = "/var/log/{name}/{name}.log"

#: ``[app] health_path`` when not configured.
DEFAULT_HEALTH_PATH = "/health"

#: The maintenance commands, as ``python3 -P -m NAME COMMAND ARG``.
DUMP, VERIFY_DUMP, RESTORE, STATS = "dump", "verify-dump", "restore", "stats"
#: What each maintenance command prints (a JSON object); ``integrity`` is ``"ok"``.
REPORT_FIELDS = ("path", "size", "sha256", "schema_version", "notes", "integrity")

#: ``status`` of a health answer that can serve.
HEALTHY = "ok"

#: An environment variable name releaser may set for the app: upper case.
_ENV_VAR = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
#: Variables the app's database variable must never be: releaser, the
#: runtime or the dynamic linker give them their own meaning.
RESERVED_ENV = frozenset({"PATH", "HOME", "SHELL", "IFS", "ENV", "BASH_ENV", "PWD", "CDPATH"})
RESERVED_ENV_PREFIXES = ("PYTHON", "LD_", "PORTAGE_", "RELEASER_")
#: A URL path of plain characters (no query or fragment: the app's own endpoint).
_URL_PATH = re.compile(r"(/[A-Za-z0-9._~-]+)+/?")


def default_database_env(name: str) -> str:
    """``NAME_DATABASE`` (``notes`` -> ``NOTES_DATABASE``)."""
    return f"{name.upper()}_DATABASE"


def check_database_env(value: str) -> str:
    """``value`` if releaser may set it as the app's database variable, else ValueError."""
    if not isinstance(value, str) or not _ENV_VAR.fullmatch(value):
        raise ValueError(f"{value!r} is not an environment variable name (upper-case "
                         "letters, digits and '_', not starting with a digit)")
    if value in RESERVED_ENV or value.startswith(RESERVED_ENV_PREFIXES):
        raise ValueError(f"{value!r} has a meaning of its own to the shell, Python, the "
                         "dynamic linker, Portage or releaser; name the app's own variable")
    return value


def check_health_path(value: str) -> str:
    """``value`` if it is a plain absolute URL path (``/health``), else ValueError."""
    if not isinstance(value, str) or not _URL_PATH.fullmatch(value) or "/../" in f"{value}/" \
            or "/./" in f"{value}/":
        raise ValueError(f"{value!r} is not a URL path (/, then letters, digits and ._~- "
                         "separated by single '/', no '.' or '..' segment)")
    return value


@dataclass(frozen=True)
class AppContract:
    """The contract values of one app (see the module docstring).

    Built from ``[app]`` by ``releaser.config.AppConfig.contract``; the
    constructor checks the values again, so no bad one reaches a command.
    """

    name: str
    database_env: str = ""
    health_path: str = DEFAULT_HEALTH_PATH

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier() \
                or not self.name.isascii():
            raise UsageError(f"invalid app name {self.name!r}: the app is run as "
                             "`python3 -m NAME`, so NAME must be a Python module name")
        try:
            object.__setattr__(self, "database_env", check_database_env(
                self.database_env or default_database_env(self.name)))
            check_health_path(self.health_path)
        except ValueError as exc:
            raise UsageError(f"app {self.name}: {exc}") from None

    @property
    def password_env(self) -> str:
        """The variable the app reads a server database's password from (``NAME_DATABASE_PASSWORD``)."""
        return f"{self.database_env}_PASSWORD"

    @property
    def module(self) -> str:
        """The Python package run as ``python3 -P -m MODULE``."""
        return self.name

    @property
    def service(self) -> str:
        """The OpenRC service (``/etc/init.d/SERVICE``)."""
        return self.name

    @property
    def pidfile(self) -> str:
        """The init script's ``pidfile``: ``/run/NAME.pid``."""
        return PIDFILE.format(name=self.service)

    @property
    def service_log(self) -> str:
        """The init script's ``output_log``: ``/var/log/NAME/NAME.log``."""
        return SERVICE_LOG.format(name=self.service)

    @property
    def install_dir(self) -> str:
        """Where the ebuild installs the package: PYTHONPATH of every command."""
        return f"/usr/lib/{self.name}"

    @property
    def default_database_path(self) -> str:
        """``database.path`` when an environment does not say: ``/var/lib/NAME/NAME.db``."""
        return f"/var/lib/{self.name}/{self.name}.db"

    @staticmethod
    def dump_dir(db_path: str) -> str:
        """Where dumps go on a host: ``backups/`` beside the database (the ebuild keeps it)."""
        return posixpath.join(posixpath.dirname(db_path), "backups")

    def command(self, action: str, argument: str | None = None) -> list[str]:
        """The argv of a maintenance command (``DUMP``, ``VERIFY_DUMP``, ``RESTORE`` with
        a file, ``STATS`` without)."""
        if action not in (DUMP, VERIFY_DUMP, RESTORE, STATS) or \
                (argument is None) != (action == STATS):
            raise UsageError(f"{action!r} {argument!r} is not one of the app's maintenance "
                             "commands")
        return ["python3", "-P", "-m", self.module, action,
                *([] if argument is None else [argument])]

    def environment(self, install_dir: str, database: str | None) -> dict[str, str]:
        """The variables of a maintenance command: its code (and its database) on the host.

        Paths are as the host's runner sees them (a sandbox node prefixes its
        root); the caller passes them in the runner's ``env``, never the argv.
        """
        env = {"PYTHONPATH": install_dir}
        if database is not None:
            env[self.database_env] = database
        return env

    def health_url(self, app_url: str) -> str:
        """The health endpoint of the app answering at ``app_url``."""
        return app_url.rstrip("/") + self.health_path

    def template_variables(self) -> dict[str, str]:
        """What the ebuild template needs of the contract (``ebuild_templates/__init__.py``)."""
        return {"app_dir": self.install_dir, "module": self.module,
                "database_env": self.database_env}


@dataclass(frozen=True)
class HealthFacts:
    """What releaser reads from a health answer (a JSON object), and nothing else.

    ``{"status": "ok", "version": "1.2.0", "schema": "current",
    "database": {"schema_version": 1, "app_schema_version": 1, "error": ...}}``:
    ``status`` ``"ok"`` means it can serve; ``version`` is the installed PV;
    ``schema`` a word on the database schema (shown, not judged);
    ``database.schema_version`` what the database holds,
    ``database.app_schema_version`` what the running code expects (recorded,
    compared by rollback); ``database.error`` why it cannot serve.
    """

    ok: bool
    status: str | None
    version: str | None
    schema: str | None
    db_schema_version: int | None
    app_schema_version: int | None
    error: str | None

    @classmethod
    def read(cls, data: dict[str, Any] | None) -> "HealthFacts":
        data = data if isinstance(data, dict) else {}
        database = data.get("database")
        database = database if isinstance(database, dict) else {}
        return cls(ok=data.get("status") == HEALTHY, status=_text(data.get("status")),
                   version=_text(data.get("version")), schema=_text(data.get("schema")),
                   db_schema_version=_int(database.get("schema_version")),
                   app_schema_version=_int(database.get("app_schema_version")),
                   error=_text(database.get("error")))


def write_marks(report: dict[str, Any] | None) -> dict[str, int] | None:
    """The ``writes`` of a maintenance command's report, or None when the app gave none
    (or not as ``{"table": count >= 0}``)."""
    writes = (report or {}).get("writes")
    if not isinstance(writes, dict) or not writes or \
            not all(isinstance(k, str) and _int(v) is not None and v >= 0
                    for k, v in writes.items()):
        return None
    return dict(writes)


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


__all__ = ["AppContract", "DEFAULT_HEALTH_PATH", "DUMP", "HEALTHY", "HealthFacts", "PIDFILE",
           "REPORT_FIELDS", "RESTORE", "SERVICE_LOG", "STATS", "VERIFY_DUMP", "check_database_env",
           "check_health_path", "default_database_env", "write_marks"]
