"""Where capacity really is: a per-pool estimate learned from refused launches and
interruptions (issue 18, item 2).

SkyServe's spot placer keeps each zone "active" or "preemptive" and avoids the
preemptive ones; this is the same idea as a number. Each refused launch
(`InsufficientCapacity`) and each interruption (a notice, or a node reclaimed without
one) adds one event to its pool; the count decays exponentially with
`RECOVERY_S` as its time constant, so a pool that stocked out or reclaimed nodes an
hour ago weighs about a third as much as one that did it just now, and a quiet day
forgets it.

It is used in two ways, both through the offerings the policy sees (`apply`):

* as a risk cost: the decayed count per hour is added to the offering's
  `interruptions_per_hour`, which the planner prices as expected interruptions
  (`scheduler.decide.planner.build_problem`), so of two equal pools the one that keeps its
  nodes is preferred, and the return trigger weighs the same churn;
* as the obtainability `exp(-count)` in (0, 1], exported as the Prometheus gauge
  `capsched_pool_obtainability{pool}` and listed in the plan's notes.

The hard cap after a refusal (a stocked-out pool is not planned into again for a while)
stays the reconciler's pool cooldown; this estimate only weighs. The state is a few
numbers per pool, written to the state store after every change (`StateStore.
save_obtainability`), so a restarted daemon keeps what it learned.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from scheduler.domain import Offering, Pool

RECOVERY_S = 3600.0  # time constant of the decay: a pool's events weigh e^-1 after this
FORGET_BELOW = 0.01  # decayed counts below this are dropped (about 4.6 time constants)


class PoolEvent(enum.StrEnum):
    """What happened in a pool that tells us about its capacity."""

    REFUSED = "refused"  # a launch failed for lack of capacity
    PREEMPTED = "preempted"  # a node got an interruption notice or was reclaimed


@dataclass(frozen=True, slots=True)
class PoolEvidence:
    """Decayed event counts of one pool, as of `at_s`."""

    refusals: float  # refused launches, decayed to at_s
    preemptions: float  # interruptions, decayed to at_s
    at_s: float  # when the counts were last brought up to date

    def decayed(self, now_s: float, recovery_s: float = RECOVERY_S) -> PoolEvidence:
        """The same evidence decayed to `now_s` (never forward in time)."""
        if now_s <= self.at_s:
            return self
        f = math.exp(-(now_s - self.at_s) / recovery_s)
        return PoolEvidence(self.refusals * f, self.preemptions * f, now_s)

    @property
    def events(self) -> float:
        """Refusals and interruptions together."""
        return self.refusals + self.preemptions


class Obtainability:
    """Per-pool estimate of how obtainable and how keepable capacity is."""

    def __init__(
        self, evidence: Mapping[Pool, PoolEvidence] | None = None, recovery_s: float = RECOVERY_S
    ) -> None:
        self.recovery_s = recovery_s  # time constant of the decay
        self.evidence: dict[Pool, PoolEvidence] = dict(evidence or {})  # by pool, undecayed

    def record(self, pool: Pool, event: PoolEvent, now_s: float) -> None:
        """Count one event in `pool` at `now_s`."""
        old = self.evidence.get(pool, PoolEvidence(0.0, 0.0, now_s)).decayed(now_s, self.recovery_s)
        self.evidence[pool] = PoolEvidence(
            old.refusals + (1.0 if event is PoolEvent.REFUSED else 0.0),
            old.preemptions + (1.0 if event is PoolEvent.PREEMPTED else 0.0),
            max(now_s, old.at_s),
        )

    def current(self, now_s: float) -> dict[Pool, PoolEvidence]:
        """Every pool's evidence decayed to `now_s`; forgotten pools are dropped."""
        out: dict[Pool, PoolEvidence] = {}
        for pool, ev in list(self.evidence.items()):
            d = ev.decayed(now_s, self.recovery_s)
            if d.events < FORGET_BELOW:
                del self.evidence[pool]
            else:
                out[pool] = d
        return out

    def estimate(self, pool: Pool, now_s: float) -> float:
        """Obtainability of `pool` in (0, 1]: 1 with no recent event, exp(-decayed count)."""
        ev = self.evidence.get(pool)
        return 1.0 if ev is None else math.exp(-ev.decayed(now_s, self.recovery_s).events)

    def extra_interruptions_per_hour(self, pool: Pool, now_s: float) -> float:
        """Learned hazard of `pool`: its decayed event count per recovery time, per hour."""
        ev = self.evidence.get(pool)
        if ev is None:
            return 0.0
        return ev.decayed(now_s, self.recovery_s).events * 3600.0 / self.recovery_s

    def apply(self, offerings: Sequence[Offering], now_s: float) -> list[Offering]:
        """`offerings` with each pool's learned hazard added to its interruption rate."""
        learned = self.current(now_s)
        if not learned:
            return list(offerings)
        per_hour = 3600.0 / self.recovery_s
        return [
            dataclasses.replace(
                o,
                interruptions_per_hour=o.interruptions_per_hour + learned[o.pool].events * per_hour,
            )
            if o.pool in learned
            else o
            for o in offerings
        ]

    def notes(self, now_s: float) -> list[str]:
        """One line per pool with recent events, lowest obtainability first."""
        rows = sorted(self.current(now_s).items(), key=lambda kv: (-kv[1].events, kv[0].key))
        return [
            f"obtainability {pool.key}: {math.exp(-ev.events):.2f}"
            f" ({ev.refusals:.2f} refusals, {ev.preemptions:.2f} interruptions, decayed)"
            for pool, ev in rows
        ]


def from_rows(
    rows: Iterable[tuple[Pool, PoolEvidence]], recovery_s: float = RECOVERY_S
) -> Obtainability:
    """An estimate restored from the store's rows."""
    return Obtainability(dict(rows), recovery_s)
