"""Interruption notice of a spot node, and the serving time a pool's loss leaves uncovered.

A cloud warns before it reclaims a spot node: AWS two minutes, GCP 30 seconds. The
policy replaces a noticed node at once, so losing a node leaves its load uncovered for
the replacement's boot less the notice (`uncovered_s`; 0 where the boot fits in the
notice). The planner keeps preventive capacity (spot-loss robustness) only against
losses whose uncovered time matters: `loss_tolerated` says a pool needs none when that
time is 0, or when its expected share of time uncovered (interruptions per hour x the
uncovered hours) is below `planning.spot_loss_tolerance` (docs/solver.md, "Spot losses
that need no cover"). The simulated cloud sends its notices from the same table.

The replacement is launched when the notice is read: at once in the simulator, within
the daemon's notice poll (5 s) on a real cloud. Those few seconds are not counted: a
boot that fits the notice exactly leaves at most one poll interval uncovered.

    from scheduler.fleet.notice import loss_tolerated, uncovered_s
    uncovered_s(config, "llama-3.1-8b", itype)  # boot - notice, at least 0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from scheduler.config import Config
from scheduler.domain import Cloud, InstanceType
from scheduler.fleet.boot import node_boot_s

# Seconds from a spot interruption notice to the reclaim: AWS's two-minute warning,
# GCP's 30-second preemption notice.
NOTICE_S: Mapping[Cloud, float] = {Cloud.AWS: 120.0, Cloud.GCP: 30.0}


def notice_s(cloud: Cloud) -> float:
    """Seconds a spot node of `cloud` is warned before it is reclaimed (0: no notice)."""
    return NOTICE_S.get(cloud, 0.0)


def uncovered_s(config: Config, model: str, itype: InstanceType) -> float:
    """Seconds a spot node of `model` on `itype` leaves its load unserved when it is
    reclaimed: a replacement launched at the notice serves a boot later."""
    return max(0.0, node_boot_s(config, model, itype) - notice_s(itype.cloud))


def pool_uncovered_s(config: Config, models: Sequence[str], itype: InstanceType) -> float | None:
    """The longest `uncovered_s` of `models` on `itype` (None when it serves none)."""
    return max((uncovered_s(config, m, itype) for m in models), default=None)


def loss_tolerated(
    uncovered: float | None, interruptions_per_hour: float, tolerance: float
) -> bool:
    """True when losing a spot pool needs no preventive cover: its loss leaves nothing
    uncovered (`uncovered` seconds, from `pool_uncovered_s`, is 0), or its expected share of
    time uncovered (`interruptions_per_hour` x uncovered hours) is below `tolerance`
    (`planning.spot_loss_tolerance`). False for a pool that serves no model (None)."""
    if uncovered is None:
        return False
    return uncovered <= 0 or interruptions_per_hour * uncovered / 3600.0 < tolerance
