"""Pools that refused a launch stay out of plans for a while (explicit reconciler state).

A pool that refused is cooled for `guards.pool_cooldown_s`, doubled for each earlier
refusal within a day (up to 64x), so a pool that keeps running out is not planned into
again every cooldown. Cooled pools are shown to the policy as unavailable offerings.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from scheduler.domain import Offering, Pool

log = logging.getLogger(__name__)

REFUSAL_MEMORY_S = 86400.0  # how long a refusal lengthens the next cooldown
MAX_DOUBLINGS = 6  # the longest cooldown is 2**6 times the base


class PoolCooldown:
    """When each pool may be planned into again, and its recent refusals."""

    def __init__(self) -> None:
        self.until: dict[Pool, float] = {}  # pools refused recently, until when
        self._refusals: dict[Pool, list[float]] = {}  # when each pool refused, last day

    def refused(self, pool: Pool, now_s: float, base_s: float) -> float:
        """Note that `pool` refused a launch at `now_s`; returns when its cooldown ends."""
        recent = [t for t in self._refusals.get(pool, []) if t > now_s - REFUSAL_MEMORY_S]
        recent.append(now_s)
        self._refusals[pool] = recent
        backoff = 2 ** min(len(recent) - 1, MAX_DOUBLINGS)
        self.until[pool] = now_s + base_s * backoff
        log.info(
            "pool_cooldown pool=%s until_s=%.0f refusals_24h=%d",
            pool.key,
            self.until[pool],
            len(recent),
        )
        return self.until[pool]

    def apply(self, offerings: Sequence[Offering], now_s: float) -> list[Offering]:
        """`offerings` with the pools still cooling down marked unavailable."""
        cold = {pool for pool, until in self.until.items() if until > now_s}
        if not cold:
            return list(offerings)
        return [dataclasses.replace(o, available=False) if o.pool in cold else o for o in offerings]
