"""Is the database still compatible with an older release?  The rollback plan's verdict.

The app records every migration it applied with its kind (``releaser.appcontract``:
``stats`` prints ``migrations``, each ``additive`` or ``breaking``), so the
live database itself says what happened to it since the release a rollback
goes back to, whatever code runs now:

* every migration since the target's schema is additive (expand: the older
  code still works on it): **safe without restore**, and the rollback keeps
  every row written since the upgrade (pgroll's and Reshape's "rollback is an
  abort");
* one of them is breaking (contract, destructive): **needs --restore-db**,
  and a restore of the dump taken while the target ran loses what was
  written since: the dump's time, and rows per table where the app counts
  them (its write marks);
* breaking, and no dump that brings the schema back to one the target can
  use: **no dump: cannot restore**.

A migration the database did not record (applied before it kept a record)
counts as breaking: the plan never says "safe" on a guess.  Nothing here
touches a node; ``assess`` is pure, the callers gather its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from releaser.backup.common import DumpBackup
from releaser.config import Config
from releaser.errors import ReleaserError

SAFE = "safe without restore"
NEEDS_RESTORE = "needs --restore-db"
NO_DUMP = "no dump: cannot restore"
#: Neither the database's schema nor the target's is known: nothing to judge.
UNKNOWN = "unknown"
ADDITIVE, BREAKING = "additive", "breaking"


@dataclass(frozen=True)
class Compatibility:
    """The verdict for one node's database against a rollback target."""

    verdict: str
    db_schema: int | None
    target_schema: int | None
    #: ``{"version", "kind"}`` of every migration since the target's schema.
    since: list[dict] = field(default_factory=list)
    dump: DumpBackup | None = None
    #: Rows per table written since the dump (what a restore loses); None: unknown.
    loses: dict[str, int] | None = None

    @property
    def breaking(self) -> list[int]:
        return [m["version"] for m in self.since if m["kind"] != ADDITIVE]

    @property
    def unsafe(self) -> bool:
        """The target's code cannot run on this database as it is."""
        return self.verdict in (NEEDS_RESTORE, NO_DUMP)

    def describe(self, target: str) -> str:
        """One line for the plan: schemas, verdict, and what a restore loses."""
        schemas = f"database schema {_n(self.db_schema)}, {target} expects {_n(self.target_schema)}"
        if self.verdict == UNKNOWN:
            return f"{schemas}: compatibility unknown"
        if self.verdict == SAFE:
            added = [m["version"] for m in self.since]
            why = (f"only additive migrations since ({', '.join(map(str, added))})" if added
                   else "no migration since")
            return f"{schemas}: {SAFE} ({why}; every row written since is kept)"
        breaking = ", ".join(map(str, self.breaking))
        if self.verdict == NO_DUMP:
            return (f"{schemas}: {NO_DUMP} (breaking migration {breaking} since, and no "
                    f"dump taken while {target} ran brings the schema back)")
        return (f"{schemas}: {NEEDS_RESTORE} (breaking migration {breaking} since); "
                f"{restore_loss(self.dump, self.loses)}")


def assess(stats: dict | None, db_schema: int | None, target_schema: int | None,
           dump: DumpBackup | None, live_writes: dict[str, int] | None) -> Compatibility:
    """The verdict for a database whose app ``stats`` (or None) and schema are given,
    against a target expecting ``target_schema``, with ``dump`` (taken while the
    target ran, or None) to restore from."""
    if stats and isinstance(stats.get("schema_version"), int):
        db_schema = stats["schema_version"]
    if db_schema is None or target_schema is None:
        return Compatibility(UNKNOWN, db_schema, target_schema, dump=dump,
                             loses=writes_since(dump, live_writes) if dump else None)
    since = migrations_between(stats, target_schema, db_schema)
    loses = writes_since(dump, live_writes) if dump else None
    if all(m["kind"] == ADDITIVE for m in since):
        return Compatibility(SAFE, db_schema, target_schema, since, dump, loses)
    if dump is None or not _restores_to_usable(dump, stats, target_schema):
        return Compatibility(NO_DUMP, db_schema, target_schema, since, dump, loses)
    return Compatibility(NEEDS_RESTORE, db_schema, target_schema, since, dump, loses)


def migrations_between(stats: dict | None, low: int, high: int) -> list[dict]:
    """The migrations in (low, high], with their recorded kind ("unrecorded" if none)."""
    recorded = {}
    for entry in (stats or {}).get("migrations") or []:
        if isinstance(entry, dict) and isinstance(entry.get("version"), int):
            recorded[entry["version"]] = str(entry.get("kind"))
    return [{"version": v, "kind": recorded.get(v, "unrecorded")} for v in range(low + 1, high + 1)]


def _restores_to_usable(dump: DumpBackup, stats: dict | None, target_schema: int) -> bool:
    """The dump's schema is one the target can run on: at most the target's, or ahead by
    additive migrations only."""
    if dump.schema_version <= target_schema:
        return True
    return all(m["kind"] == ADDITIVE
               for m in migrations_between(stats, target_schema, dump.schema_version))


def writes_since(dump: DumpBackup | None, live: dict[str, int] | None) -> dict[str, int] | None:
    """Rows written to each table since ``dump`` (the app's write high-water marks,
    ``releaser.appcontract``), or None when the app did not count them, or the live
    marks are below the dump's (the database was replaced since: counting is moot)."""
    if dump is None or not dump.writes or not live:
        return None
    lost = {table: live[table] - mark for table, mark in dump.writes.items() if table in live}
    return lost if lost and min(lost.values()) >= 0 else None


def restore_loss(dump: DumpBackup | None, lost: dict[str, int] | None) -> str:
    """What restoring ``dump`` loses, in words an on-call engineer can act on."""
    if dump is None:
        return "no dump to restore"
    taken = f"{dump.created[:19].replace('T', ' ')} UTC"
    held = f"it holds {_count(dump.notes, 'notes')}, schema {dump.schema_version}"
    if lost is None:
        return (f"restoring the dump of {taken} ({held}) loses every write made after it "
                "(the app did not say how many)")
    counts = ", ".join(_count(n, table) for table, n in lost.items())
    return f"restoring the dump of {taken} loses {counts} written since ({held})"


def promote_warning(config: Config, env_name: str, version: str) -> str | None:
    """Before ``version`` reaches ``env_name`` (taken from its ``promote_from``): the
    breaking migrations it brings, as the source environment's database recorded
    them, and the release that becomes un-rollbackable there without a restore.

    None when nothing is breaking, or nothing can be told (never an error: a
    warning that cannot be computed must not stop a promote).
    """
    from releaser.central.ledger import Ledger
    from releaser.central.repository import CentralRepository

    env = config.environment(env_name)
    if not env.promote_from:
        return None
    try:
        central = CentralRepository.from_config(config)
        here, source = Ledger.load(central, env_name), Ledger.load(central, env.promote_from)
        current = here.current
        new_schema = source.schema_of(version)
        old_schema = here.schema_of(current) if current else None
        if current is None or new_schema is None or old_schema is None \
                or new_schema <= old_schema:
            return None
        stats = _source_stats(config, env.promote_from)
    except ReleaserError:
        return None
    breaking = [m["version"] for m in migrations_between(stats, old_schema, new_schema)
                if m["kind"] != ADDITIVE]
    if not breaking:
        return None
    return (f"{version} brings breaking migration {', '.join(map(str, breaking))} (as "
            f"{env.promote_from}'s database recorded it): once it runs in {env_name}, "
            f"{current} (schema {old_schema}) becomes un-rollbackable there without "
            f"--restore-db, which loses every write made after the pre-upgrade dump")


def _source_stats(config: Config, env_name: str) -> dict | None:
    """The app's ``stats`` on the first node of ``env_name`` that answers."""
    from releaser.backup.common import database_password
    from releaser.backup.dump import database_stats
    from releaser.hosts.node import connect

    env = config.environment(env_name)
    for node_cfg in env.nodes:
        try:
            node = connect(config, node_cfg)
        except ReleaserError:
            continue
        try:
            stats = database_stats(node, config.app.contract, env.database.path,
                                   password=database_password(env.database))
        finally:
            node.close()
        if stats:
            return stats
    return None


def _n(value: int | None) -> str:
    return "unknown" if value is None else str(value)


def _count(n: int, rows: str) -> str:
    """``1 note``, ``2 notes``: a table name read as a plural noun."""
    return f"{n} {rows[:-1] if n == 1 and rows.endswith('s') else rows}"
