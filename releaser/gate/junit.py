"""JUnit XML, both ways: the app tests' report read back (how many ran, which
failed), and the gate's own report written (one test case per step), so a CI
server shows both next to each other."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from releaser.gate.steps import StepResult

#: Failed tests named in a step's reason, at most.
NAMED = 3


def judge_tests(result: StepResult, report: Path) -> StepResult:
    """The tests step, judged by its exit status and explained by its JUnit report."""
    counts, failed = _read(report)
    if counts is None:
        detail = f"no JUnit report at {report}" + ("" if result.ok else f"; {result.detail}")
        return StepResult("tests", False, detail, result.seconds, result.output)
    tests, failures = counts
    if result.ok and not failures:
        return StepResult("tests", True, f"{tests} passed (JUnit: {report.name})",
                          result.seconds, result.output)
    named = ", ".join(failed[:NAMED]) + (" ..." if len(failed) > NAMED else "")
    detail = (f"{failures} of {tests} failed: {named}" if failures
              else f"{result.detail} although the report shows no failure")
    return StepResult("tests", False, detail, result.seconds, result.output)


def _read(report: Path) -> tuple[tuple[int, int] | None, list[str]]:
    """(tests, failures + errors) and the failed test names; (None, []) without a report."""
    try:
        root = ET.parse(report).getroot()
    except (OSError, ET.ParseError):
        return None, []
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    tests = sum(int(s.get("tests", 0)) for s in suites)
    failed = [f"{case.get('classname', '')}::{case.get('name', '')}".lstrip(":")
              for s in suites for case in s.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    return (tests, len(failed)), failed


def write_gate_report(path: Path, steps: list[StepResult]) -> None:
    """One ``testsuite`` named releaser-gate, a ``testcase`` per step."""
    suite = ET.Element("testsuite", name="releaser-gate", tests=str(len(steps)),
                       failures=str(sum(not s.ok for s in steps)), errors="0",
                       time=f"{sum(s.seconds for s in steps):.3f}")
    for step in steps:
        case = ET.SubElement(suite, "testcase", classname="releaser.gate", name=step.name,
                             time=f"{step.seconds:.3f}")
        if not step.ok:
            failure = ET.SubElement(case, "failure", message=step.detail)
            failure.text = step.output[-20000:]
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
