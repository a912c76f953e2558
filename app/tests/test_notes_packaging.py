"""What Portage installs around the package: launcher, OpenRC files, dependencies."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

APP_DIR = Path(__file__).resolve().parent.parent
LAUNCHER = APP_DIR / "bin" / "notes"
INITD = APP_DIR / "openrc" / "notes.initd"
CONFD = APP_DIR / "openrc" / "notes.confd"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTES_") and k != "PYTHONPATH"}
    env.update(extra)
    return env


@pytest.mark.parametrize("script", [LAUNCHER, INITD, CONFD])
def test_shell_files_parse_as_posix_sh(script: Path) -> None:
    subprocess.run(["sh", "-n", str(script)], check=True)


def test_launcher_is_executable_and_points_at_the_install_dir() -> None:
    assert os.access(LAUNCHER, os.X_OK)
    text = LAUNCHER.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert "PYTHONPATH=/usr/lib/notes\n" in text
    assert '-m notes "$@"' in text


@pytest.fixture
def installed(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the install layout under tmp_path, and a launcher pointing at it."""
    libdir = tmp_path / "usr" / "lib" / "notes"
    shutil.copytree(APP_DIR / "notes", libdir / "notes", ignore=shutil.ignore_patterns("__pycache__"))
    (libdir / "VERSION").write_text("2.0.0\n")
    etc = tmp_path / "etc" / "notes" / "notes.toml"
    etc.parent.mkdir(parents=True)
    etc.write_text(f'[notes]\ndatabase = "{tmp_path / "var" / "notes.db"}"\n')
    launcher = tmp_path / "usr" / "bin" / "notes"
    launcher.parent.mkdir(parents=True)
    text = LAUNCHER.read_text().replace("/usr/lib/notes", str(libdir)).replace("/etc/notes/notes.toml", str(etc))
    launcher.write_text(text)
    launcher.chmod(0o755)
    return launcher, tmp_path


def test_launcher_runs_the_installed_package_with_the_etc_config(installed: tuple[Path, Path]) -> None:
    launcher, root = installed
    decoy = root / "cwd" / "notes"  # a ./notes in the caller's directory must not win
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("")
    (decoy / "__main__.py").write_text("print('decoy')\n")
    env = clean_env(NOTES_PYTHON=sys.executable)

    def launch(*args: str) -> str:
        result = subprocess.run([str(launcher), *args], env=env, cwd=decoy.parent, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert launch("--version") == "notes 2.0.0\n"
    assert "migrated schema 0 -> 1" in launch("migrate")
    assert (root / "var" / "notes.db").exists()


def test_installed_package_imports_only_stdlib_flask_and_waitress(installed: tuple[Path, Path]) -> None:
    _, root = installed
    libdir = root / "usr" / "lib" / "notes"
    probe = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import notes, notes.__main__, notes.backup, waitress\n"
        "notes.create_app(notes.Config(database='/nonexistent.db'))\n"
        "names = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(' '.join(sorted(names - set(sys.stdlib_module_names) - set(sys.builtin_module_names))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-P", "-c", probe], env=clean_env(PYTHONPATH=str(libdir)),
        capture_output=True, text=True, check=True,
    )
    third_party = set(result.stdout.split()) - {"notes"}
    flask_and_its_deps = {"flask", "werkzeug", "jinja2", "markupsafe", "itsdangerous", "click", "blinker", "waitress"}
    assert third_party <= flask_and_its_deps, third_party - flask_and_its_deps


STUBS = r"""
calls=""
record() { calls="$calls|$*"; }
need() { record need "$@"; }
use() { record use "$@"; }
checkpath() { record checkpath "$@"; }
ebegin() { record ebegin "$@"; }
eend() { record eend "$@"; return "$1"; }
su() { record su "$@"; return 0; }
"""


def openrc_eval(body: str, **env: str) -> str:
    script = f"{STUBS}\n. '{INITD}'\n{body}\n"
    result = subprocess.run(["sh", "-c", script], env=clean_env(**env), capture_output=True, text=True, check=True)
    return result.stdout


def test_initd_service_definition() -> None:
    out = openrc_eval(
        'printf "%s\\n" "$command" "$command_args" "$command_user" "$pidfile" "$command_background" '
        '"$(sh -c \'echo $NOTES_CONFIG\')"'
    )
    command, args, user, pidfile, background, config = out.splitlines()
    assert command == "/usr/bin/notes"
    assert args == "serve"
    assert user == "notes:notes"
    assert pidfile == "/run/notes.pid"
    assert background == "yes"
    assert config == "/etc/notes/notes.toml"  # exported to the service's environment
    assert INITD.read_text().startswith("#!/sbin/openrc-run\n")


def test_initd_depends_on_net() -> None:
    assert "|need net" in openrc_eval('depend; echo "$calls"')


def test_initd_start_pre_prepares_dirs_then_migrates_as_service_user() -> None:
    calls = openrc_eval('start_pre; echo "rc=$? $calls"', NOTES_USER="svc", NOTES_GROUP="svcgrp")
    assert calls.startswith("rc=0 ")
    assert "|checkpath --directory --owner svc:svcgrp --mode 0750 /var/lib/notes" in calls
    assert "|su -s /bin/sh -c exec /usr/bin/notes migrate svc" in calls
    assert calls.index("checkpath") < calls.index("|su ")


def test_initd_start_pre_fails_when_migrate_fails() -> None:
    out = openrc_eval('su() { return 3; }; start_pre; echo "rc=$?"')
    assert out.strip().endswith("rc=3")
