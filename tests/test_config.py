"""releaser.toml validation: every error names the file and the key."""

import pytest

from releaser.config import load_config
from releaser.errors import ConfigError, UsageError

GOOD = """
[app]
name = "notes"
rdepend = ["dev-python/flask"]

[central]
path = "central"
distfiles_url = "http://127.0.0.1:8700/distfiles"

[ssh]
known_hosts = "ssh/known_hosts"
identity_file = "ssh/id_ed25519"

[environments.staging]
nodes = [{ name = "s1", root = "nodes/s1", health_url = "http://127.0.0.1:9101/health" }]

[environments.production]
promote_from = "staging"
policy = { canary = 1, batch_size = 2, max_fail = "25%" }
nodes = [{ name = "p1", address = "127.0.0.5", health_url = "http://127.0.0.5:8080/health" }]
"""


def test_good_config_loads(tmp_path):
    f = tmp_path / "releaser.toml"
    f.write_text(GOOD)
    cfg = load_config(f)
    assert cfg.app.cp == "www-apps/notes"
    assert cfg.central.path == tmp_path / "central"
    assert cfg.environments["staging"].overlay == "releaser-staging"
    assert cfg.environments["staging"].nodes[0].root == tmp_path / "nodes" / "s1"
    assert cfg.environments["production"].policy.max_fail == "25%"
    assert not cfg.environments["production"].nodes[0].is_local
    with pytest.raises(UsageError, match="unknown environment 'qa'"):
        cfg.environment("qa")


@pytest.mark.parametrize("change,key", [
    (('name = "notes"', 'name = 3'), "app.name: expected a string"),
    (('name = "notes"', 'name = "no/tes"'), "app.name"),
    (('rdepend = ["dev-python/flask"]', 'rdepend = ["flask;rm"]'), "app.rdepend[0]"),
    (('canary = 1', 'canary = -1'), "environments.production.policy.canary"),
    (('root = "nodes/s1", ', ''), "environments.staging.nodes[0].root"),
    (('promote_from = "staging"', 'promote_from = "qa"'), "environments.production.promote_from"),
    (('[central]', '[central]\nbogus = 1'), "central.bogus: unknown key"),
    (('distfiles_url = "http', 'distfiles_url = "ftp'), "central.distfiles_url"),
])
def test_bad_config_names_file_and_key(tmp_path, change, key):
    f = tmp_path / "releaser.toml"
    f.write_text(GOOD.replace(*change))
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert str(f) in str(err.value) and key in str(err.value)


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "nope.toml")
    f = tmp_path / "releaser.toml"
    f.write_text("[app\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(f)
