"""Where the running application's version comes from.

The code itself carries no version number: releaser builds the tarball from a
git tag and the ebuild writes ``<install dir>/VERSION`` next to the ``notes``
package directory.  ``NOTES_VERSION`` wins so that a test, or an operator
running from a checkout, can state the version explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

UNKNOWN_VERSION = "0+unknown"

#: ``<install dir>/VERSION``: the parent of the ``notes`` package directory.
VERSION_FILE = Path(__file__).resolve().parent.parent / "VERSION"


def get_version(
    environ: Mapping[str, str] | None = None,
    version_file: Path | None = None,
) -> str:
    """Return the installed version: $NOTES_VERSION, else the VERSION file, else "0+unknown".

    An empty variable or an empty/unreadable file counts as absent, so a
    half-written install reports "0+unknown" instead of an empty string.
    """
    env = os.environ if environ is None else environ
    from_env = env.get("NOTES_VERSION", "").strip()
    if from_env:
        return from_env
    path = VERSION_FILE if version_file is None else version_file
    try:
        from_file = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return UNKNOWN_VERSION
    # Only the first line counts: a trailing comment or build note must not leak into JSON.
    first_line = from_file.splitlines()[0].strip() if from_file else ""
    return first_line or UNKNOWN_VERSION
