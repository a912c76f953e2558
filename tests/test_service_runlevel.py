"""OpenRC's default runlevel: the app is added once so OpenRC starts it at boot.

At the Runner seam: a scripted host answers ``rc-update`` as OpenRC's own
does (listed, not listed, a failing add), and ``OpenRC.enable`` must add the
service once and say what rc-update said when it fails.  The sandbox's
stand-in is tested against the same behaviour in test_services.py.
"""

from __future__ import annotations

import pytest

from releaser.errors import NodeError, UsageError
from releaser.hosts.services import OpenRC




class _ScriptedRunner:
    """A host's runner at the seam: expects ``script``'s argv in order, answers each."""

    host = "web1"

    def __init__(self, script):
        self.script = list(script)

    def run(self, argv, *, check=True, env=None, input=None, timeout=None):
        from releaser.hosts.runner import CommandResult

        expected, (code, out, err) = self.script.pop(0)
        assert list(argv) == expected
        return CommandResult(tuple(argv), code, out, err)


SHOW = ["rc-update", "show", "default"]
LISTED = (0, "                  ssh | default\n                notes | default\n", "")
NOT_LISTED = (0, "                  ssh | default\n              notesd | default\n", "")


def test_enable_adds_the_service_to_the_default_runlevel_once():
    runner = _ScriptedRunner([(SHOW, NOT_LISTED),
                              (["rc-update", "add", "notes", "default"],
                               (0, " * service notes added to runlevel default\n", ""))])
    assert OpenRC().enable(runner, "notes") is True
    assert not runner.script
    again = _ScriptedRunner([(SHOW, LISTED)])  # an upgrade: asked, nothing added
    assert OpenRC().enable(again, "notes") is False
    assert not again.script


def test_enable_fails_with_what_rc_update_said_unless_the_service_got_there():
    add = ["rc-update", "add", "notes", "default"]
    refused = (1, "", " * rc-update: service `notes' does not exist\n")
    runner = _ScriptedRunner([(SHOW, NOT_LISTED), (add, refused), (SHOW, NOT_LISTED)])
    with pytest.raises(NodeError, match=r"^web1: rc-update add notes default failed \(exit 1\): "
                                        r"\* rc-update: service `notes' does not exist$"):
        OpenRC().enable(runner, "notes")
    raced = _ScriptedRunner([(SHOW, NOT_LISTED), (add, (1, "", "busy\n")), (SHOW, LISTED)])
    assert OpenRC().enable(raced, "notes") is False  # another run added it meanwhile
    broken = _ScriptedRunner([(SHOW, (127, "", "sh: rc-update: not found\n"))])
    with pytest.raises(NodeError, match="rc-update show default failed \\(exit 127\\): "
                                        "sh: rc-update: not found"):
        OpenRC().enable(broken, "notes")
    with pytest.raises(UsageError):
        OpenRC().enable(_ScriptedRunner([]), "-notes")
