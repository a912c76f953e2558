"""``releaser gate`` (and ``promote --gate``): the quality gate before publishing.

Three kinds of step, each pass or fail with the reason in one line:

- the app's tests (``[gate] tests``), run in the app's folder of the commit
  being released (exported from git: what is tested is what is built), with a
  JUnit report the CI shows;
- ``pkgcheck scan`` on the generated ebuild, in a scratch overlay made from
  the environment overlays' skeleton: Gentoo's own QA, offline;
- the configured linters (``[gate] commands``).

Every step runs even after one fails (the report shows all that is wrong), and
the gate's own JUnit report (``gate.xml``) lists them.  A failure raises
``GateFailed`` (exit 8) naming the steps: nothing is published.
"""

from __future__ import annotations

import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from releaser.build import git_source as gitsource
from releaser.config import Config
from releaser.errors import GateFailed
from releaser.gate import junit
from releaser.gate.pkgcheck import pkgcheck_step
from releaser.gate.steps import StepResult, run_command

#: The app tests' JUnit report, and the gate's own, in the reports folder.
APP_REPORT, GATE_REPORT = "app-tests.xml", "gate.xml"


@dataclass
class GateReport:
    ref: str
    commit: str
    reports: Path
    steps: list[StepResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    def to_dict(self) -> dict:
        return {"ref": self.ref, "commit": self.commit, "ok": self.ok,
                "reports": str(self.reports), "seconds": round(self.seconds, 3),
                "steps": [s.to_dict() for s in self.steps]}

    def lines(self) -> list[str]:
        out = [f"gate {self.ref} ({self.commit[:12]}): {'passed' if self.ok else 'FAILED'}"]
        out += [f"  {s.line()}" for s in self.steps]
        out.append(f"  reports: {self.reports}")
        return out


def run_gate(config: Config, *, ref: str, release_dir: Path, reports: Path | None = None,
             allow_dirty: bool = False) -> GateReport:
    """Every gate step on ``ref`` and its built release (``release_dir``); the report."""
    started = time.monotonic()
    gate = config.gate
    reports = Path(reports or config.build_out / "reports").resolve()
    reports.mkdir(parents=True, exist_ok=True)
    repo = gitsource.open_repo(config.app.source)
    source = gitsource.resolve(repo, ref, config.app.subdir, allow_dirty=allow_dirty)
    report = GateReport(ref, source.hexsha, reports)
    with tempfile.TemporaryDirectory(prefix="releaser-gate-") as scratch:
        app_dir = _export(source, Path(scratch) / "app")
        if gate.tests:
            junit_path = reports / APP_REPORT
            junit_path.unlink(missing_ok=True)
            result = run_command("tests", _fill(gate.tests, junit_path), app_dir, gate.timeout)
            report.steps.append(junit.judge_tests(result, junit_path))
        if gate.pkgcheck:
            report.steps.append(pkgcheck_step(release_dir, Path(scratch) / "overlay"))
        for argv in gate.commands:
            filled = _fill(argv, None)
            report.steps.append(run_command(f"lint: {filled[0]}", filled, app_dir, gate.timeout))
    report.seconds = time.monotonic() - started
    junit.write_gate_report(reports / GATE_REPORT, report.steps)
    return report


def check_gate(report: GateReport) -> None:
    """GateFailed naming every failed step, when the gate did not pass."""
    if not report.ok:
        failed = "; ".join(f"{s.name}: {s.detail}" for s in report.steps if not s.ok)
        raise GateFailed(f"the quality gate failed on {report.commit[:12]}: {failed} "
                         f"(reports in {report.reports}); nothing was published")


def _fill(argv, junit_path: Path | None) -> list[str]:
    """The placeholders ``{python}`` and ``{junit}`` in a configured argv."""
    values = {"{python}": sys.executable, "{junit}": str(junit_path or "")}
    out = []
    for word in argv:
        for key, value in values.items():
            word = word.replace(key, value)
        out.append(word)
    return out


def _export(source: gitsource.SourceCommit, dest: Path) -> Path:
    """The app folder of the commit, written out of git (never the work tree)."""
    dest.mkdir(parents=True)
    archive = dest.parent / "app.tar"
    with open(archive, "wb") as fh:
        source.tree.repo.archive(fh, treeish=source.tree.hexsha, format="tar")
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    archive.unlink()
    return dest
