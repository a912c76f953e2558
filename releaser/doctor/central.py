"""The doctor's fast checks: the central repository, the environment's lock, and
what earlier runs left behind there.  Nothing here reaches a node, and nothing
is changed except a probe file created and removed to prove central writable."""

from __future__ import annotations

from typing import TYPE_CHECKING

from releaser.errors import ReleaserError, last_line

if TYPE_CHECKING:
    from releaser.central.repository import CentralRepository
    from releaser.config import Config
    from releaser.doctor import Diagnosis

#: Below this many MB free on central, a publish (tarball, overlay commit,
#: backups) may not fit: blocking.
MIN_CENTRAL_FREE_MB = 64


def central_checks(config: "Config", env: str,
                   diagnosis: "Diagnosis") -> "CentralRepository | None":
    """Reachable, a central repository, writable, room; then lock and leftovers.
    The central repository when it could be reached, else None."""
    from releaser.central.repository import CentralRepository
    from releaser.doctor import Finding

    try:
        central = CentralRepository.from_config(config)
    except ReleaserError as exc:
        diagnosis.findings.append(Finding("central", str(exc), _central_fix(config)))
        return None
    where = f"central ({central.runner.host}:{central.root})"
    problem = _unwritable(central) or _too_full(central)
    if problem:
        diagnosis.findings.append(Finding(where, *problem))
    else:
        diagnosis.passed.append(f"{where}: reachable, writable, room to publish")
    _lock_check(central, env, diagnosis)
    _leftovers(central, env, diagnosis)
    return central


def _central_fix(config: "Config") -> str:
    if config.central is not None and config.central.address:
        return (f"check that {config.central.address} is up, its sshd answers and its key is "
                "in [ssh] known_hosts; or run `releaser central init` if it was never created")
    return "check [central] path, or create it with `releaser central init`"


def _unwritable(central: "CentralRepository") -> tuple[str, str] | None:
    """Create and remove a probe file where runs write (the ledger folder)."""
    made = central.runner.run(["mktemp", "-p", central.path("ledger"), ".doctor.XXXXXX"],
                              check=False)
    if not made.ok:
        return (f"cannot write to {central.path('ledger')}: {last_line(made.stderr)}",
                "make the central repository writable for this user (mount, permissions, "
                "free space)")
    central.runner.run(["rm", "-f", "--", made.stdout.strip()], check=False)
    return None


def _too_full(central: "CentralRepository") -> tuple[str, str] | None:
    result = central.runner.run(["df", "-Pk", "--", central.root], check=False)
    try:
        free_mb = int(result.stdout.splitlines()[1].split()[3]) // 1024
    except (IndexError, ValueError):
        return (f"cannot read its free space: {last_line(result.stderr, result.stdout)}",
                "check that df works on the central host")
    if free_mb < MIN_CENTRAL_FREE_MB:
        return (f"only {free_mb} MB free (at least {MIN_CENTRAL_FREE_MB} MB needed to publish)",
                "free space on the central host (old backups: lower keep_backups)")
    return None


def _lock_check(central: "CentralRepository", env: str, diagnosis: "Diagnosis") -> None:
    from releaser.central.lock import describe, lock_status
    from releaser.doctor import WARNING, Finding
    from releaser.errors import LockHeld

    try:
        owner = lock_status(central, env)
    except LockHeld as exc:
        diagnosis.findings.append(Finding("lock", str(exc), "see the message"))
        return
    if owner is None:
        diagnosis.passed.append("lock: free")
    elif owner["stale"]:
        diagnosis.findings.append(Finding(
            "lock", f"stale lock of {describe(owner)} ({owner['stale']})",
            "the next promote or rollback takes it over (recorded in history), or "
            f"`releaser lock release {env} --break REASON`", WARNING))
    else:
        diagnosis.findings.append(Finding(
            "lock", f"{env} is locked by {describe(owner)}",
            f"wait for it to end, or `releaser lock release {env} --break REASON` if it is dead"))


def _leftovers(central: "CentralRepository", env: str, diagnosis: "Diagnosis") -> None:
    """Half-written temporaries of killed runs; a run an operator stopped; installs
    whose intent no run settled."""
    from releaser.central.ledger import Ledger
    from releaser.doctor import WARNING, Finding

    stale = central.stale_temporaries()
    if stale:
        diagnosis.findings.append(Finding(
            "central", f"{len(stale)} half-written temporar{'y' if len(stale) == 1 else 'ies'} "
            f"of killed runs: {', '.join(stale[:3])}{' ...' if len(stale) > 3 else ''}",
            "the next promote removes them, or remove them by hand", WARNING))
    ledger = Ledger.load(central, env)
    stopped = ledger.interrupted
    if stopped:
        diagnosis.findings.append(Finding(
            "ledger", f"{stopped.get('command')} interrupted by {stopped.get('signal')} at "
            f"{stopped.get('at')}; never started: {', '.join(stopped.get('untouched') or [])}",
            f"run `releaser {stopped.get('command')} {env}` again to finish it", WARNING))
    open_nodes = sorted(n for n in ledger.data["nodes"] if ledger.attempt(n))
    if open_nodes:
        diagnosis.findings.append(Finding(
            "ledger", f"an install begun on {', '.join(open_nodes)} was never settled (a run "
            "was killed)", f"run `releaser promote {env}` (or rollback) again: it finishes it",
            WARNING))
