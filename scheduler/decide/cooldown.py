"""Pools that refused a launch stay out of plans for a while (explicit reconciler state).

A pool that refused is cooled for `guards.pool_cooldown_s`, doubled for each earlier
refusal within a day (up to 64x), so a pool that keeps running out is not planned into
again every cooldown. Cooled pools are shown to the policy as unavailable offerings.

Health strikes (scheduler.decide.health: a node that never became healthy, or one that turned
sick within the quarantine window of becoming ready) count toward a quarantine:
`quarantine_strikes` of them within the window, with no boot in the pool passing its
health check in between, cool the pool the same way, with the same backoff, and the pool
is named in the plan's notes while it lasts. A boot that passes clears the strikes, and
a node that failed to boot is no strike when a node of its pool launched at the same time
or later booted healthy (the pool worked then; that one node was unlucky): a large pool
losing a node now and then to random faults keeps serving, also when two nodes of one
batch of launches fail, while a pool that fails every boot is quarantined.

The whole state is kept in the store (`snapshot`, restored by the constructor; the
reconciler saves it whenever it changes), so a restarted daemon neither retries a
quarantined or refusing pool at once nor forgets the strikes a pool has collected.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scheduler.domain import Offering, Pool

log = logging.getLogger(__name__)

REFUSAL_MEMORY_S = 86400.0  # how long a refusal lengthens the next cooldown
MAX_DOUBLINGS = 6  # the longest cooldown is 2**6 times the base


@dataclass(frozen=True, slots=True)
class PoolCooling:
    """One pool's cooldown state, as the store keeps it across restarts."""

    until_s: float | None  # planned into again from then on (None: never cooled)
    refusals_s: tuple[float, ...]  # its refusals within the last day (for the backoff)
    strikes_s: tuple[float, ...]  # its health strikes toward a quarantine
    quarantined_strikes: int  # strikes that quarantined it (0: not quarantined)
    good_launch_s: float | None = None  # latest launch of a node that booted healthy


class PoolCooldown:
    """When each pool may be planned into again, and its recent refusals."""

    def __init__(self, saved: Mapping[Pool, PoolCooling] | None = None) -> None:
        """An empty cooldown, or the one `saved` (a `snapshot`) describes."""
        saved = saved or {}
        # pools refused (or quarantined) recently, until when
        self.until: dict[Pool, float] = {
            p: c.until_s for p, c in saved.items() if c.until_s is not None
        }
        # when each pool refused, last day
        self._refusals: dict[Pool, list[float]] = {
            p: list(c.refusals_s) for p, c in saved.items() if c.refusals_s
        }
        # health strikes per pool, in the window
        self._strikes: dict[Pool, list[float]] = {
            p: list(c.strikes_s) for p, c in saved.items() if c.strikes_s
        }
        # pools cooled for strikes: strikes counted
        self.quarantined: dict[Pool, int] = {
            p: c.quarantined_strikes for p, c in saved.items() if c.quarantined_strikes
        }
        # the latest launch time of a node that booted healthy, per pool
        self._good_launch: dict[Pool, float] = {
            p: c.good_launch_s for p, c in saved.items() if c.good_launch_s is not None
        }

    def snapshot(self) -> dict[Pool, PoolCooling]:
        """The whole state, per pool (what the store keeps; the constructor restores it)."""
        pools = self.until.keys() | self._refusals.keys() | self._strikes.keys()
        return {
            p: PoolCooling(
                self.until.get(p),
                tuple(self._refusals.get(p, ())),
                tuple(self._strikes.get(p, ())),
                self.quarantined.get(p, 0),
                self._good_launch.get(p),
            )
            for p in pools | self.quarantined.keys() | self._good_launch.keys()
        }

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

    def refused_at(self, now_s: float) -> list[Pool]:
        """Pools that refused a launch at `now_s` (this tick)."""
        return sorted(p for p, times in self._refusals.items() if times and times[-1] == now_s)

    def hold(self, pool: Pool, until_s: float) -> None:
        """Keep `pool` out of plans until `until_s` without counting a refusal of its own
        (a spot storm elsewhere in its cloud: the next cooldown of the pool is not longer
        for it)."""
        self.until[pool] = max(self.until.get(pool, until_s), until_s)

    def strike(
        self,
        pool: Pool,
        now_s: float,
        *,
        needed: int,
        window_s: float,
        base_s: float,
        launched_at_s: float | None = None,
    ) -> float | None:
        """Note a health strike against `pool`; with `needed` strikes within `window_s` it
        is quarantined (cooled like a refusal, with the same backoff). Returns when the
        quarantine ends, or None when the pool is not quarantined by this strike.
        `launched_at_s`: the launch time of a node that failed to boot; no strike when a
        node of the pool launched then or later has booted healthy."""
        if launched_at_s is not None and launched_at_s <= self._good_launch.get(pool, -math.inf):
            return None
        if pool in self.quarantined and self.until.get(pool, -math.inf) > now_s:
            # Quarantined already: more nodes launched before it failing now are the same
            # incident, counted in its note, not a repeat that doubles the quarantine (a
            # batch of ten failing at one deadline quarantined its pool 5 times at once,
            # for 16 times the base: 4 hours for a pool that was bad for 30 minutes).
            self.quarantined[pool] += 1
            return None
        strikes = [t for t in self._strikes.get(pool, []) if t > now_s - window_s]
        strikes.append(now_s)
        self._strikes[pool] = strikes
        if len(strikes) < needed:
            return None
        self._strikes[pool] = []  # the next quarantine needs as many strikes again
        self.quarantined[pool] = len(strikes)
        log.warning("pool_quarantined pool=%s strikes=%d", pool.key, len(strikes))
        return self.refused(pool, now_s, base_s)

    def cleared(self, pool: Pool, launched_at_s: float | None = None) -> None:
        """A node of `pool` (launched at `launched_at_s`) booted and passed its health
        check: its strikes are forgiven, and boot failures of nodes launched no later
        are none."""
        self._strikes.pop(pool, None)
        if launched_at_s is not None:
            self._good_launch[pool] = max(launched_at_s, self._good_launch.get(pool, -math.inf))

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
