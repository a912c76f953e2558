"""Exit codes of the ``releaser`` command, in one place (README: "Exit codes").

======  ==============================================================
0       everything asked for is done and healthy
1       an operation failed (a command, publishing, an unexpected error)
2       bad input or configuration, or a declined prompt: nothing was changed
3       promote finished with failed nodes: some nodes may be changed
4       a node failed its health check and was rolled back automatically
5       the environment's lock is held by another run
6       status found drift: a node does not run the environment's version
7       doctor found the environment not ready
8       the quality gate failed: nothing was published
130     interrupted
======  ==============================================================
"""

OK = 0
FAILURE = 1
BAD_INPUT = 2
PROMOTE_FAILED = 3
ROLLED_BACK = 4
LOCK_HELD = 5
DRIFT = 6
NOT_READY = 7
GATE_FAILED = 8
INTERRUPTED = 130
