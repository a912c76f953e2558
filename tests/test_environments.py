"""Any environment name works: ``development`` next to staging and production, each
environment's overlay named by its ``overlay`` setting, everywhere."""

from __future__ import annotations

import json
import subprocess

import pytest

from releaser.cli import main
from releaser.config import load_config
from releaser.errors import UsageError
from releaser.hosts import portage_commands as portage_tools
from releaser.hosts.local_root import portage_env
from releaser.hosts.runner import LocalRunner
from releaser.sandbox import world

from .sandboxes import Sandbox, add_migration

NODE = "development-1"
OVERLAY = "acme-dev"  # not the default releaser-development: the setting is what counts


def test_a_development_environment_joins_the_pipeline_before_staging(tmp_path):
    nodes = world.parse_nodes("production=1,development=1,staging=1,qa=1")
    assert world.ordered_environments(nodes) == ["development", "staging", "production", "qa"]
    made = [world.SandboxNode(f"{env}-1", env, tmp_path / f"{env}-1", 8000 + i)
            for i, env in enumerate(nodes)]
    text = world.render_config(world.default_app(tmp_path), "http://127.0.0.1:9", made,
                               overlays=world.overlay_names(nodes, {"qa": "acme-qa"}))
    (tmp_path / "releaser.toml").write_text(text)
    config = load_config(tmp_path / "releaser.toml")
    envs = config.environments
    assert {e: (envs[e].overlay, envs[e].promote_from) for e in envs} == {
        "development": ("releaser-development", None),
        "staging": ("releaser-staging", "development"),
        "production": ("releaser-production", "staging"),
        "qa": ("acme-qa", None)}


@pytest.mark.parametrize("nodes,overlays,message", [
    ({"QA": 1}, {}, "'QA' is not an environment name"),
    ({"qa": 1}, {"qa": "bad name"}, "'bad name' is not a Portage repository name"),
    ({"qa": 1}, {"staging": "x"}, "overlay names for environments without nodes: staging"),
])
def test_bad_environment_or_overlay_names_are_refused_before_anything_is_made(
        tmp_path, nodes, overlays, message):
    with pytest.raises(UsageError, match=message):
        world.init_sandbox(tmp_path / "sb", world.default_app(tmp_path), nodes,
                           overlays=overlays)
    assert not (tmp_path / "sb").exists()


def cli(sb: Sandbox, *args: str) -> int:
    return main(["-c", str(sb.config_path), *args])


def installed(sb: Sandbox) -> str | None:
    runner = LocalRunner(env=portage_env(sb.node_root(NODE)))
    return portage_tools.installed_version(runner, str(sb.node_root(NODE)), "www-apps/notes")


def test_promote_status_and_rollback_on_a_development_environment(tmp_path, capsys):
    sb = Sandbox(tmp_path, {"development": 1}, overlays={"development": OVERLAY})
    try:
        assert sb.config.environment("development").overlay == OVERLAY
        repos_conf = sb.node_root(NODE) / f"etc/portage/repos.conf/{OVERLAY}.conf"
        assert f"[{OVERLAY}]\n" in repos_conf.read_text()

        assert cli(sb, "promote", "development") == 0
        assert installed(sb) == "1.0.0"
        add_migration(sb.source, "v2.0.0")
        assert cli(sb, "promote", "development") == 0
        assert installed(sb) == "2.0.0"
        # the central overlay is the repository the setting names
        name = subprocess.run(["git", "--git-dir", str(sb.central / "overlays/development.git"),
                               "show", "main:profiles/repo_name"], capture_output=True,
                              text=True, check=True).stdout
        assert name == f"{OVERLAY}\n"
        assert (sb.node_root(NODE) / "var/db/repos" / OVERLAY / "www-apps/notes"
                / "notes-2.0.0.ebuild").is_file()
        capsys.readouterr()

        assert cli(sb, "rollback", "development", "--yes") == 0
        assert "rollback plan for development: 2.0.0 -> 1.0.0" in capsys.readouterr().out
        assert installed(sb) == "1.0.0"
        assert cli(sb, "status", "development", "--json") == 0
        [status] = json.loads(capsys.readouterr().out)
        assert (status["env"], status["offered"], status["masked"], status["current"]) == (
            "development", ["1.0.0", "2.0.0"], ["2.0.0"], "1.0.0")
        assert [(n["name"], n["installed"], n["healthy"], n["drift"])
                for n in status["nodes"]] == [(NODE, "1.0.0", True, "")]
    finally:
        sb.down()
