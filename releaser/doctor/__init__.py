"""``releaser doctor [ENV]``: is the environment ready for a promote or a rollback?

Every check gives a ``Finding``: what is wrong, where, and the one thing to do
about it.  *Fast* checks read only the configuration and the central
repository (is it there, writable, is there room, who holds the lock, what did
earlier runs leave behind); ``promote`` runs them before it builds anything
(``fast_check``), so a run that cannot finish does not start.  The *node*
checks reach every node (``releaser.doctor.nodes``): reachable with its pinned
key, a changed host key being its own finding; prepared by ``host bootstrap``
(its read-only probe: Portage version, free disk, the app's dependencies);
no process of the app that its init system does not know.  With ``[trust]``:
the environment's release key is in the keyring; security exceptions that
expire soon are warned of (an expired one fails loading the configuration).

A finding is blocking (the environment is not ready) or a warning (worth
fixing, nothing fails because of it).  ``releaser doctor`` exits non-zero
when any finding blocks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from releaser.errors import LockHeld, NotReady

if TYPE_CHECKING:
    from releaser.config import Config

BLOCKING, WARNING = "blocking", "warning"


@dataclass(frozen=True)
class Finding:
    """One problem: where (``central``, a node's name, ``lock``...), what, and the fix."""

    where: str
    problem: str
    fix: str
    severity: str = BLOCKING

    def line(self) -> str:
        label = "NOT READY" if self.severity == BLOCKING else "warning"
        return f"{label}: {self.where}: {self.problem}; fix: {self.fix}"


@dataclass
class Diagnosis:
    """What the doctor found in one environment: problems, and the checks that passed."""

    env: str
    findings: list[Finding] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not any(f.severity == BLOCKING for f in self.findings)

    def to_dict(self) -> dict:
        return {"env": self.env, "ready": self.ready,
                "findings": [asdict(f) for f in self.findings], "passed": self.passed}

    def lines(self) -> list[str]:
        out = [f"{self.env}: {'ready' if self.ready else 'NOT READY'}"]
        out += [f"  ok: {p}" for p in self.passed]
        out += [f"  {f.line()}" for f in self.findings]
        return out


def diagnose(config: "Config", env_name: str, *, nodes: bool = True) -> Diagnosis:
    """Every check of ``env_name`` (only the fast ones without ``nodes``)."""
    from releaser.doctor.central import central_checks
    from releaser.doctor.trust import trust_checks

    config.environment(env_name)  # an unknown environment is a UsageError, not a finding
    diagnosis = Diagnosis(env_name)
    central = central_checks(config, env_name, diagnosis)
    trust_checks(config, env_name, diagnosis)
    if nodes:
        from releaser.doctor.nodes import node_checks

        node_checks(config, env_name, diagnosis)
    if central is not None:
        close = getattr(central.runner, "close", None)
        if close:
            close()
    return diagnosis


def fast_check(config: "Config", env_name: str) -> None:
    """The checks promote runs first (configuration, central, lock state): NotReady
    naming every blocking finding, before anything is built or changed."""
    diagnosis = diagnose(config, env_name, nodes=False)
    blocking = [f for f in diagnosis.findings if f.severity == BLOCKING]
    for finding in blocking:
        if finding.where == "lock":  # the same answer (and exit 5) as taking the lock gives
            raise LockHeld(f"{finding.problem}; {finding.fix}")
    if blocking:
        raise NotReady(f"{env_name} is not ready: "
                       + "; ".join(f"{f.where}: {f.problem} (fix: {f.fix})" for f in blocking))
