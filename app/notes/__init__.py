"""notes: a small Flask service that stores text notes in SQLite, PostgreSQL or MariaDB.

It exists as the demo payload of releaser: packaged into a tarball and ebuild,
installed by Portage into /usr/lib/notes, run by OpenRC, with schema
migrations, health reporting and verified backups that a release pipeline can
rely on.  Runtime dependencies: the standard library, flask and waitress;
psycopg 3 or PyMySQL for a PostgreSQL or MariaDB database (imported only then).
"""

from __future__ import annotations

from flask import Flask

from . import web
from .config import Config, load_config

__all__ = ["Config", "create_app"]

#: Requests larger than this are refused with 413 before reaching a route.
MAX_REQUEST_BYTES = 1024 * 1024


def create_app(config: Config | None = None) -> Flask:
    """Application factory; with no config, load it from $NOTES_CONFIG and the environment."""
    app = Flask(__name__)
    app.extensions["notes"] = config if config is not None else load_config()
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    web.register(app)
    return app
