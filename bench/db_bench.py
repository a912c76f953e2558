"""Dump and verification times per backend for a notes database of about 100 MB.

    .venv/bin/python bench/db_bench.py [--mb 100] [--backends sqlite,postgresql,mariadb]

For each backend: a fresh database (SQLite file, or a database on a server
of its own started like the tests', tests/dbservers.py), filled with notes of
2 KB bodies up to the size asked, then:

* dump: the backend's consistent dump alone (SQLite's backup API,
  ``pg_dump --format=custom`` in an exported snapshot, ``mariadb-dump
  --single-transaction``);
* verify: ``notes verify-dump``'s work: restore into a scratch database,
  read back the schema version, rows per table and write marks, drop it;

and prints both, the dump's size and what verification costs against the
dump (the ratio).  The app's ``dump`` command does both, so its time is the
sum.  Figures depend on the machine: run it where the numbers matter.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(PROJECT / "app"), str(PROJECT)]

from notes import backup, backup_server, backup_sqlite  # noqa: E402
from notes.db import Target, open_database, parse_database  # noqa: E402
from notes.schema import migrate  # noqa: E402
from tests.dbservers import BACKENDS, fresh_database, running_server  # noqa: E402

BODY = 2048
BATCH = 1000


def fill(target: Target, megabytes: int) -> int:
    """Insert notes until their bodies add up to ``megabytes``; the count."""
    count = megabytes * 1024 * 1024 // BODY
    conn = open_database(target)
    try:
        cursor = conn.raw.cursor()
        marker = "?" if target.backend == "sqlite" else "%s"
        sql = f"INSERT INTO notes (title, body, created_at) VALUES ({marker}, {marker}, {marker})"
        for start in range(0, count, BATCH):
            rows = [(f"note {i}", os.urandom(BODY // 2).hex(), "2026-01-01T00:00:00Z")
                    for i in range(start, min(start + BATCH, count))]
            if target.backend == "sqlite":
                conn.execute("BEGIN")
            cursor.executemany(sql, rows)
            if target.backend == "sqlite":
                conn.execute("COMMIT")
    finally:
        conn.close()
    return count


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def bench(target: Target, megabytes: int, scratch: Path) -> dict:
    migrate(target)
    count = fill(target, megabytes)
    out = scratch / f"{target.backend}.dump"
    if target.backend == "sqlite":
        dump_s = timed(lambda: backup_sqlite.dump(target.path, out))
    elif target.backend == "postgresql":
        dump_s = timed(lambda: backup_server._dump_postgresql(target, out))
    else:
        dump_s = timed(lambda: backup_server._dump_mariadb(target, out))
    report: dict = {}
    verify_s = timed(lambda: report.update(backup.verify_dump(
        out, None if target.backend == "sqlite" else target)))
    assert report["notes"] == count, report
    return {"backend": target.backend, "notes": count, "dump_mb": out.stat().st_size / 2**20,
            "dump_s": dump_s, "verify_s": verify_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100, help="size of the notes' bodies (MB)")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    args = parser.parse_args()
    print(f"{'backend':<11} {'notes':>7} {'dump MB':>8} {'dump s':>7} {'verify s':>9} "
          f"{'verify/dump':>11}")
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory(prefix="db-bench-") as tmp:
            scratch = Path(tmp)
            if backend == "sqlite":
                row = bench(parse_database(scratch / "notes.db"), args.mb, scratch)
            else:
                with running_server(backend) as server:
                    target = parse_database(fresh_database(server, "bench"), server.password)
                    row = bench(target, args.mb, scratch)
        print(f"{row['backend']:<11} {row['notes']:>7} {row['dump_mb']:>8.1f} "
              f"{row['dump_s']:>7.2f} {row['verify_s']:>9.2f} "
              f"{row['verify_s'] / row['dump_s']:>10.1f}x", flush=True)


if __name__ == "__main__":
    main()
