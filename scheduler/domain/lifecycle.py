"""Node lifecycle as an explicit transition table.

    requested -> booting -> ready -> draining -> terminating -> gone
                    \\          \\         \\
                     failed     interrupted (the cloud reclaimed a spot node)
    ready -> unhealthy -> draining (once its replacement serves: make before break)
                  \\-> ready (passed its health checks again)

With a `[health]` section a node leaves booting only when its health endpoint answers,
and fails when it has not by its boot deadline (docs/health.md).

"Observed gone" (the cloud no longer lists the node) is allowed from every live state:
clouds lose instances for reasons we never hear about, and refusing that fact would
stall reconciliation forever (ray-project/ray #60566).
"""

from __future__ import annotations

from scheduler.domain import NodeState as S


class IllegalTransition(ValueError):
    """A transition the table does not allow."""


TERMINAL: frozenset[S] = frozenset({S.GONE, S.FAILED})
LIVE: frozenset[S] = frozenset(set(S) - TERMINAL)

TRANSITIONS: dict[S, frozenset[S]] = {
    S.REQUESTED: frozenset(
        {
            S.BOOTING,  # the cloud accepted the launch
            S.READY,  # first seen already serving (e.g. adopted after a restart)
            S.FAILED,  # the launch was refused (capacity, quota) or never appeared
            S.TERMINATING,  # cancelled before it came up
            S.GONE,  # observed gone
        }
    ),
    S.BOOTING: frozenset(
        {
            S.READY,  # health check passed: serving
            S.INTERRUPTED,  # reclaimed while booting
            S.TERMINATING,  # cancelled while booting (plan changed)
            S.FAILED,  # never became healthy
            S.GONE,  # observed gone
        }
    ),
    S.READY: frozenset(
        {
            S.DRAINING,  # taken out of rotation, in-flight requests finishing
            S.INTERRUPTED,  # the cloud announced or performed a reclaim
            S.TERMINATING,  # terminated without drain (e.g. it already stopped serving)
            S.UNHEALTHY,  # failed its health check too many times in a row
            S.GONE,  # observed gone
        }
    ),
    S.UNHEALTHY: frozenset(
        {
            S.READY,  # passed its health checks again before it was let go (flapping)
            S.DRAINING,  # its replacement serves (make before break): let it go
            S.INTERRUPTED,  # the cloud announced or performed a reclaim
            S.TERMINATING,  # terminated without drain
            S.GONE,  # observed gone
        }
    ),
    S.DRAINING: frozenset(
        {
            S.TERMINATING,  # drained (or the drain deadline passed)
            S.READY,  # drain cancelled: the plan wants it again
            S.INTERRUPTED,  # reclaimed while draining
            S.GONE,  # observed gone
        }
    ),
    S.TERMINATING: frozenset({S.GONE}),  # the cloud confirmed, or no longer lists it
    S.INTERRUPTED: frozenset(
        {
            S.TERMINATING,  # we terminate it ourselves before the deadline
            S.GONE,  # the cloud reclaimed it
        }
    ),
    S.GONE: frozenset(),
    S.FAILED: frozenset(),
}


def can_transition(old: S, new: S) -> bool:
    """Whether `old -> new` is a legal move."""
    return new in TRANSITIONS[old]


def check_transition(old: S, new: S) -> None:
    """Raise `IllegalTransition` unless `old -> new` is legal."""
    if not can_transition(old, new):
        raise IllegalTransition(f"{old} -> {new} is not a legal node transition")
