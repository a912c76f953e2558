"""The one exception family of notes.

Library code raises these; only the CLI (``notes.__main__``) and the web layer
turn them into a one-line message, an exit code or an HTTP status.  Anything
else escaping is a bug and is allowed to show a traceback.
"""

from __future__ import annotations


class NotesError(Exception):
    """An expected failure the operator can act on; ``str()`` is one line."""


class ConfigError(NotesError):
    """A configuration value is invalid; the message names the key and its source."""


class DatabaseUnavailable(NotesError):
    """The database file is missing, unreadable, locked or not an SQLite database."""


class MigrationError(NotesError):
    """A schema migration failed; the transaction was rolled back."""


class DumpError(NotesError):
    """A dump could not be written, verified or restored."""


class InvalidNote(NotesError):
    """A client sent a note that cannot be stored (HTTP 400)."""
