"""Version lookup: NOTES_VERSION, else <install dir>/VERSION, else 0+unknown."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from notes.version import UNKNOWN_VERSION, VERSION_FILE, get_version

APP_DIR = Path(__file__).resolve().parent.parent


def test_version_file_is_next_to_the_package_directory() -> None:
    assert VERSION_FILE == APP_DIR / "VERSION"


def test_from_file(tmp_path: Path) -> None:
    (tmp_path / "VERSION").write_text("1.4.0\n")
    assert get_version({}, tmp_path / "VERSION") == "1.4.0"


def test_env_wins_over_file(tmp_path: Path) -> None:
    (tmp_path / "VERSION").write_text("1.4.0\n")
    assert get_version({"NOTES_VERSION": "1.5.0_rc1"}, tmp_path / "VERSION") == "1.5.0_rc1"


def test_unknown_when_neither(tmp_path: Path) -> None:
    assert get_version({}, tmp_path / "VERSION") == UNKNOWN_VERSION == "0+unknown"


def test_empty_file_and_empty_env_count_as_absent(tmp_path: Path) -> None:
    (tmp_path / "VERSION").write_text("\n")
    assert get_version({"NOTES_VERSION": " "}, tmp_path / "VERSION") == "0+unknown"


def test_installed_layout_reads_its_version_file(tmp_path: Path) -> None:
    """Copy the package the way the ebuild installs it and ask the real CLI."""
    libdir = tmp_path / "usr" / "lib" / "notes"
    shutil.copytree(APP_DIR / "notes", libdir / "notes", ignore=shutil.ignore_patterns("__pycache__"))
    (libdir / "VERSION").write_text("3.1.4\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTES_")}
    env["PYTHONPATH"] = str(libdir)

    def cli_version(extra: dict[str, str]) -> str:
        result = subprocess.run(
            [sys.executable, "-P", "-m", "notes", "--version"],
            env={**env, **extra}, cwd=tmp_path, capture_output=True, text=True, check=True,
        )
        return result.stdout.strip()

    assert cli_version({}) == "notes 3.1.4"
    assert cli_version({"NOTES_VERSION": "9.9"}) == "notes 9.9"
