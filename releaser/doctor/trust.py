"""The doctor's trust checks: the environment's release key, and the security
exceptions that weaken it.  An *expired* exception never gets here: loading the
configuration refuses it (``releaser.config.exceptions``), and ``doctor``
reports that as its configuration finding; one that expires soon is a warning,
so it is renewed or removed before it stops a 3 a.m. rollback."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from releaser.errors import ReleaserError

if TYPE_CHECKING:
    from releaser.config import Config
    from releaser.doctor import Diagnosis

#: An exception expiring within this many days is worth a warning.
EXPIRY_WARNING_DAYS = 14


def trust_checks(config: "Config", env: str, diagnosis: "Diagnosis",
                 today: dt.date | None = None) -> None:
    from releaser.doctor import WARNING, Finding

    today = today or dt.datetime.now(dt.timezone.utc).date()
    for exc in config.exceptions:
        if env in exc.environments and (exc.expires - today).days <= EXPIRY_WARNING_DAYS:
            diagnosis.findings.append(Finding(
                "exceptions", f"{exc.describe()} expires in {(exc.expires - today).days} "
                "day(s); after that every run stops", "renew it in releaser.toml with a reason "
                "and a new date, or remove it and restore the protection", WARNING))
    if config.trust is None or not config.trust.signs(env):
        return
    from releaser.trust.keys import Keyring

    try:
        fingerprint = Keyring.from_config(config).active(env)
    except ReleaserError as exc:
        # The message says both ways out (a key, or a documented unsigned-overlay exception).
        problem, _, _fix = str(exc).partition(": run ")
        diagnosis.findings.append(Finding("signing key", problem,
                                          f"`releaser keys init {env}`, then `releaser host "
                                          f"bootstrap {env}` to give its nodes the key; or "
                                          "an [[exceptions]] entry with setting = "
                                          '"unsigned-overlay", reason, owner and expires'))
        return
    diagnosis.passed.append(f"signing key: {fingerprint}")
