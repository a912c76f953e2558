"""Rollout safety on real sandbox fleets (directory nodes, real Portage, the real app).

- A run killed (``kill -9``) at any phase of a bad release's rollout is
  finished by the next run exactly as the killed one would have: the node is
  put back on the version it ran, the release masked, the ledger truthful.
- A release whose pkg_postinst fails goes no further than the canary.
- With the default policy a release that exits at start touches the canary
  only, and the other nodes never stop serving.
"""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.error
import urllib.request

import pytest

from releaser.central.ledger import WITHDRAWN
from releaser.cli import main
from releaser.hosts import portage_commands as portage_tools
from releaser.hosts.node import connect
from releaser.hosts.runner import LocalRunner
from releaser.hosts.local_root import portage_env

from .conftest import commit_all, git
from .sandboxes import Sandbox, kill_9_when, wait_for_orphaned_emerges


def cli(sb, *args):
    return main(["-c", str(sb.config_path), *args])


def node_config(sb, name):
    return next(n for n in sb.config.environment("staging").nodes if n.name == name)


def installed(sb, name):
    root = sb.node_root(name)
    return portage_tools.installed_version(LocalRunner(env=portage_env(root)), str(root),
                                           "www-apps/notes")


def served_version(sb, name):
    with urllib.request.urlopen(node_config(sb, name).health_url, timeout=5) as r:
        return json.loads(r.read())["version"]


def service_process(sb, name):
    node = connect(sb.config, node_config(sb, name))
    try:
        return node.service_process("notes")
    finally:
        node.close()


def ledger(sb):
    return json.loads((sb.central / "ledger" / "staging.json").read_text())


def masked(sb, version):
    """Whether the staging overlay on central masks notes-VERSION."""
    text = subprocess.run(["git", "--git-dir", str(sb.central / "overlays/staging.git"), "show",
                           "HEAD:profiles/package.mask"], capture_output=True, text=True).stdout
    return f"=www-apps/notes-{version}" in text.split()


def release_from_v1(source, tag, path, old, new):
    """A release tagged ``tag``: v1.0.0 with one replacement in app/``path``."""
    git(source, "checkout", "-q", "-B", f"release-{tag}", "v1.0.0")
    target = source / "app" / path
    text = target.read_text()
    assert old in text, (path, old)
    target.write_text(text.replace(old, new))
    commit_all(source, f"bad {tag}", when="2026-03-01T00:00:00+00:00")
    git(source, "tag", tag)


def unhealthy_release(source, tag):
    """Starts and listens, but its /health answers HTTP 500."""
    release_from_v1(source, tag, "notes/health.py", "return body, 200 if healthy else 503",
                    'return {**body, "status": "error"}, 500')


def exits_at_start_release(source, tag):
    """Its service exits as soon as it starts."""
    release_from_v1(source, tag, "notes/__main__.py",
                    '    """Migrate, then serve until SIGTERM/SIGINT; both stop cleanly with status 0."""\n',
                    '    """Migrate, then serve until SIGTERM/SIGINT; both stop cleanly with status 0."""\n'
                    '    raise NotesError("this release cannot start")\n')


def assert_back_on_1_0_0_and_withdrawn(sb, node, bad):
    """The node runs and serves 1.0.0; ``bad`` is withdrawn and masked; the ledger says so."""
    assert installed(sb, node) == "1.0.0" and served_version(sb, node) == "1.0.0"
    assert masked(sb, bad)
    data = ledger(sb)
    assert data["current"] == "1.0.0"
    assert data["releases"][bad]["state"] == WITHDRAWN and data["releases"][bad]["masked"]
    entry = data["nodes"][node]
    assert "attempt" not in entry, entry
    assert entry["version"] == "1.0.0" and entry["phase"] == "rolled-back"
    last = entry["last_attempt"]
    assert (last["target"], last["before"], last["outcome"]) == (bad, "1.0.0", "rolled-back")
    assert last["backups"]["binpkg"].endswith("notes-1.0.0.gpkg.tar")


@pytest.fixture(scope="module")
def one(tmp_path_factory):
    """One directory node on 1.0.0."""
    sandbox = Sandbox(tmp_path_factory.mktemp("safety1"), {"staging": 1})
    try:
        assert cli(sandbox, "promote", "staging") == 0
        yield sandbox
    finally:
        sandbox.down()


@pytest.mark.parametrize("marker,bad", [("staging-1: install\n", "1.1.0"),
                                        ("staging-1: restart\n", "1.2.0"),
                                        ("staging-1: health\n", "1.3.0"),
                                        ("staging-1: rolled-back: ", "1.6.0")],
                         ids=["install", "restart", "health-wait", "before-the-mask"])
def test_kill_9_during_a_bad_rollout_then_a_rerun_rolls_back(one, capsys, marker, bad):
    """Killed at install, restart, health wait, or once the node was rolled back but
    before the release was withdrawn: the re-run rolls back (or keeps the rollback)
    and masks."""
    unhealthy_release(one.source, f"v{bad}")
    seen = kill_9_when(one, ["promote", "staging"], marker)
    wait_for_orphaned_emerges()
    entry = ledger(one)["nodes"]["staging-1"]
    if marker.startswith("staging-1: rolled-back"):
        assert "attempt" not in entry and entry["last_attempt"]["outcome"] == "rolled-back"
        assert not masked(one, bad) and ledger(one)["releases"][bad]["state"] == "published"
    else:
        assert not any("rolling back" in line for line in seen), seen
        intent = entry["attempt"]
        assert (intent["target"], intent["before"]) == (bad, "1.0.0")
        assert intent["installed"] is ("install" not in marker)
        assert intent["backups"]["binpkg"].endswith("notes-1.0.0.gpkg.tar")
    capsys.readouterr()

    code = cli(one, "promote", "staging", "--json")
    report = json.loads(capsys.readouterr().out)
    node = report["nodes"][0]
    assert code == 4, json.dumps(report, indent=1)
    assert node["status"] == "rolled-back" and node["after"] == "1.0.0", node
    assert "HTTP 500" in node["detail"] and "3 server errors in a row" in node["detail"], node
    assert_back_on_1_0_0_and_withdrawn(one, "staging-1", bad)


def test_kill_9_then_plain_rollback_instead_of_a_rerun(one, capsys):
    """The ledger knows the version before the one in flight: ``rollback ENV`` needs no --to."""
    unhealthy_release(one.source, "v1.4.0")
    kill_9_when(one, ["promote", "staging"], "staging-1: health\n")
    assert installed(one, "staging-1") == "1.4.0"
    capsys.readouterr()
    assert cli(one, "rollback", "staging", "--yes") == 0, capsys.readouterr()
    assert installed(one, "staging-1") == "1.0.0" and served_version(one, "staging-1") == "1.0.0"
    assert masked(one, "1.4.0")
    data = ledger(one)
    assert data["current"] == "1.0.0" and data["releases"]["1.4.0"]["state"] == WITHDRAWN


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """Two directory nodes on 1.0.0, with the default policy."""
    sandbox = Sandbox(tmp_path_factory.mktemp("safety2"), {"staging": 2})
    try:
        assert cli(sandbox, "promote", "staging") == 0
        yield sandbox
    finally:
        sandbox.down()


def test_a_failing_postinst_goes_no_further_than_the_canary(two, capsys):
    """The first run, killed as the canary's rollback begins (the vdb holds the new version,
    never started: untested code on disk), is finished by the next run; later runs refuse."""
    git(two.source, "checkout", "-q", "-B", "release-v1.1.0", "v1.0.0")
    (two.source / "app" / "CHANGES").write_text("1.1.0\n")
    commit_all(two.source, "notes 1.1.0", when="2026-02-01T00:00:00+00:00")
    git(two.source, "tag", "v1.1.0")
    for name in ("staging-1", "staging-2"):
        hook = two.node_root(name) / "etc/portage/env/www-apps/notes"
        hook.parent.mkdir(parents=True, exist_ok=True)
        hook.write_text('post_pkg_postinst() {\n'
                        '\t[[ ${PV} == 1.1.0 ]] && die "site post-install step failed"\n}\n')
    untouched = service_process(two, "staging-2")

    seen = kill_9_when(two, ["promote", "staging"], "rolling back to 1.0.0")
    assert "postinst" in seen[-1], seen
    assert installed(two, "staging-1") == "1.1.0"  # merged, its pkg_postinst died
    capsys.readouterr()
    code = cli(two, "promote", "staging", "--json")
    report = json.loads(capsys.readouterr().out)
    nodes = {n["node"]: n for n in report["nodes"]}
    assert code == 4, json.dumps(report, indent=1)
    assert nodes["staging-1"]["status"] == "rolled-back", nodes
    assert "postinst" in nodes["staging-1"]["detail"], nodes
    assert nodes["staging-2"]["status"] == "skipped" and "canary" in report["halted"]
    assert_back_on_1_0_0_and_withdrawn(two, "staging-1", "1.1.0")

    # and again: refused, nothing touched
    assert cli(two, "promote", "staging") == 2
    assert "masked" in capsys.readouterr().err
    assert installed(two, "staging-2") == "1.0.0" and served_version(two, "staging-2") == "1.0.0"
    assert service_process(two, "staging-2") == untouched


def test_defaults_a_release_that_exits_at_start_touches_only_the_canary(two, capsys):
    """The other node keeps its process and answers every request throughout."""
    exits_at_start_release(two.source, "v1.5.0")
    untouched = service_process(two, "staging-2")
    url = node_config(two, "staging-2").health_url
    answers, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    answers.append(r.status)
            except (urllib.error.URLError, OSError) as exc:
                answers.append(repr(exc))
            stop.wait(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        code = cli(two, "promote", "staging", "--json")
    finally:
        stop.set()
        watcher.join()
    report = json.loads(capsys.readouterr().out)
    nodes = {n["node"]: n for n in report["nodes"]}
    assert code == 4, json.dumps(report, indent=1)
    assert nodes["staging-1"]["status"] == "rolled-back"
    assert "this release cannot start" in nodes["staging-1"]["detail"], nodes["staging-1"]
    assert nodes["staging-2"]["status"] == "skipped"
    assert len(answers) > 10 and set(answers) == {200}, answers
    assert service_process(two, "staging-2") == untouched
    assert installed(two, "staging-2") == "1.0.0"
    assert_back_on_1_0_0_and_withdrawn(two, "staging-1", "1.5.0")
