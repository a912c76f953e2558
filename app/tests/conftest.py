"""Shared fixtures: put app/ on sys.path, give each test its own real SQLite file, and, for
the backend tests, a database of its own on a real PostgreSQL or MariaDB server (one
server per module, started by the project's tests/dbservers.py).

The server machinery is imported only by the fixtures that need it, so the app's own
tests (everything but the backend ones) also run from an exported app/ folder, as
``releaser gate`` runs them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

APP_DIR = Path(__file__).resolve().parent.parent
PROJECT = APP_DIR.parent
for _path in (APP_DIR, PROJECT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from notes import create_app  # noqa: E402
from notes.config import Config  # noqa: E402
from notes.db import Target, parse_database  # noqa: E402
from notes.schema import migrate  # noqa: E402


@pytest.fixture(autouse=True)
def _clean_notes_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must not see the developer's NOTES_* variables."""
    for name in ("NOTES_CONFIG", "NOTES_DATABASE", "NOTES_HOST", "NOTES_PORT", "NOTES_VERSION",
                 "NOTES_DATABASE_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A database path whose parent directory does not exist yet."""
    return tmp_path / "data" / "notes.db"


@pytest.fixture
def migrated_db(db_path: Path) -> Path:
    migrate(db_path)
    return db_path


@pytest.fixture
def config(migrated_db: Path) -> Config:
    return Config(database=migrated_db, version="1.2.3")


@pytest.fixture
def client(config: Config):
    app = create_app(config)
    app.testing = True
    return app.test_client()


BACKENDS = ("sqlite", "postgresql", "mariadb")


@pytest.fixture(scope="module", params=BACKENDS)
def backend_server(request):
    """(backend, its running server or None for SQLite), one server per module."""
    if request.param == "sqlite":
        yield request.param, None
        return
    from tests.dbservers import running_server

    with running_server(request.param) as server:
        yield request.param, server


@pytest.fixture
def database(backend_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Target:
    """A fresh, empty database of this test's backend; NOTES_DATABASE_PASSWORD set for it."""
    backend, server = backend_server
    if server is None:
        return parse_database(tmp_path / "data" / "notes.db")
    from tests.dbservers import fresh_database

    monkeypatch.setenv("NOTES_DATABASE_PASSWORD", server.password)
    return parse_database(fresh_database(server), server.password)
