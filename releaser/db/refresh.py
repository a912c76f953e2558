"""``releaser db refresh staging --from production``: staging gets a complete, independent
copy of production's database, never the other way round.

Data flows only against the pipeline: into an environment that the source
takes its releases from (directly or through others).  The other direction
would overwrite production with test data, and is refused before anything
is touched.  Each step goes through the app's contract and the verified
backups (``releaser.backup``):

1. dump the source database on a source node (the app's ``dump``, proven by a
   scratch restore, checksummed to central);
2. dump the target database too (verified, recorded in the target's dump
   index): if anything below fails, it is restored, so the target ends as it
   was or as a complete copy;
3. copy the source dump to a target node (sha256 checked where it lands),
   stop the target's service, restore it (verified again, on the target's own
   server or file: an independent copy, no link to the source);
4. run the masking hook (``[environments.TARGET.database] refresh_hook``) on
   the target node, against the restored copy, before the service starts
   again: the copy goes live only once masked;
5. start the service, check its health.

A server database is one for the whole environment (every node's URL): it is
restored once, and every node is stopped around it.  A SQLite database is a
file per node: each node gets the copy.  The target environment's lock is
held throughout, so no promote or rollback runs meanwhile.
"""

from __future__ import annotations

import dataclasses
import posixpath
import time
from dataclasses import dataclass, field
from typing import Callable

from releaser import backup
from releaser.backup.common import (COPY_FAILURES, DumpBackup, database_password,
                                    local_scratch, on_node, pull, push, reason)
from releaser.backup.dump import app_command
from releaser.central.ledger import Ledger
from releaser.central.lock import EnvironmentLock
from releaser.central.repository import CentralRepository
from releaser.config import Config, EnvironmentConfig, NodeConfig
from releaser.errors import RefreshError, ReleaserError, UsageError
from releaser.hosts.node import Node, connect
from releaser.hosts.services import OpenRC

Progress = Callable[[str], None]
#: Seconds a restarted node has to answer healthy after the refresh.
HEALTH_TIMEOUT = 60.0


@dataclass
class RefreshReport:
    target: str
    source: str
    source_node: str = ""
    dump: dict | None = None
    #: Per target node: what it got ("restored", "shares the restored database").
    nodes: dict[str, str] = field(default_factory=dict)
    #: The target's own databases, dumped first (how to go back by hand).
    safety_dumps: list[str] = field(default_factory=list)
    masked: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_direction(config: Config, target: str, source: str) -> None:
    """Refuse a refresh that is not from a later environment into an earlier one."""
    if target == source:
        raise UsageError(f"db refresh {target} --from {source}: an environment is not "
                         "refreshed from itself")
    target_env, source_env = config.environment(target), config.environment(source)
    chain, env = [], source_env
    while env.promote_from and env.promote_from not in chain:
        chain.append(env.promote_from)
        env = config.environment(env.promote_from)
    if target not in chain:
        raise UsageError(f"db refresh {target} --from {source} refused: data is only copied "
                         f"back along the pipeline, into an environment the source takes its "
                         f"releases from ({source} promotes from {source_env.promote_from or 'none'});"
                         f" {target}'s database is left as it is")
    if target_env.database.backend != source_env.database.backend:
        raise UsageError(f"db refresh {target} --from {source}: {source} runs "
                         f"{source_env.database.backend}, {target} runs "
                         f"{target_env.database.backend}; a dump restores into its own kind only")


def refresh(config: Config, target: str, source: str, *,
            progress: Progress = lambda _m: None) -> RefreshReport:
    """Copy ``source``'s database into ``target`` (see the module docstring)."""
    started = time.monotonic()
    check_direction(config, target, source)
    central = CentralRepository.from_config(config)
    report = RefreshReport(target, source)
    with EnvironmentLock(central, target, f"db refresh {target} from {source}",
                         lease=config.central.lock_lease):
        dump = _dump_source(config, central, source, report, progress)
        target_env = config.environment(target)
        groups = _databases(target_env)
        for group in groups:
            _refresh_group(config, central, target_env, group, dump, report, progress)
        ledger = Ledger.load(central, target)
        ledger.event("db-refresh", source=source, dump=dump.central_path, sha256=dump.sha256,
                     tables=dump.tables, nodes=report.nodes, masked=report.masked)
        ledger.save()
    report.seconds = time.monotonic() - started
    return report


def _dump_source(config: Config, central: CentralRepository, source: str,
                 report: RefreshReport, progress: Progress) -> DumpBackup:
    env = config.environment(source)
    for node_cfg in env.nodes:
        try:
            node = connect(config, node_cfg)
        except ReleaserError as exc:
            progress(f"{node_cfg.name}: unreachable ({exc}); trying the next node")
            continue
        try:
            version = node.installed_version(config.app.cp)
            if version is None:
                continue
            progress(f"{node.name}: dumping {source}'s database ({config.app.name} {version})")
            dump = backup.dump_database(node, central, source, config.app.contract,
                                        env.database.path, version,
                                        password=database_password(env.database))
        finally:
            node.close()
        report.source_node, report.dump = node_cfg.name, dump.to_dict()
        progress(f"  {dump.name}: {dump.size} bytes, rows {dump.tables}, verified")
        return dump
    raise RefreshError(f"no node of {source} runs {config.app.name}: nothing to copy")


def _databases(env: EnvironmentConfig) -> list[list[NodeConfig]]:
    """The target's databases, as the nodes that use each: one for a server, one per node
    for SQLite files."""
    if env.database.is_server:
        return [list(env.nodes)]
    return [[n] for n in env.nodes]


def _refresh_group(config: Config, central: CentralRepository, env: EnvironmentConfig,
                   group: list[NodeConfig], dump: DumpBackup, report: RefreshReport,
                   progress: Progress) -> None:
    """Restore ``dump`` into the database the nodes of ``group`` share (first node works)."""
    app, db = config.app.contract, env.database
    password = database_password(db)
    nodes = [connect(config, n) for n in group]
    try:
        node = nodes[0]
        version = node.installed_version(config.app.cp)
        if version is None:
            raise RefreshError(f"{node.name}: {config.app.name} is not installed; promote "
                               f"to {env.name} first")
        safety = backup.dump_database(node, central, env.name, app, db.path, version,
                                      password=password)
        report.safety_dumps.append(safety.central_path)
        progress(f"{node.name}: {env.name}'s own database dumped first ({safety.name})")
        copy = _copy_to(node, central, dump, app, db.path)
        for each in nodes:
            OpenRC().stop(each.runner, app.service, each.root)
        try:
            backup.restore_database(node, app, db.path, copy, password=password)
            progress(f"{node.name}: restored {dump.name}")
            _mask(node, config, env, password, progress)
        except ReleaserError as exc:
            backup.restore_database(node, app, db.path, safety, password=password)
            _start_all(nodes, config, version)
            raise RefreshError(f"{node.name}: {exc}; {env.name}'s own database was restored "
                               f"from {safety.name}") from exc
        report.masked = bool(db.refresh_hook)
        _start_all(nodes, config, version)
        for each in nodes:
            report.nodes[each.name] = "restored" if each is node else \
                f"shares the database restored on {node.name}"
    finally:
        for each in nodes:
            each.close()


def _copy_to(node: Node, central: CentralRepository, dump: DumpBackup, app, db_path: str
             ) -> DumpBackup:
    """The source dump on ``node`` (checked where it lands), as a record of the copy there:
    verified and restored on the target's own database."""
    directory = backup.dump_dir(app, db_path)
    path = on_node(node.root, posixpath.join(directory, f"refresh-{dump.name}"))
    with local_scratch() as tmp:
        pull(central.runner, dump.central_path, tmp / dump.name, "sha256", dump.sha256)
        push(node.runner, tmp / dump.name, path, "sha256", dump.sha256)
    return dataclasses.replace(dump, node=node.name, node_path=path,
                               database=db_path if dump.database else "")


def _mask(node: Node, config: Config, env: EnvironmentConfig, password: str | None,
          progress: Progress) -> None:
    """Run the masking hook on the node against the restored copy (service still stopped).

    Its environment is the app's maintenance environment: the app's code on
    PYTHONPATH, the database variable (and password) naming the copy.
    """
    hook = env.database.refresh_hook
    if not hook:
        progress(f"{node.name}: no refresh_hook configured: the copy is not masked")
        return
    _argv, variables = app_command(node.root, config.app.contract, env.database.path,
                                   "stats", password=password)
    try:
        node.runner.run(list(hook), env=variables, timeout=env.database.hook_timeout)
    except COPY_FAILURES as exc:
        raise RefreshError(f"refresh_hook {hook[0]} failed: {reason(exc)}") from exc
    progress(f"{node.name}: refresh_hook {hook[0]} masked the copy")


def _start_all(nodes: list[Node], config: Config, version: str) -> None:
    service = config.app.contract.service
    for each in nodes:
        process = each.restart(service)
        health = each.health(version, HEALTH_TIMEOUT, process=(service, process))
        if not health.ok:
            raise RefreshError(f"{each.name}: not healthy after the refresh: {health.detail}")
