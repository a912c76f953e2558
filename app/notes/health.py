"""The health report behind GET /health, kept free of Flask so it is easy to test.

The release tool decides from this answer whether a deploy succeeded, so the
HTTP status must be unambiguous: 200 means "this code can serve this
database", 503 means it cannot (database unreachable, corrupt, or behind the
code's schema because the migration did not run).  A database *ahead* of the
code, left by a rollback without a data restore, is still served.
"""

from __future__ import annotations

from typing import Any

from .config import Config
from .db import probe
from .schema import SCHEMA_VERSION


def health_report(config: Config) -> tuple[dict[str, Any], int]:
    """Return (JSON body, HTTP status) for the current state of the database."""
    result = probe(config.target)
    database: dict[str, Any] = {
        "reachable": result.reachable,
        "schema_version": result.schema_version,
        "app_schema_version": SCHEMA_VERSION,
        "path": str(config.target),
        "backend": config.target.backend,
    }
    if result.error is not None:
        database["error"] = result.error

    if result.schema_version is None:
        schema, healthy = "unknown", False
    elif result.schema_version < SCHEMA_VERSION:
        schema, healthy = "behind", False
    elif result.schema_version > SCHEMA_VERSION:
        schema, healthy = "ahead", True
    else:
        schema, healthy = "current", True

    body = {
        "status": "ok" if healthy else "error",
        "version": config.version,
        "schema": schema,
        "database": database,
    }
    return body, 200 if healthy else 503
