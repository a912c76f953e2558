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


def snapshot(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# Each value that could reach a command, a path on central or a node, or the ebuild.
REJECTED = [
    (('[environments.staging]', '[environments."../../etc"]'), 'environments."../../etc"'),
    (('[environments.staging]', '[environments.Staging]'), "environments.Staging"),
    (('[environments.staging]', '[environments.staging]\noverlay = "-x"'),
     "environments.staging.overlay"),
    (('[environments.staging]', '[environments.staging]\noverlay = "a/b"'),
     "environments.staging.overlay"),
    (('name = "s1"', 'name = "../x y;$(id)"'), "environments.staging.nodes[0].name"),
    (('name = "p1"', 'name = "."'), "environments.production.nodes[0].name"),
    (('address = "127.0.0.5"', 'address = "-oProxyCommand=touch /tmp/x"'),
     "environments.production.nodes[0].address"),
    (('address = "127.0.0.5"', 'address = "host name"'),
     "environments.production.nodes[0].address"),
    (('address = "127.0.0.5"', 'address = "127.0.0.5", port = 99999'),
     "environments.production.nodes[0].port"),
    (('address = "127.0.0.5"', 'address = "127.0.0.5", port = 0'),
     "environments.production.nodes[0].port"),
    (('address = "127.0.0.5"', 'address = "127.0.0.5", root = "srv/root"'),
     "environments.production.nodes[0].root"),
    (('address = "127.0.0.5"', 'address = "127.0.0.5", root = "/srv/a b"'),
     "environments.production.nodes[0].root"),
    (('root = "nodes/s1"', 'root = "nodes/$(id)"'), "environments.staging.nodes[0].root"),
    (('"http://127.0.0.1:9101/health"', '"not-a-url"'),
     "environments.staging.nodes[0].health_url"),
    (('"http://127.0.0.1:9101/health"', '"file:///etc/passwd"'),
     "environments.staging.nodes[0].health_url"),
    (('"http://127.0.0.1:9101/health"', '"http:///health"'),
     "environments.staging.nodes[0].health_url"),
    (('"http://127.0.0.1:9101/health"', '"http://127.0.0.1:99999/health"'),
     "environments.staging.nodes[0].health_url"),
    (('distfiles_url = "http://127.0.0.1:8700/distfiles"', 'distfiles_url = "file:///srv/d"'),
     "central.distfiles_url"),
    (('distfiles_url = "http://127.0.0.1:8700/distfiles"',
      'distfiles_url = "http://127.0.0.1:8700/d?x=1"'), "central.distfiles_url"),
    (('path = "central"', 'path = "central$(id)"'), "central.path"),
    (('path = "central"', 'path = "central"\naddress = "-oProxyCommand=x"'), "central.address"),
    (('path = "central"', 'path = "central"\naddress = "10.0.0.1"'), "central.path"),
    (('path = "central"', 'path = "/srv/central"\naddress = "10.0.0.1"\nport = 70000'),
     "central.port"),
    (('known_hosts = "ssh/known_hosts"\n', ''), "ssh.known_hosts"),
    (('identity_file = "ssh/id_ed25519"\n', ''), "ssh.identity_file"),
    (('[ssh]', '[ssh]\nuser = "root;id"'), "ssh.user"),
    (('[ssh]', '[ssh]\nuser = "-oProxyCommand=x"'), "ssh.user"),
    (('[ssh]', '[ssh]\nconnect_timeout = 0'), "ssh.connect_timeout"),
    (('[environments.staging]', '[environments.staging]\ndatabase = { path = "notes.db" }'),
     "environments.staging.database.path"),
    (('[environments.staging]',
      '[environments.staging]\ndatabase = { path = "/var/lib/$(id)/notes.db" }'),
     "environments.staging.database.path"),
    (('[environments.staging]',
      '[environments.staging]\ndatabase = { path = "/var/lib/../notes.db" }'),
     "environments.staging.database.path"),
    (('max_fail = "25%"', 'max_fail = "150%"'), "environments.production.policy.max_fail"),
    (('max_fail = "25%"', 'max_fail = "two"'), "environments.production.policy.max_fail"),
    (('max_fail = "25%"', 'max_fail = "1", health_timeout = 0'),
     "environments.production.policy.health_timeout"),
    (('max_fail = "25%"', 'max_fail = "1", health_timeout = -5'),
     "environments.production.policy.health_timeout"),
    (('max_fail = "25%"', 'max_fail = "1", health_timeout = nan'),
     "environments.production.policy.health_timeout"),
    (('promote_from = "staging"', 'promote_from = "production"'),
     "environments.production.promote_from"),
    (('name = "notes"', 'name = "notes"\ncategory = "www apps"'), "app.category"),
    (('name = "notes"', 'name = "notes"\ndescription = "' + "x" * 81 + '"'), "app.description"),
    (('name = "notes"', 'name = "notes"\nhomepage = "javascript:alert(1)"'), "app.homepage"),
    (('name = "notes"', 'name = "notes"\nlicense = "GPL-2"'), "app.license"),
    (('name = "notes"', 'name = "notes"\nlicense = "|| ( MIT"'), "app.license"),
    (('name = "notes"', 'name = "notes"\nlicense = "MIT;id"'), "app.license"),
    (('name = "notes"', 'name = "notes"\ntag_prefix = "v*"'), "app.tag_prefix"),
    (('name = "notes"', 'name = "notes"\nsubdir = "../elsewhere"'), "app.subdir"),
    # the app's contract (releaser.appcontract)
    (('name = "notes"', 'name = "no-tes"'), "app.name"),
    (('name = "notes"', 'name = "notes"\ndatabase_env = "notes_db"'), "app.database_env"),
    (('name = "notes"', 'name = "notes"\ndatabase_env = "PYTHONPATH"'), "app.database_env"),
    (('name = "notes"', 'name = "notes"\ndatabase_env = "LD_PRELOAD"'), "app.database_env"),
    (('name = "notes"', 'name = "notes"\ndatabase_env = "X=1 Y"'), "app.database_env"),
    (('name = "notes"', 'name = "notes"\nhealth_path = "health"'), "app.health_path"),
    (('name = "notes"', 'name = "notes"\nhealth_path = "/a/../health"'), "app.health_path"),
    (('name = "notes"', 'name = "notes"\nhealth_path = "/health?x=$(id)"'), "app.health_path"),
    (('health_url = "http://127.0.0.1:9101/health"', 'app_url = "http://127.0.0.1:9101/?x=1"'),
     "environments.staging.nodes[0].app_url"),
    (('health_url = "http://127.0.0.1:9101/health"',
      'health_url = "http://127.0.0.1:9101/health", app_url = "http://127.0.0.1:9101"'),
     "environments.staging.nodes[0].health_url"),
    (('health_url = "http://127.0.0.1:9101/health"', 'port = 22'),
     "environments.staging.nodes[0].health_url"),
]


@pytest.mark.parametrize("change,key", REJECTED, ids=[k for _c, k in REJECTED])
def test_rejected_value_exits_2_naming_file_and_key_and_touches_nothing(tmp_path, capsys,
                                                                        change, key):
    from releaser.cli import main

    f = tmp_path / "releaser.toml"
    text = GOOD.replace(*change)
    assert text != GOOD
    f.write_text(text)
    before = snapshot(tmp_path)
    assert main(["-c", str(f), "promote", "staging"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"releaser: error: {f}: {key}: ") and err.count("\n") == 1, err
    assert snapshot(tmp_path) == before


def test_good_values_pass_as_written(tmp_path):
    """The checks are not stricter than the world: IPv6, host names, https, licence groups."""
    f = tmp_path / "releaser.toml"
    f.write_text(GOOD.replace('address = "127.0.0.5"', 'address = "::1", root = "/srv/node-1"')
                 .replace('name = "notes"', 'name = "notes"\nlicense = "|| ( MIT )"\n'
                          'homepage = "https://notes.example.org/a_b-c?x=1"\ntag_prefix = "rel/v"')
                 .replace('path = "central"',
                          'path = "/srv/central"\naddress = "central.example.org"'))
    cfg = load_config(f)
    assert cfg.environments["production"].nodes[0].address == "::1"
    assert str(cfg.environments["production"].nodes[0].root) == "/srv/node-1"
    assert cfg.central.address == "central.example.org" and str(cfg.central.path) == "/srv/central"
    assert cfg.app.license == "|| ( MIT )" and cfg.app.tag_prefix == "rel/v"


def test_an_ssh_central_without_ssh_keys_is_a_config_error_not_a_crash(tmp_path, capsys):
    from releaser.cli import main

    f = tmp_path / "releaser.toml"
    text = (GOOD.replace('known_hosts = "ssh/known_hosts"\nidentity_file = "ssh/id_ed25519"\n', "")
            .replace('address = "127.0.0.5"', 'root = "nodes/p1"')
            .replace('path = "central"', 'path = "/srv/central"\naddress = "10.0.0.1"'))
    f.write_text(text)
    assert main(["-c", str(f), "status"]) == 2
    assert capsys.readouterr().err == (
        f"releaser: error: {f}: ssh.known_hosts: missing (required by central.address: SSH "
        "hosts are reached only with a pinned known_hosts file and an identity file)\n")


def test_the_app_contract_defaults_to_today_s_values_and_takes_configured_ones(tmp_path):
    """[app] database_env and health_path (releaser.appcontract): defaults, and a node
    that gives where its app answers (app_url) is checked at the configured path."""
    f = tmp_path / "releaser.toml"
    f.write_text(GOOD)
    contract = load_config(f).app.contract
    assert (contract.database_env, contract.health_path) == ("NOTES_DATABASE", "/health")
    assert (contract.install_dir, contract.service, contract.module) == (
        "/usr/lib/notes", "notes", "notes")
    assert contract.dump_dir("/srv/data/notes.db") == "/srv/data/backups"

    f.write_text(GOOD.replace('name = "notes"', 'name = "notes"\ndatabase_env = "NOTES_DB"\n'
                              'health_path = "/_status/ready"')
                 .replace('health_url = "http://127.0.0.1:9101/health"',
                          'app_url = "http://127.0.0.1:9101/notes/"'))
    cfg = load_config(f)
    assert cfg.app.contract.database_env == "NOTES_DB"
    assert cfg.environments["staging"].nodes[0].health_url == \
        "http://127.0.0.1:9101/notes/_status/ready"
    # a node's health_url is taken as written, whatever the health path
    assert cfg.environments["production"].nodes[0].health_url == "http://127.0.0.5:8080/health"
