"""Environment overlays: create one from its skeleton, and keep its small files right.

An environment (staging, production) publishes its releases to its own standalone
Portage overlay: a repository with its own profile (``releaser/amd64``) and no
``masters``, so a node needs nothing from ``::gentoo`` to resolve our packages.
The skeletons live in the top-level ``overlays/`` folder of this repository and
ship as package data of ``releaser.overlays`` (see setup.py); ``init_overlay``
copies one into place.

What is deliberately *not* in a skeleton:

- ``metadata/timestamp.chk``: written by ``write_timestamp`` at publish time, so
  it says when the overlay content last changed, as on Gentoo's own mirrors.
- ``metadata/md5-cache``: Portage (or ``egencache``) builds it; the layout only
  declares ``cache-formats = md5-dict``.

These functions only touch files; committing and pushing is the git module's job.
"""

from __future__ import annotations

import re
import shutil
from datetime import datetime, timezone
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from .errors import UsageError

#: Files in the skeleton package that are Python packaging, not overlay content.
_NOT_OVERLAY = {"__init__.py", "__pycache__"}

#: A Gentoo category name (PMS 3.1.1).
_CATEGORY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9+_.-]*$")

#: strftime format of metadata/timestamp.chk, as Gentoo writes it
#: (``date -u '+%a, %d %b %Y %H:%M:%S %z'``).  English day and month names
#: are spelled out here so the result does not depend on the locale.
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def skeleton(environment: str) -> Traversable:
    """The packaged skeleton of ``environment``'s overlay.

    Raises UsageError if there is no skeleton of that name.
    """
    root = resources.files("releaser.overlays")
    candidate = root / environment
    if environment in _NOT_OVERLAY or "/" in environment or not candidate.is_dir():
        known = sorted(p.name for p in root.iterdir()
                       if p.is_dir() and p.name not in _NOT_OVERLAY)
        raise UsageError(f"no overlay skeleton for environment {environment!r} "
                         f"(known: {', '.join(known)})")
    return candidate


def init_overlay(dest: Path, environment: str) -> str:
    """Copy ``environment``'s skeleton into ``dest`` and return the repository name.

    ``dest`` may exist but must not already hold an overlay (a
    ``profiles/repo_name``): an existing overlay is never overwritten, because
    its published ebuilds and Manifests are the record of what was released.
    """
    source = skeleton(environment)
    dest = Path(dest)
    if (dest / "profiles" / "repo_name").exists():
        raise UsageError(f"{dest} already holds an overlay ({repo_name(dest)})")
    dest.mkdir(parents=True, exist_ok=True)
    _copy_tree(source, dest)
    return repo_name(dest)


def _copy_tree(source: Traversable, dest: Path) -> None:
    for entry in source.iterdir():
        if entry.name in _NOT_OVERLAY:
            continue
        target = dest / entry.name
        if entry.is_dir():
            target.mkdir(exist_ok=True)
            _copy_tree(entry, target)
        else:
            target.write_bytes(entry.read_bytes())


def repo_name(overlay_dir: Path) -> str:
    """The repository name of an overlay, from ``profiles/repo_name``."""
    path = Path(overlay_dir) / "profiles" / "repo_name"
    try:
        name = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise UsageError(f"{overlay_dir} is not an overlay: {path} is missing") from None
    if not name:
        raise UsageError(f"{path} is empty")
    return name


def categories(overlay_dir: Path) -> list[str]:
    """The categories listed in ``profiles/categories``."""
    path = Path(overlay_dir) / "profiles" / "categories"
    if not path.exists():
        return []
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def add_category(overlay_dir: Path, category: str) -> bool:
    """Make sure ``category`` is listed in ``profiles/categories``.

    Portage ignores packages in unlisted categories, so publishing a package in
    a new category must add it.  The file is kept sorted, one name a line.
    Returns True if the file changed.
    """
    if not _CATEGORY.match(category) or "/" in category:
        raise UsageError(f"invalid category name: {category!r}")
    current = categories(overlay_dir)
    if category in current:
        return False
    path = Path(overlay_dir) / "profiles" / "categories"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{c}\n" for c in sorted({*current, category})), encoding="utf-8")
    return True


def format_timestamp(when: datetime) -> str:
    """``when`` as Gentoo's timestamp.chk writes it: ``Sat, 21 Nov 2026 12:00:00 +0000``.

    Always UTC.  A naive datetime is taken to be UTC already.
    """
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    when = when.astimezone(timezone.utc)
    return (f"{_DAYS[when.weekday()]}, {when.day:02d} {_MONTHS[when.month - 1]} "
            f"{when.year:04d} {when:%H:%M:%S} +0000")


def write_timestamp(overlay_dir: Path, when: datetime) -> Path:
    """Write ``metadata/timestamp.chk`` (when the overlay was last published)."""
    path = Path(overlay_dir) / "metadata" / "timestamp.chk"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_timestamp(when) + "\n", encoding="utf-8")
    return path


def read_timestamp(overlay_dir: Path) -> datetime | None:
    """Parse ``metadata/timestamp.chk`` back, or None if the overlay has none."""
    path = Path(overlay_dir) / "metadata" / "timestamp.chk"
    if not path.exists():
        return None
    text = path.read_text(encoding="utf-8").strip()
    try:
        _, rest = text.split(", ", 1)
        day, month, year, clock, _zone = rest.split()
        hour, minute, second = (int(x) for x in clock.split(":"))
        return datetime(int(year), _MONTHS.index(month) + 1, int(day),
                        hour, minute, second, tzinfo=timezone.utc)
    except ValueError:
        raise UsageError(f"{path}: unreadable timestamp {text!r}") from None


__all__ = [
    "add_category",
    "categories",
    "format_timestamp",
    "init_overlay",
    "read_timestamp",
    "repo_name",
    "skeleton",
    "write_timestamp",
]
