"""Documented, expiring security exceptions (releaser.config.exceptions)."""

from __future__ import annotations

import datetime as dt

import pytest

from releaser.cli import main
from releaser.config import load_config
from releaser.errors import ConfigError
from releaser.central.repository import CentralRepository
from releaser.central import overlay_git
from releaser.trust.keys import Keyring

from .conftest import write_config

TOMORROW = (dt.date.today() + dt.timedelta(days=1)).isoformat()
YESTERDAY = (dt.date.today() - dt.timedelta(days=1)).isoformat()


def config_with(tmp_path, app_repo, exception: str, trust: bool = True):
    extra = ("[environments.staging]\nnodes = []\n[environments.dev]\nnodes = []\n"
             + ('[trust]\ngnupghome = "gnupg"\n' if trust else "")
             + f"[[exceptions]]\n{exception}\n")
    return write_config(tmp_path / "releaser.toml", app_repo, extra=extra)


def unsigned_dev(expires: str) -> str:
    return (f'setting = "unsigned-overlay"\nenvironments = ["dev"]\n'
            f'reason = "dev boxes have no release key yet"\nowner = "ops@example.com"\n'
            f"expires = {expires}")


def test_an_expired_exception_stops_the_run_with_one_line(tmp_path, app_repo, capsys):
    path = config_with(tmp_path, app_repo, unsigned_dev(YESTERDAY))
    assert main(["-c", str(path), "keys", "list"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert (f"exceptions[0]: the unsigned-overlay exception for dev (owner ops@example.com) "
            f"expired on {YESTERDAY}") in err


def test_an_active_exception_is_printed_on_every_run(tmp_path, app_repo, capsys):
    path = config_with(tmp_path, app_repo, unsigned_dev(TOMORROW))
    for _ in range(2):
        assert main(["-c", str(path), "keys", "list"]) == 0
        err = capsys.readouterr().err
        assert (f"releaser: security exception: unsigned-overlay in dev (overlay commits "
                f"unsigned, nodes verify nothing): dev boxes have no release key yet "
                f"[owner ops@example.com, expires {TOMORROW}]") in err


def test_unsigned_overlay_exception_applies_only_to_its_environments(tmp_path, app_repo):
    config = load_config(config_with(tmp_path, app_repo, unsigned_dev(TOMORROW)))
    Keyring(config.trust.gnupghome).init("staging")
    central = CentralRepository.from_config(config, must_exist=False)
    central.init()
    assert overlay_git.signer_of(central, "dev") is None
    assert overlay_git.signer_of(central, "staging").fingerprint == \
        Keyring(config.trust.gnupghome).active("staging")
    assert config.exception_for("unsigned-overlay", "dev") is not None
    assert config.exception_for("unsigned-overlay", "staging") is None


@pytest.mark.parametrize("exception, message", [
    ('setting = "unpinned-host-keys"\nenvironments = ["dev"]\nreason = "r"\nowner = "o"\n'
     f"expires = {TOMORROW}", "not a setting an exception can lower"),
    ('setting = "skip-staging"\nenvironments = ["dev"]\nowner = "o"\n'
     f"expires = {TOMORROW}", "reason: missing"),
    ('setting = "skip-staging"\nenvironments = ["dev"]\nreason = "r"\n'
     f"expires = {TOMORROW}", "owner: missing"),
    ('setting = "skip-staging"\nenvironments = ["qa"]\nreason = "r"\nowner = "o"\n'
     f"expires = {TOMORROW}", "unknown environment 'qa'"),
    ('setting = "skip-staging"\nenvironments = ["dev"]\nreason = "r"\nowner = "o"\n'
     'expires = "soon"', "not a date"),
    ('setting = "skip-staging"\nenvironments = ["dev"]\nreason = "r"\nowner = "o"',
     "not a date"),
])
def test_every_exception_needs_a_known_setting_reason_owner_and_date(tmp_path, app_repo,
                                                                    exception, message):
    with pytest.raises(ConfigError, match=message):
        load_config(config_with(tmp_path, app_repo, exception))


def test_skip_staging_takes_a_release_never_healthy_on_the_source_only_under_it(
        tmp_path, app_repo):
    from releaser.build.builder import build_release
    from releaser.central.ledger import Ledger
    from releaser.central.publish import release_record_path
    from releaser.deploy.promote import _release_from_source
    from releaser.errors import UsageError

    def production(exception: str):
        extra = ('[environments.staging]\nnodes = []\n'
                 '[environments.production]\nnodes = []\npromote_from = "staging"\n'
                 + (f"[[exceptions]]\n{exception}\n" if exception else ""))
        return load_config(write_config(tmp_path / "releaser.toml", app_repo, extra=extra))

    config = production("")
    central = CentralRepository.from_config(config, must_exist=False)
    central.init()
    release = build_release(config, out=tmp_path / "out").release
    central.write_json(release_record_path(central, release), release.to_dict())
    ledger = Ledger.load(central, "staging")
    ledger.set_release(release.version, "published")
    ledger.save()
    with pytest.raises(UsageError, match="was never healthy on staging"):
        _release_from_source(config, central, config.environment("production"),
                             release.version, lambda _m: None)
    config = production('setting = "skip-staging"\nenvironments = ["production"]\n'
                        'reason = "hotfix for an outage, staging is down"\n'
                        f'owner = "oncall@example.com"\nexpires = {TOMORROW}')
    said: list[str] = []
    taken, source = _release_from_source(config, central, config.environment("production"),
                                         release.version, said.append)
    assert (taken.version, source) == (release.version, "staging")
    assert any("taken anyway under the exception: skip-staging in production" in line
               for line in said), said
