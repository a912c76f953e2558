"""[environments.NAME.database]: a SQLite path or a server URL, checked when the configuration
loads; the app's maintenance commands get the URL as it is and the password in their env."""

from __future__ import annotations

import pytest

from releaser.appcontract import AppContract
from releaser.backup import app_command
from releaser.config import load_config
from releaser.errors import ConfigError

from .test_config import GOOD

DB = '[environments.staging]\ndatabase = {{ {} }}\n'


def config_with(tmp_path, database: str):
    f = tmp_path / "releaser.toml"
    f.write_text(GOOD.replace("[environments.staging]\n", DB.format(database)))
    return load_config(f)


def test_a_server_database_is_its_url_with_the_password_from_the_environment(tmp_path):
    cfg = config_with(tmp_path, 'backend = "postgresql", url = '
                                '"postgresql://notes@db1:5432/notes_staging", '
                                'password_env = "STAGING_DB_PASSWORD", '
                                'refresh_hook = ["mask-data", "--all"]')
    db = cfg.environment("staging").database
    assert (db.backend, db.path, db.password_env, db.is_server) == (
        "postgresql", "postgresql://notes@db1:5432/notes_staging", "STAGING_DB_PASSWORD", True)
    assert db.dump_dir == "/var/lib/notes/backups" and db.refresh_hook == ("mask-data", "--all")
    sqlite = cfg.environment("production").database
    assert (sqlite.backend, sqlite.path, sqlite.dump_dir) == (
        "sqlite", "/var/lib/notes/notes.db", "/var/lib/notes/backups")


def test_the_app_gets_the_url_as_it_is_and_the_password_in_its_environment():
    argv, env = app_command("/srv/node", AppContract("notes"), "mariadb://notes@db1/notes",
                            "dump", "/x.sql", password="s3cret")
    assert argv == ["python3", "-P", "-m", "notes", "dump", "/x.sql"]
    assert env == {"PYTHONPATH": "/srv/node/usr/lib/notes",
                   "NOTES_DATABASE": "mariadb://notes@db1/notes",
                   "NOTES_DATABASE_PASSWORD": "s3cret"}
    assert "s3cret" not in " ".join(argv)


@pytest.mark.parametrize("database,message", [
    ('backend = "oracle"', "backend: 'oracle' is not one of sqlite, postgresql, mariadb"),
    ('backend = "postgresql"', "url: missing (required)"),
    ('backend = "postgresql", url = "mariadb://notes@db1/notes"', "is not a postgresql URL"),
    ('backend = "mariadb", url = "mariadb://notes:pw@db1/notes"', "must not hold a password"),
    ('backend = "mariadb", url = "mariadb://notes@db1/no-tes"', "USER@HOST[:PORT]/NAME"),
    ('backend = "mariadb", url = "mariadb://notes@db1/notes?ssl=1"', "USER@HOST[:PORT]/NAME"),
    ('backend = "postgresql", path = "/var/lib/notes/notes.db"', "named by url, not path"),
    ('url = "postgresql://notes@db1/notes"', "is for a server database"),
    ('backend = "postgresql", url = "postgresql://notes@db1/notes", password_env = "PATH"',
     "password_env"),
    ('refresh_hook = "mask; rm -rf /"', "refresh_hook"),
])
def test_a_bad_database_names_the_file_and_key(tmp_path, database, message):
    with pytest.raises(ConfigError) as err:
        config_with(tmp_path, database)
    assert "environments.staging.database" in str(err.value) and message in str(err.value)
