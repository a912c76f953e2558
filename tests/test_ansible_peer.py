"""The Ansible peer of promote (bench/ansible_peer/) stays well formed and in step with releaser.

Read as YAML and INI only: no Ansible, no network.  The benchmark
(bench/peer_bench.py) runs it; these tests keep it honest between runs:
the per-node steps, their argv as releaser builds them, and the rollout as
releaser's default policy.
"""

from __future__ import annotations

import configparser
import inspect
from pathlib import Path

import pytest
import yaml

from releaser.appcontract import DUMP, VERIFY_DUMP, AppContract
from releaser.config.model import PolicyConfig
from releaser.hosts.health import check_health
from releaser.hosts.portage_commands import EMERGE_BASE

PEER = Path(__file__).resolve().parent.parent / "bench" / "ansible_peer"


@pytest.fixture(scope="module")
def play() -> dict:
    plays = yaml.safe_load((PEER / "site.yml").read_text())
    assert isinstance(plays, list) and len(plays) == 1
    return plays[0]


def commands(play: dict) -> list[list[str]]:
    """The argv of every command task, in order."""
    return [task["ansible.builtin.command"]["argv"] for task in play["tasks"]
            if "ansible.builtin.command" in task]


def test_rollout_is_releasers_default_policy(play):
    policy = PolicyConfig()
    assert (policy.canary, policy.batch_size, policy.max_fail) == (1, "25%", "0")
    assert play["serial"] == [1, "25%"]
    assert play["max_fail_percentage"] == 0
    assert play["gather_facts"] is False
    cfg = configparser.ConfigParser()
    cfg.read(PEER / "ansible.cfg")
    assert cfg.getint("defaults", "forks") == policy.concurrency
    assert cfg.getboolean("defaults", "host_key_checking") is True


def test_steps_in_releasers_order(play):
    firsts = [argv[:2] if argv[0] == "python3" else argv[:1] for argv in commands(play)]
    steps = [" ".join(step) for step in firsts]
    assert steps == ["emaint", "ls", "quickpkg", "python3 -P", "python3 -P", "emerge",
                     "rc-service"]
    assert [argv[4] for argv in commands(play) if argv[0] == "python3"] == [DUMP, VERIFY_DUMP]
    assert "ansible.builtin.uri" in play["tasks"][-1]


def test_argv_as_releaser_builds_it(play):
    """Same commands as releaser's own builders (the module name a template variable)."""
    sync, _ls, quickpkg, dump, verify, emerge, restart = commands(play)
    assert sync[:3] == ["emaint", "sync", "-r"]
    assert quickpkg[:2] == ["quickpkg", "--include-config=y"]
    contract = AppContract("notes")
    assert [a.replace("{{ app_module }}", "notes") for a in dump[:-1]] == \
        contract.command(DUMP, "FILE")[:-1]
    assert [a.replace("{{ app_module }}", "notes") for a in verify[:-1]] == \
        contract.command(VERIFY_DUMP, "FILE")[:-1]
    assert dump[-1] == verify[-1] == "{{ dump_file }}"
    assert tuple(emerge[:-1]) == EMERGE_BASE and emerge[-1].startswith("=")
    assert restart == ["rc-service", "{{ service }}", "restart"]


def test_dump_checked_before_install(play):
    """The playbook asserts the verified dump is the written one before it emerges."""
    names = [task.get("name", "") for task in play["tasks"]]
    check = next(task for task in play["tasks"]
                 if "ansible.builtin.assert" in task and "v.sha256 == d.sha256"
                 in task["ansible.builtin.assert"]["that"])
    assert names.index(check["name"]) < names.index("Emerge the new version")
    assert "v.integrity == 'ok'" in check["ansible.builtin.assert"]["that"]


def test_health_gate_waits_for_new_version(play):
    health = play["tasks"][-1]
    assert health["ansible.builtin.uri"]["url"] == "{{ health_url }}"
    assert "health.json.version | default('') == new_version" in health["until"]
    assert "health.json.status | default('') == 'ok'" in health["until"]
    assert health["delay"] == inspect.signature(check_health).parameters["interval"].default
    assert "health_timeout / " in health["retries"].replace("| float ", "")
