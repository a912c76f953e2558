"""HTTP API through Flask's test client against real SQLite files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from notes import create_app
from notes.config import Config
from notes.schema import SCHEMA_VERSION


def client_for(db: Path, version: str = "1.2.3"):
    app = create_app(Config(database=db, version=version))
    app.testing = True
    return app.test_client()


def test_health_ok(client, migrated_db: Path) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ok",
        "version": "1.2.3",
        "schema": "current",
        "database": {
            "reachable": True,
            "schema_version": SCHEMA_VERSION,
            "app_schema_version": SCHEMA_VERSION,
            "path": str(migrated_db),
            "backend": "sqlite",
        },
    }
    assert response.headers["Cache-Control"] == "no-store"


def test_health_503_when_file_is_not_sqlite(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"garbage, not SQLite at all\n" * 200)
    response = client_for(db_path).get("/health")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "error"
    assert body["database"]["reachable"] is False
    assert body["database"]["schema_version"] is None
    assert "not a database" in body["database"]["error"]


def test_health_503_when_database_missing_and_does_not_create_it(db_path: Path) -> None:
    response = client_for(db_path).get("/health")
    assert response.status_code == 503
    assert response.get_json()["database"]["reachable"] is False
    assert not db_path.exists()


def test_health_503_when_schema_is_behind(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"")  # SQLite treats an empty file as a valid empty database: schema 0
    response = client_for(db_path).get("/health")
    assert response.status_code == 503
    body = response.get_json()
    assert (body["status"], body["schema"]) == ("error", "behind")
    assert body["database"]["reachable"] is True
    assert body["database"]["schema_version"] == 0


def test_health_ok_when_schema_is_ahead(migrated_db: Path) -> None:
    """After a code rollback without a data restore the newer database is still served."""
    with sqlite3.connect(migrated_db) as conn:
        conn.execute("ALTER TABLE notes ADD COLUMN tags TEXT NOT NULL DEFAULT ''")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    client = client_for(migrated_db)
    response = client.get("/health")
    assert response.status_code == 200
    body = response.get_json()
    assert (body["status"], body["schema"]) == ("ok", "ahead")
    assert body["database"]["schema_version"] == SCHEMA_VERSION + 1
    assert body["database"]["app_schema_version"] == SCHEMA_VERSION
    assert client.post("/notes", json={"title": "still", "body": "works"}).status_code == 201
    assert client.get("/notes").get_json()[0]["title"] == "still"


def test_version_route(client) -> None:
    assert client.get("/version").get_json() == {"name": "notes", "version": "1.2.3", "schema_version": SCHEMA_VERSION}


def test_create_list_and_get_notes(client) -> None:
    assert client.get("/notes").get_json() == []
    response = client.post("/notes", json={"title": "  Groceries ", "body": "milk"})
    assert response.status_code == 201
    note = response.get_json()
    assert note["id"] == 1 and note["title"] == "Groceries" and note["body"] == "milk"
    assert note["created_at"].endswith("Z")
    assert response.headers["Location"].endswith("/notes/1")
    client.post("/notes", json={"title": "Second"})
    listed = client.get("/notes").get_json()
    assert [n["title"] for n in listed] == ["Groceries", "Second"]
    assert listed[1]["body"] == ""
    assert client.get("/notes/1").get_json() == note


def test_missing_note_is_404_json(client) -> None:
    response = client.get("/notes/999")
    assert response.status_code == 404
    assert response.get_json() == {"error": "note 999 not found"}


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        {"body": "no title"},
        {"title": ""},
        {"title": "   "},
        {"title": 7},
        {"title": "ok", "body": 3},
        {"title": "x" * 201},
    ],
)
def test_bad_note_input_is_400_json(client, payload) -> None:
    if payload is None:
        response = client.post("/notes", data="not json", content_type="application/json")
    else:
        response = client.post("/notes", json=payload)
    assert response.status_code == 400
    assert "error" in response.get_json()
    assert client.get("/notes").get_json() == []


def test_unknown_route_and_method_answer_json(client) -> None:
    assert client.get("/nope").status_code == 404
    assert "error" in client.get("/nope").get_json()
    response = client.delete("/notes")
    assert response.status_code == 405
    assert "error" in response.get_json()


def test_oversized_request_is_refused(client) -> None:
    response = client.post("/notes", json={"title": "big", "body": "x" * (2 * 1024 * 1024)})
    assert response.status_code == 413


def test_notes_routes_answer_503_when_database_unusable(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"garbage" * 1000)
    client = client_for(db_path)
    response = client.get("/notes")
    assert response.status_code == 503
    assert "error" in response.get_json()
    assert client.post("/notes", json={"title": "t"}).status_code == 503


def test_create_app_without_config_reads_environment(monkeypatch: pytest.MonkeyPatch, migrated_db: Path) -> None:
    monkeypatch.setenv("NOTES_DATABASE", str(migrated_db))
    monkeypatch.setenv("NOTES_VERSION", "7.0")
    app = create_app()
    body = app.test_client().get("/health").get_json()
    assert body["version"] == "7.0" and body["database"]["path"] == str(migrated_db)
