"""`releaser status`: what the overlay offers is read with git on central, and a
git that fails there is an unknown answer, never "nothing offered"."""

from __future__ import annotations

import json

from releaser.cli import main

from .sandboxes import Sandbox


def test_git_failing_on_central_is_unknown_not_nothing_offered(tmp_path, capsys):
    sb = Sandbox(tmp_path, {"staging": 1})
    try:
        assert main(["-c", str(sb.config_path), "status", "staging", "--json"]) == 0
        [env] = json.loads(capsys.readouterr().out)
        assert env["offered"] == [] and env["overlay_error"] == ""  # truly nothing yet

        # the overlay repository on central is broken: git cannot read it
        head = sb.central / "overlays/staging.git/HEAD"
        head.rename(head.with_name("HEAD.aside"))
        assert main(["-c", str(sb.config_path), "status", "staging", "--json"]) == 1
        [env] = json.loads(capsys.readouterr().out)
        assert env["offered"] is None
        assert env["overlay_error"].startswith("cannot read the overlay: central: git "), env
        assert [n["name"] for n in env["nodes"]] == ["staging-1"]  # nodes still reported

        assert main(["-c", str(sb.config_path), "status", "staging"]) == 1
        out = capsys.readouterr().out
        assert "staging: overlay offers UNKNOWN (cannot read the overlay: central: git" in out
        assert "offers nothing" not in out
    finally:
        sb.down()
