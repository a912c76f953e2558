"""Config: TOML file named by NOTES_CONFIG, env overrides, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from notes.config import DEFAULT_DATABASE, Config, ConfigError, load_config


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file_or_env() -> None:
    config = load_config({})
    assert config == Config(database=DEFAULT_DATABASE, host="127.0.0.1", port=8080, version=config.version)
    assert config.database == Path("/var/lib/notes/notes.db")


def test_file_values(tmp_path: Path) -> None:
    cfg = write(tmp_path / "notes.toml", '[notes]\ndatabase = "/srv/n.db"\nhost = "0.0.0.0"\nport = 9000\n')
    config = load_config({"NOTES_CONFIG": str(cfg)})
    assert (config.database, config.host, config.port) == (Path("/srv/n.db"), "0.0.0.0", 9000)


def test_relative_database_is_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = write(tmp_path / "notes.toml", '[notes]\ndatabase = "db/notes.db"\n')
    assert load_config({"NOTES_CONFIG": str(cfg)}).database == tmp_path / "db" / "notes.db"


def test_env_overrides_file(tmp_path: Path) -> None:
    cfg = write(tmp_path / "notes.toml", '[notes]\ndatabase = "/srv/n.db"\nhost = "0.0.0.0"\nport = 9000\n')
    env = {"NOTES_CONFIG": str(cfg), "NOTES_DATABASE": "/tmp/x.db", "NOTES_HOST": "::1", "NOTES_PORT": "9100"}
    config = load_config(env)
    assert (config.database, config.host, config.port) == (Path("/tmp/x.db"), "::1", 9100)


def test_explicit_config_file_beats_env_var(tmp_path: Path) -> None:
    a = write(tmp_path / "a.toml", "[notes]\nport = 1111\n")
    b = write(tmp_path / "b.toml", "[notes]\nport = 2222\n")
    assert load_config({"NOTES_CONFIG": str(a)}, config_file=b).port == 2222


def test_empty_env_vars_count_as_unset() -> None:
    assert load_config({"NOTES_PORT": "", "NOTES_HOST": ""}).port == 8080


def test_unknown_keys_are_tolerated_for_rollbacks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = write(tmp_path / "notes.toml", "[notes]\nport = 9000\nfeature_from_v2 = true\n")
    assert load_config({"NOTES_CONFIG": str(cfg)}).port == 9000
    assert "feature_from_v2" in caplog.text


def test_version_comes_from_env() -> None:
    assert load_config({"NOTES_VERSION": "2.0.1"}).version == "2.0.1"


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ('[notes]\nport = "http"\n', "key 'port'"),
        ("[notes]\nport = 70000\n", "key 'port'"),
        ("[notes]\nport = true\n", "key 'port'"),
        ("[notes]\nhost = 5\n", "key 'host'"),
        ('[notes]\nhost = "a b"\n', "key 'host'"),
        ('[notes]\ndatabase = ""\n', "key 'database'"),
        ('notes = "flat"\n', "'notes' must be a table"),
        ("[notes\nport = 1\n", "invalid TOML"),
    ],
)
def test_bad_file_values_name_key_and_file(tmp_path: Path, toml: str, needle: str) -> None:
    cfg = write(tmp_path / "notes.toml", toml)
    with pytest.raises(ConfigError) as info:
        load_config({"NOTES_CONFIG": str(cfg)})
    message = str(info.value)
    assert needle in message
    assert str(cfg) in message
    assert "\n" not in message


@pytest.mark.parametrize("value", ["abc", "0", "65536", "-1", "80.5", "²"])
def test_bad_env_port_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="NOTES_PORT"):
        load_config({"NOTES_PORT": value})


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config({"NOTES_CONFIG": str(tmp_path / "nope.toml")})


def test_shipped_default_config_matches_defaults() -> None:
    shipped = Path(__file__).resolve().parent.parent / "etc" / "notes.toml"
    config = load_config({"NOTES_CONFIG": str(shipped)})
    assert (config.database, config.host, config.port) == (DEFAULT_DATABASE, "127.0.0.1", 8080)


def test_a_server_database_is_a_url_its_password_from_the_environment(tmp_path: Path) -> None:
    cfg = write(tmp_path / "notes.toml", '[notes]\ndatabase = "postgresql://notes@db1:5433/notes"\n')
    config = load_config({"NOTES_CONFIG": str(cfg), "NOTES_DATABASE_PASSWORD": "s3cret"})
    target = config.target
    assert (target.backend, target.host, target.port, target.user, target.name, target.password) \
        == ("postgresql", "db1", 5433, "notes", "notes", "s3cret")
    assert str(target) == "postgresql://notes@db1:5433/notes" and "s3cret" not in repr(config)
    mysql = load_config({"NOTES_DATABASE": "mysql://app@db2/shop"}).target
    assert (mysql.backend, mysql.port, mysql.password) == ("mariadb", 3306, None)


@pytest.mark.parametrize(("url", "needle"), [
    ("oracle://a@b/c", "unknown database scheme 'oracle'"),
    ("postgresql://a:pw@b/c", "must not hold a password"),
    ("postgresql://b/c", "USER@HOST"),
    ("mariadb://a@b/c-d", "invalid database name"),
    ("mariadb://a@b/c?ssl=1", "no query"),
])
def test_a_bad_database_url_names_the_variable(url: str, needle: str) -> None:
    with pytest.raises(ConfigError, match="NOTES_DATABASE") as info:
        load_config({"NOTES_DATABASE": url})
    assert needle in str(info.value)
