"""Pools that refused a launch stay out of plans for a while (explicit reconciler state).

A pool that refused is cooled for `guards.pool_cooldown_s`, doubled for each earlier
refusal within a day (up to 64x), so a pool that keeps running out is not planned into
again every cooldown. Cooled pools are shown to the policy as unavailable offerings.

Health strikes (scheduler.decide.health: a node that never became healthy, or one that turned
sick within the quarantine window of becoming ready) count toward a quarantine:
`quarantine_strikes` of them within the window, with no boot in the pool passing its
health check in between, cool the pool the same way, with the same backoff, and the pool
is named in the plan's notes while it lasts. A boot that passes clears the strikes: a
large pool losing a node now and then to random faults keeps serving, while a pool that
fails every boot is quarantined.
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
        self._strikes: dict[Pool, list[float]] = {}  # health strikes per pool, in the window
        self.quarantined: dict[Pool, int] = {}  # pools cooled for strikes: strikes counted

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

    def strike(
        self, pool: Pool, now_s: float, *, needed: int, window_s: float, base_s: float
    ) -> float | None:
        """Note a health strike against `pool`; with `needed` strikes within `window_s` it
        is quarantined (cooled like a refusal, with the same backoff). Returns when the
        quarantine ends, or None when the pool is not quarantined by this strike."""
        strikes = [t for t in self._strikes.get(pool, []) if t > now_s - window_s]
        strikes.append(now_s)
        self._strikes[pool] = strikes
        if len(strikes) < needed:
            return None
        self._strikes[pool] = []  # the next quarantine needs as many strikes again
        self.quarantined[pool] = len(strikes)
        log.warning("pool_quarantined pool=%s strikes=%d", pool.key, len(strikes))
        return self.refused(pool, now_s, base_s)

    def cleared(self, pool: Pool) -> None:
        """A node of `pool` booted and passed its health check: its strikes are forgiven."""
        self._strikes.pop(pool, None)

    def quarantined_pools(self, now_s: float) -> list[Pool]:
        """Pools quarantined for health strikes and still cooling at `now_s`."""
        self.quarantined = {
            p: n for p, n in self.quarantined.items() if self.until.get(p, -1.0) > now_s
        }
        return sorted(self.quarantined)

    def quarantine_notes(self, now_s: float) -> list[str]:
        """One line per pool quarantined for health strikes, still cooling at `now_s`."""
        self.quarantined_pools(now_s)
        return [
            f"quarantined {pool.key} until {self.until[pool]:.0f}: {n} nodes failed to boot"
            " or turned unhealthy"
            for pool, n in sorted(self.quarantined.items())
        ]

    def apply(self, offerings: Sequence[Offering], now_s: float) -> list[Offering]:
        """`offerings` with the pools still cooling down marked unavailable."""
        cold = {pool for pool, until in self.until.items() if until > now_s}
        if not cold:
            return list(offerings)
        return [dataclasses.replace(o, available=False) if o.pool in cold else o for o in offerings]
