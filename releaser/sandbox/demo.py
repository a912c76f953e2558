"""``releaser demo``: the main job on the embedded default, a local sandbox fleet.

It copies this repository's app into a fresh git repository inside the
sandbox (the demo commits and tags there, never in the project), creates a
sandbox with two staging and two production nodes, and then runs what an
operator runs: promote v1.0.0 to staging and production, make v1.1.0, promote
it the same way, then what on-call runs: roll production back to v1.0.0 (plan
first, from the binary packages taken before the upgrade), and show the
status.  Every step goes through the same code as ``releaser promote``
against real hosts.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from releaser.config import load_config
from releaser.errors import ReleaserError, SandboxError, UsageError
from releaser.deploy.promote import promote
from releaser.cli.report import print_promote, print_status
from releaser.sandbox.world import DEFAULT_NODES, default_app, down_sandbox, init_sandbox
from releaser.deploy.status import environment_status

GIT_ID = ["-c", "user.name=releaser demo", "-c", "user.email=demo@localhost"]


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *GIT_ID, "-C", str(repo), *args], check=True, capture_output=True)


def check_project(project: Path) -> Path:
    """``project``'s app/ folder, if it holds the notes demo app; else UsageError."""
    app = project / "app"
    if not (app / "notes").is_dir():
        raise UsageError(f"{project}: no app/ with the notes demo app here; run the demo from "
                         "the releaser repository")
    return app


def make_source(project: Path, dest: Path) -> Path:
    """A git repository holding a copy of ``project``'s app/, tagged v1.0.0."""
    app = check_project(project)
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
    text = (text[:at] + '\n    (2, "additive", """ALTER TABLE notes ADD COLUMN tags TEXT NOT NULL DEFAULT \'\';"""),'
            + text[at:])
    schema.write_text(text)
    _git(source, "commit", "-q", "-am", "notes 1.1.0: tags column")
    _git(source, "tag", "v1.1.0")


def run_demo(directory: Path | None, *, project: Path, keep: bool,
             echo: Callable[[str], None]) -> None:
    """Run the demo under ``directory`` (default: a new temporary folder).

    Bad arguments are refused (UsageError) before anything is made.  Once
    the demo has made something, any failure is a SandboxError that says
    what is left: its files, and whether the sandbox still runs.
    """
    check_project(project)
    if directory is not None:
        base = Path(directory).absolute()
        for taken in (base / "src", base / "sandbox"):
            if taken.exists():
                raise UsageError(f"{taken} already exists: give the demo a new or empty "
                                 "directory")
    else:
        base = Path(tempfile.mkdtemp(prefix="releaser-demo-"))
    demo = _Demo(base, project, keep, echo)
    try:
        demo.run()
    except SandboxError:
        raise
    except (ReleaserError, OSError, subprocess.CalledProcessError) as exc:
        raise SandboxError(f"demo stopped: {exc}; {demo.left_behind()}") from exc


class _Demo:
    """One run of the demo; knows what it has left behind so far."""

    def __init__(self, base: Path, project: Path, keep: bool, echo: Callable[[str], None]):
        self.base, self.project, self.keep, self.echo = base, project, keep, echo
        self.sandbox_up = False
        self.started = time.monotonic()

    def left_behind(self) -> str:
        sandbox = self.base / "sandbox"
        if not self.sandbox_up:
            return f"what it made so far is in {self.base}"
        if self.keep:
            return (f"the sandbox is still running at {sandbox} (stop it with: "
                    f"releaser sandbox down {sandbox})")
        return f"the sandbox was stopped; its files are kept in {self.base} for inspection"

    def t(self) -> str:
        return f"[{time.monotonic() - self.started:6.1f}s]"

    def progress(self, msg: str) -> None:
        self.echo(f"{self.t()}   {msg}")

    def stop(self, what: str) -> None:
        raise SandboxError(f"demo stopped: {what}; {self.left_behind()}")

    def run(self) -> None:
        base, echo, t = self.base, self.echo, self.t
        echo(f"{t()} 1. source: a git repository with the notes app at {base / 'src'}")
        source = make_source(self.project, base / "src")
        echo(f"{t()} 2. sandbox: central repository, HTTP server, "
             f"{sum(DEFAULT_NODES.values())} nodes with real Portage; overlays signed with a "
             f"release key per environment ({base / 'sandbox' / 'gnupg'}), verified by nodes")
        app = default_app(source)
        config_path = init_sandbox(base / "sandbox", app, DEFAULT_NODES, progress=self.progress)
        self.sandbox_up = True
        try:
            self._pipeline(load_config(config_path), source)
        finally:
            if not self.keep:
                down_sandbox(base / "sandbox")
        echo(f"\ndemo finished in {time.monotonic() - self.started:.1f}s; sandbox at "
             f"{base / 'sandbox'}" + (f" (running; stop with: releaser sandbox down "
                                       f"{base / 'sandbox'})" if self.keep else ""))

    def _pipeline(self, config, source: Path) -> None:
        echo, t = self.echo, self.t
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
            report = promote(config, env, progress=self.progress)
            print_promote(report)
            if not report.ok:
                self.stop(f"promote {env} failed")
        echo(f"{t()} 8. on-call: rollback production (plan, then back to the previous version)")
        from releaser.central.repository import CentralRepository
        from releaser.cli.report import print_rollback, print_rollback_plan
        from releaser.deploy.rollback import execute_rollback, plan_rollback

        central = CentralRepository.from_config(config)
        plan = plan_rollback(config, central, "production")
        print_rollback_plan(plan)
        rolled = execute_rollback(config, central, plan, progress=self.progress)
        print_rollback(rolled)
        if not rolled.ok:
            self.stop("rollback failed")
        echo(f"{t()} 9. status")
        for env in ("staging", "production"):
            print_status(environment_status(config, central, env))
