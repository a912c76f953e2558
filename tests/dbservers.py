"""Real database servers for the tests: the sandbox's own (``releaser.sandbox.dbserver``).

One server per test module (``server_for``), stopped by pid when the module
is done; each test gets a fresh database of its own on it
(``fresh_database``), so tests never see each other's rows.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from releaser.sandbox.dbserver import DatabaseServer, start_server

#: Every backend the app runs on; the server ones need a running server.
BACKENDS = ("sqlite", "postgresql", "mariadb")


@contextmanager
def running_server(backend: str) -> Iterator[DatabaseServer]:
    """A server of ``backend`` in a new temporary folder, stopped and removed after."""
    with tempfile.TemporaryDirectory(prefix=f"releaser-{backend}-") as tmp:
        server = start_server(backend, Path(tmp) / "server")
        try:
            yield server
        finally:
            server.stop()


def fresh_database(server: DatabaseServer, prefix: str = "t") -> str:
    """A new empty database owned by the app's user; its URL (the password is the server's)."""
    name = f"{server.database}_{prefix}_{secrets.token_hex(4)}"
    if server.backend == "postgresql":
        server.admin(f"CREATE DATABASE {name} OWNER {server.user}")
    else:
        server.admin(f"CREATE DATABASE `{name}`")
    return server.url.rsplit("/", 1)[0] + "/" + name
