"""Hooks around each node: commands the operator configures, run on the
operator's machine, before a node is taken out of service and after it is
healthy again, as Kamal, Ansistrano and Capistrano have them.

Their usual work is a load balancer's: drain the node before releaser
touches it, put it back once it serves again::

    [environments.production.hooks]
    pre_node = ["lb-ctl", "drain"]       # argv lists, never a shell string
    post_node = ["lb-ctl", "restore"]
    timeout = 60                         # seconds per run (default 60)

A hook is an argv (``["sh", "-c", "..."]`` for a shell), run with the
operator's environment plus these variables, never interpolated into it:

==========================  ==================================================
RELEASER_ENV                the environment (``production``)
RELEASER_ACTION             ``promote`` or ``rollback``
RELEASER_PHASE              ``pre_node`` or ``post_node``
RELEASER_NODE               the node's name
RELEASER_NODE_ADDRESS       its SSH address, else the host of its health URL
RELEASER_HEALTH_URL         its health URL
RELEASER_VERSION            the version the node is being put on
RELEASER_PREVIOUS_VERSION   the version it ran before (empty: nothing)
RELEASER_RESULT             post_node only: ``installed``, or ``rolled-back``
                            (the new version failed; the node is healthy again
                            on the previous one)
==========================  ==================================================

Failure is the node's failure, counted by the rollout's failure threshold
like any other: a ``pre_node`` that exits non-zero, times out or cannot start
leaves the node untouched (nothing is synced, backed up or installed); a
``post_node`` that fails marks the node failed though it runs the target.  A
node that ends unhealthy gets no ``post_node``: it stays drained.  A node
that needs no change (already healthy on the target) runs neither hook.

A hook runs in a session of its own (``releaser.hosts.runner``): a Ctrl-C at
the terminal does not cut a drain half-way, and a timeout ends the hook with
everything it started.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from releaser.config import EnvironmentConfig, NodeConfig
from releaser.errors import CommandError, HookError, last_line
from releaser.hosts.runner import LocalRunner

PRE_NODE, POST_NODE = "pre_node", "post_node"


def hook_environment(env: EnvironmentConfig, node: NodeConfig, phase: str, *, action: str,
                     version: str, previous: str | None, result: str | None = None
                     ) -> dict[str, str]:
    """The documented variables a hook gets (module docstring)."""
    variables = {
        "RELEASER_ENV": env.name,
        "RELEASER_ACTION": action,
        "RELEASER_PHASE": phase,
        "RELEASER_NODE": node.name,
        "RELEASER_NODE_ADDRESS": node.address or urlsplit(node.health_url).hostname or "",
        "RELEASER_HEALTH_URL": node.health_url,
        "RELEASER_VERSION": version,
        "RELEASER_PREVIOUS_VERSION": previous or "",
    }
    if result is not None:
        variables["RELEASER_RESULT"] = result
    return variables


def run_node_hook(env: EnvironmentConfig, node: NodeConfig, phase: str, *, action: str,
                  version: str, previous: str | None, result: str | None = None) -> bool:
    """Run ``env``'s ``phase`` hook for ``node``; False when none is configured.

    Raises HookError (one line: the hook, its exit status or timeout, the
    last line it printed) when it does not succeed.
    """
    argv = getattr(env.hooks, phase)
    if not argv:
        return False
    variables = hook_environment(env, node, phase, action=action, version=version,
                                 previous=previous, result=result)
    try:
        outcome = LocalRunner(host="operator").run(argv, check=False, env=variables,
                                                   timeout=env.hooks.timeout)
    except CommandError as exc:  # could not start, or timed out
        raise HookError(f"{phase} hook for {node.name}: {last_line(exc.stderr, default='')}") from None
    if not outcome.ok:
        said = last_line(outcome.stderr, outcome.stdout)
        raise HookError(f"{phase} hook for {node.name} exited {outcome.returncode}: {said}")
    return True


@dataclass
class NodeHooks:
    """The hooks of one node's change: ``pre_node`` at most once, before the first
    step that changes the node; ``post_node`` only if ``pre_node`` ran (a node
    never drained is never put back)."""

    env: EnvironmentConfig
    node: NodeConfig
    action: str
    version: str
    drained: bool = False

    def before_change(self, previous: str | None) -> bool:
        """Run ``pre_node`` unless it ran already; True if a configured hook ran now.

        HookError when it fails: the caller must then leave the node as it is.
        """
        if self.drained:
            return False
        ran = run_node_hook(self.env, self.node, PRE_NODE, action=self.action,
                            version=self.version, previous=previous)
        self.drained = True
        return ran

    def after_healthy(self, previous: str | None, result: str) -> None:
        """Run ``post_node`` for a drained node that serves again (HookError if it fails)."""
        if self.drained:
            run_node_hook(self.env, self.node, POST_NODE, action=self.action,
                          version=self.version, previous=previous, result=result)
