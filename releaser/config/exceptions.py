"""``[[exceptions]]``: the only way to lower a protection, written down and expiring.

A setting that weakens what releaser guarantees is never a plain option: it is
an exception with a reason, an owner and an expiry date, shown on every run
(releaser.cli), and a run with an expired one stops before doing anything
(``ConfigError``, exit 2), so a "temporary" weakening cannot quietly become
permanent.  Each names the environments it applies to.

Settings an exception can lower:

``unsigned-overlay``  the environment's overlay commits are not signed and its
                      nodes verify nothing (e.g. a development environment with no
                      release key).  Signing is the default, ``[trust]`` table or not:
                      without this exception an environment with no release key is
                      refused by every command that publishes or installs
                      (``releaser.trust.keys.require_signing``).
``skip-staging``      promote takes into the environment a release that was
                      never healthy on its ``promote_from`` environment.

Host keys are never unpinned: no exception allows an SSH host without the
pinned known_hosts file.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from releaser.errors import ConfigError

SETTINGS = {
    "unsigned-overlay": "overlay commits unsigned, nodes verify nothing",
    "skip-staging": "releases may skip the environment they are promoted from",
}


@dataclass(frozen=True)
class SecurityException:
    """One documented exception to a protection."""

    setting: str
    environments: tuple[str, ...]
    reason: str
    owner: str
    expires: dt.date

    def covers(self, setting: str, env: str) -> bool:
        return self.setting == setting and env in self.environments

    def describe(self) -> str:
        """The line every run prints."""
        return (f"{self.setting} in {', '.join(self.environments)} "
                f"({SETTINGS[self.setting]}): {self.reason} "
                f"[owner {self.owner}, expires {self.expires.isoformat()}]")

    def to_dict(self) -> dict:
        return {"setting": self.setting, "environments": list(self.environments),
                "reason": self.reason, "owner": self.owner,
                "expires": self.expires.isoformat()}


def parse_exceptions(r, environments, today: dt.date | None = None
                     ) -> tuple[SecurityException, ...]:
    """Every ``[[exceptions]]`` entry of the reader ``r`` (``releaser.config._Reader`` of the
    top table), validated; ConfigError for a bad or an expired one."""
    entries = r.get("exceptions", list, [])
    today = today or dt.datetime.now(dt.timezone.utc).date()
    found = []
    for i, raw in enumerate(entries):
        where = f"exceptions[{i}]"
        if not isinstance(raw, dict):
            raise r.fail(where, "expected a table ([[exceptions]])")
        found.append(_parse_one(r.file, where, raw, environments, today))
    return tuple(found)


def _parse_one(file, where: str, raw: dict, environments, today: dt.date) -> SecurityException:
    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(f"{file}: {where}.{key}: {message}")

    extra = sorted(set(raw) - {"setting", "environments", "reason", "owner", "expires"})
    if extra:
        raise fail(extra[0], "unknown key (allowed: environments, expires, owner, reason, "
                             "setting)")
    setting = raw.get("setting")
    if setting not in SETTINGS:
        raise fail("setting", f"{setting!r} is not a setting an exception can lower "
                              f"({', '.join(sorted(SETTINGS))})")
    for key in ("reason", "owner"):
        value = raw.get(key)
        if not isinstance(value, str) or not value.strip() or "\n" in value:
            raise fail(key, "missing (required: one line saying "
                            f"{'why' if key == 'reason' else 'who answers for it'})")
    envs = raw.get("environments")
    if not isinstance(envs, list) or not envs or not all(isinstance(e, str) for e in envs):
        raise fail("environments", "missing (required: the environments it applies to)")
    unknown = [e for e in envs if e not in environments]
    if unknown:
        raise fail("environments", f"unknown environment {unknown[0]!r}")
    expires = raw.get("expires")
    if isinstance(expires, dt.datetime) or not isinstance(expires, dt.date):
        raise fail("expires", f"{expires!r} is not a date (write expires = 2027-01-31)")
    exc = SecurityException(setting, tuple(envs), raw["reason"].strip(), raw["owner"].strip(),
                            expires)
    if expires < today:
        raise ConfigError(f"{file}: {where}: the {setting} exception for "
                          f"{', '.join(envs)} (owner {exc.owner}) expired on "
                          f"{expires.isoformat()}: renew it with a reason and a new date, or "
                          "remove it and restore the protection")
    return exc
