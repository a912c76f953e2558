"""``releaser demo``: the main job on the embedded default, a local sandbox fleet.

It copies this repository's app into a fresh git repository inside the
sandbox (the demo commits and tags there, never in the project), creates a
sandbox with two staging and two production nodes, and then runs what an
operator runs: promote v1.0.0 to staging and production, make v1.1.0, promote
it the same way, then what on-call runs: roll production back to v1.0.0 (plan
first, from the binary packages taken before the upgrade), and show the status.  Every step goes through the same code
as ``releaser promote`` against real hosts.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from .config import load_config
from .errors import UsageError
from .promote import promote
from .report import print_promote, print_status
from .sandbox import DEFAULT_NODES, down_sandbox, init_sandbox
from .status import environment_status

GIT_ID = ["-c", "user.name=releaser demo", "-c", "user.email=demo@localhost"]


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *GIT_ID, "-C", str(repo), *args], check=True, capture_output=True)


def make_source(project: Path, dest: Path) -> Path:
    """A git repository holding a copy of ``project``'s app/, tagged v1.0.0."""
    app = project / "app"
    if not (app / "notes").is_dir():
        raise UsageError(f"{project}: no app/ with the notes demo app here; run the demo from "
                         "the releaser repository")
    shutil.copytree(app, dest / "app", ignore=shutil.ignore_patterns(
        "__pycache__", "*.pyc", ".pytest_cache"))
    _git(dest, "init", "-q", "-b", "main")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "notes 1.0.0")
    _git(dest, "tag", "v1.0.0")
    return dest


def second_release(source: Path) -> None:
    """A real change: the app's schema gains a column (migration 2), tagged v1.1.0."""
    schema = source / "app" / "notes" / "schema.py"
    text = schema.read_text()
    marker = "\n]"
    at = text.rindex(marker)
    text = (text[:at] + '\n    (2, """ALTER TABLE notes ADD COLUMN tags TEXT NOT NULL DEFAULT \'\';"""),'
            + text[at:])
    schema.write_text(text)
    _git(source, "commit", "-q", "-am", "notes 1.1.0: tags column")
    _git(source, "tag", "v1.1.0")


def run_demo(directory: Path | None, *, project: Path, keep: bool,
             echo: Callable[[str], None]) -> None:
    started = time.monotonic()
    base = Path(directory).absolute() if directory else Path(tempfile.mkdtemp(prefix="releaser-demo-"))
    t = lambda: f"[{time.monotonic() - started:6.1f}s]"  # noqa: E731
    progress = lambda msg: echo(f"{t()}   {msg}")  # noqa: E731

    echo(f"{t()} 1. source: a git repository with the notes app at {base / 'src'}")
    source = make_source(project, base / "src")
    echo(f"{t()} 2. sandbox: central repository, HTTP server, "
         f"{sum(DEFAULT_NODES.values())} nodes with real Portage")
    from .cli import default_app
    import dataclasses

    app = dataclasses.replace(default_app(), source=source)
    config_path = init_sandbox(base / "sandbox", app, DEFAULT_NODES, progress=progress)
    try:
        config = load_config(config_path)
        steps = [("3. promote staging (v1.0.0)", "staging"),
                 ("4. promote production (v1.0.0)", "production"),
                 ("5. new commit, tagged v1.1.0: schema migration 2", None),
                 ("6. promote staging (v1.1.0)", "staging"),
                 ("7. promote production (v1.1.0)", "production")]
        for title, env in steps:
            echo(f"{t()} {title}")
            if env is None:
                second_release(source)
                continue
            report = promote(config, env, progress=progress)
            print_promote(report)
            if not report.ok:
                raise UsageError(f"demo stopped: promote {env} failed (sandbox kept at {base})")
        echo(f"{t()} 8. on-call: rollback production (plan, then back to the previous version)")
        from .promote import central_of
        from .report import print_rollback, print_rollback_plan
        from .rollback import execute_rollback, plan_rollback

        central = central_of(config)
        plan = plan_rollback(config, central, "production")
        print_rollback_plan(plan)
        rolled = execute_rollback(config, central, plan, progress=progress)
        print_rollback(rolled)
        if not rolled.ok:
            raise UsageError(f"demo stopped: rollback failed (sandbox kept at {base})")
        echo(f"{t()} 9. status")
        for env in ("staging", "production"):
            print_status(environment_status(config, central, env))
    finally:
        if not keep:
            down_sandbox(base / "sandbox")
    echo(f"\ndemo finished in {time.monotonic() - started:.1f}s; sandbox at {base / 'sandbox'}"
         + (f" (running; stop with: releaser sandbox down {base / 'sandbox'})" if keep else ""))
