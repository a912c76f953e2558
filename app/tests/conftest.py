"""Shared fixtures: put app/ on sys.path and give each test its own real SQLite file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

APP_DIR = Path(__file__).resolve().parent.parent
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))

from notes import create_app  # noqa: E402
from notes.config import Config  # noqa: E402
from notes.schema import migrate  # noqa: E402


@pytest.fixture(autouse=True)
def _clean_notes_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must not see the developer's NOTES_* variables."""
    for name in ("NOTES_CONFIG", "NOTES_DATABASE", "NOTES_HOST", "NOTES_PORT", "NOTES_VERSION"):
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
