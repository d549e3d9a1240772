"""Interruption notice of a spot node, and whether it outlasts a replacement's boot.

A cloud warns before it reclaims a spot node: AWS two minutes, GCP 30 seconds. The
policy replaces a noticed node at once, so where a replacement of the same model boots
within the notice (`scheduler.fleet.boot.node_boot_s` at most `notice_s`), losing the
node costs no serving time and the planner need not keep preventive capacity against
it (docs/solver.md, "Notice that outlasts the boot"). Everywhere else the spot-loss
robustness rule stands. The simulated cloud sends its notices from the same table.

    from scheduler.fleet.notice import notice_s, replaced_in_notice
    replaced_in_notice(config, "llama-3.1-8b", itype)  # True when boot <= notice
"""

from __future__ import annotations

from collections.abc import Mapping

from scheduler.config import Config
from scheduler.domain import Cloud, InstanceType
from scheduler.fleet.boot import node_boot_s

# Seconds from a spot interruption notice to the reclaim: AWS's two-minute warning,
# GCP's 30-second preemption notice.
NOTICE_S: Mapping[Cloud, float] = {Cloud.AWS: 120.0, Cloud.GCP: 30.0}


def notice_s(cloud: Cloud) -> float:
    """Seconds a spot node of `cloud` is warned before it is reclaimed (0: no notice)."""
    return NOTICE_S.get(cloud, 0.0)


def replaced_in_notice(config: Config, model: str, itype: InstanceType) -> bool:
    """True when a node of `model` on `itype`, launched when a spot node gets its notice,
    is serving before that node is reclaimed."""
    return node_boot_s(config, model, itype) <= notice_s(itype.cloud)
