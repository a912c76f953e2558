"""HTTP routes: health, version and the notes API, all JSON.

One connection per request (opened lazily, closed at teardown): cheap for
SQLite, safe across waitress threads, and a restored database is picked up
by the next request without restarting the service.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request, url_for
from werkzeug.exceptions import HTTPException

from .config import Config
from .db import Connection, DatabaseError, open_database
from .errors import DatabaseUnavailable, InvalidNote
from .health import health_report
from .schema import SCHEMA_VERSION
from .store import create_note, get_note, list_notes, parse_new_note

bp = Blueprint("notes", __name__)


def app_config() -> Config:
    """The Config the running app was created with."""
    return current_app.extensions["notes"]


def get_db() -> Connection:
    """This request's connection; opened read-write but never created (migrate does that)."""
    if "db" not in g:
        g.db = open_database(app_config().target, "rw")
    return g.db


def close_db(_exc: BaseException | None = None) -> None:
    """Teardown hook: close the request's connection if one was opened."""
    conn = g.pop("db", None)
    if conn is not None:
        conn.close()


@bp.get("/health")
def health() -> tuple[Response, int]:
    body, status = health_report(app_config())
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response, status


@bp.get("/version")
def version() -> Response:
    return jsonify({"name": "notes", "version": app_config().version, "schema_version": SCHEMA_VERSION})


@bp.get("/notes")
def notes_index() -> Response:
    return jsonify([note.to_json() for note in list_notes(get_db())])


@bp.post("/notes")
def notes_create() -> tuple[Response, int, dict[str, str]]:
    title, body = parse_new_note(request.get_json(silent=True))
    note = create_note(get_db(), title, body)
    return jsonify(note.to_json()), 201, {"Location": url_for("notes.notes_show", note_id=note.id)}


@bp.get("/notes/<int:note_id>")
def notes_show(note_id: int) -> tuple[Response, int]:
    note = get_note(get_db(), note_id)
    if note is None:
        return _error(f"note {note_id} not found", 404)
    return jsonify(note.to_json()), 200


def _error(message: str, status: int) -> tuple[Response, int]:
    return jsonify({"error": message}), status


def _on_http_error(exc: HTTPException) -> tuple[Response, int]:
    """Every 4xx/5xx raised by Flask itself (404, 405, 413...) answers JSON too."""
    return _error(exc.description or exc.name, exc.code or 500)


def _on_invalid_note(exc: InvalidNote) -> tuple[Response, int]:
    return _error(str(exc), 400)


def _on_database_error(exc: Exception) -> tuple[Response, int]:
    """The database is missing, locked, corrupt or lacks the schema: the service is unavailable."""
    current_app.logger.error("database error: %s", exc)
    message = str(exc) if isinstance(exc, DatabaseUnavailable) else f"database error: {exc}"
    return _error(message, 503)


def register(app: Flask) -> None:
    """Attach routes, teardown and JSON error handlers to app."""
    app.register_blueprint(bp)
    app.teardown_appcontext(close_db)
    app.register_error_handler(HTTPException, _on_http_error)
    app.register_error_handler(InvalidNote, _on_invalid_note)
    app.register_error_handler(DatabaseUnavailable, _on_database_error)
    app.register_error_handler(DatabaseError, _on_database_error)

