"""The CLI: in-process for the maintenance commands, a real subprocess for serve."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from notes.__main__ import main
from notes.schema import SCHEMA_VERSION

APP_DIR = Path(__file__).resolve().parent.parent


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def env_db(monkeypatch: pytest.MonkeyPatch, db_path: Path) -> Path:
    monkeypatch.setenv("NOTES_DATABASE", str(db_path))
    return db_path


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTES_")}
    env["PYTHONPATH"] = str(APP_DIR)
    env.update(extra)
    return env


def test_migrate_then_schema_version(capsys, env_db: Path) -> None:
    code, out, _ = run(capsys, "migrate")
    assert code == 0 and out == f"database {env_db}: migrated schema 0 -> {SCHEMA_VERSION}\n"
    code, out, _ = run(capsys, "migrate")
    assert code == 0 and "up to date" in out
    code, out, _ = run(capsys, "schema-version")
    assert (code, out) == (0, f"{SCHEMA_VERSION}\n")


def test_migrate_reports_a_database_ahead(capsys, env_db: Path) -> None:
    run(capsys, "migrate")
    with sqlite3.connect(env_db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    code, out, _ = run(capsys, "migrate")
    assert code == 0 and "ahead" in out and "left unchanged" in out


def test_schema_version_of_a_missing_database_is_one_line_error(capsys, env_db: Path) -> None:
    code, out, err = run(capsys, "schema-version")
    assert code == 1 and out == ""
    assert err == f"notes: error: database {env_db} does not exist\n"
    assert not env_db.exists()


def test_dump_verify_restore(capsys, env_db: Path, tmp_path: Path) -> None:
    run(capsys, "migrate")
    with sqlite3.connect(env_db) as conn:
        conn.execute("INSERT INTO notes (title, body, created_at) VALUES ('kept', '', 'x')")
    conn.close()
    out_file = tmp_path / "dump.db"
    code, out, _ = run(capsys, "dump", str(out_file))
    assert code == 0
    dumped = json.loads(out)
    assert set(dumped) == {"path", "size", "sha256", "backend", "schema_version", "notes",
                           "tables", "writes", "migrations", "integrity"}
    assert (dumped["notes"], dumped["integrity"], dumped["path"]) == (1, "ok", str(out_file))
    assert dumped["writes"] == {"notes": 1}

    code, out, _ = run(capsys, "verify-dump", str(out_file))
    assert code == 0 and json.loads(out) == dumped

    env_db.unlink()
    code, out, _ = run(capsys, "restore", str(out_file))
    assert code == 0
    assert json.loads(out) == {**dumped, "database": str(env_db)}
    code, out, _ = run(capsys, "schema-version")
    assert out == f"{SCHEMA_VERSION}\n"


def test_stats(capsys, env_db: Path) -> None:
    code, out, err = run(capsys, "stats")
    assert (code, out) == (1, "") and err == f"notes: error: cannot open database {env_db}: " \
        "unable to open database file\n"
    assert not env_db.exists()  # never created
    run(capsys, "migrate")
    with sqlite3.connect(env_db) as conn:
        conn.executemany("INSERT INTO notes (title, body, created_at) VALUES (?, '', 'x')",
                         [("a",), ("b",)])
    conn.close()
    code, out, _ = run(capsys, "stats")
    assert code == 0 and json.loads(out) == {
        "database": str(env_db), "backend": "sqlite", "schema_version": SCHEMA_VERSION,
        "notes": 2, "tables": {"notes": 2, "schema_migrations": 1}, "writes": {"notes": 2},
        "migrations": [{"version": 1, "kind": "additive"}]}


def test_config_flag_and_config_error(capsys, tmp_path: Path) -> None:
    cfg = tmp_path / "notes.toml"
    cfg.write_text(f'[notes]\ndatabase = "{tmp_path / "c.db"}"\n')
    assert run(capsys, "--config", str(cfg), "migrate")[0] == 0
    assert (tmp_path / "c.db").exists()
    cfg.write_text("[notes]\nport = 0\n")
    code, out, err = run(capsys, "--config", str(cfg), "migrate")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "key 'port'" in err and str(cfg) in err


@pytest.mark.parametrize("content", [b"", b"SQLite format 3\x00" + b"\x00" * 40, b"#!/bin/sh\necho hi\n" * 50])
def test_verify_dump_failure_is_one_line_without_traceback(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(content)
    result = subprocess.run(
        [sys.executable, "-m", "notes", "verify-dump", str(bad)],
        env=subprocess_env(NOTES_PORT="not-a-port"),  # verify-dump needs no config
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"notes: error: dump {bad}: ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_serve_real_http_then_sigterm(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "srv" / "notes.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "notes", "serve"],
        env=subprocess_env(NOTES_DATABASE=str(db), NOTES_HOST="127.0.0.1", NOTES_PORT=str(port), NOTES_VERSION="4.5.6"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                status, health = http("GET", f"{base}/health")
                break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"server did not come up: {proc.communicate(timeout=5)}") from None
                time.sleep(0.1)
        assert status == 200
        assert health["status"] == "ok" and health["version"] == "4.5.6"
        assert health["database"]["schema_version"] == SCHEMA_VERSION  # serve migrated first
        assert http("POST", f"{base}/notes", {"title": "over http", "body": "real"})[0] == 201
        assert http("GET", f"{base}/notes/1")[1]["title"] == "over http"
        assert http("GET", f"{base}/version")[1] == {"name": "notes", "version": "4.5.6", "schema_version": SCHEMA_VERSION}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert proc.returncode == 0, err
    start_lines = [line for line in err.splitlines() if "serving on" in line]
    assert len(start_lines) == 1
    assert f"notes 4.5.6 serving on http://127.0.0.1:{port}" in start_lines[0]
    assert "Traceback" not in err


def test_serve_on_a_busy_port_is_one_line_error(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "notes", "serve"],
            env=subprocess_env(NOTES_DATABASE=str(tmp_path / "n.db"), NOTES_PORT=str(port)),
            capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr == f"notes: error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
