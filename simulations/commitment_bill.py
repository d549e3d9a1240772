"""What commitments cost in a replay, by the same rule for every policy.

A commitment (`[[commitments]]`, `scheduler.fleet.commitments`) bills `count x usd_per_hour`
every hour of the replay, used or not. At every moment it covers
`min(count, live on-demand nodes in its pools)` of whatever nodes the policy runs
there (`scheduler.fleet.commitments.split_covered`: commitments in config order), and a
covered node's on-demand price is not billed. A savings plan bills its amount per hour,
used or not, and covers the nodes the count commitments leave in its pools, at its
rates, up to that amount (`split_spend`: a share of one node at the end). So a
baseline that knows nothing of commitments still pays their fee and gets the discount
when its nodes happen to fall in a committed pool, as it would on a real cloud bill;
capsched differs only in placing nodes there on purpose.

`bill_commitments` integrates this exactly over the instances' billed intervals (from
launch to end: booting nodes are billed, so they are covered too) and returns per-step
cumulative series that the engine adds to its cost by market: the fee as the
`commitment` market, the covered on-demand price taken off `on-demand`. Covered time
is counted from the actual interval, without the cloud's minimum billed seconds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from scheduler.domain import Pool
from scheduler.fleet.commitments import Commitment, SpendCommitment, split_covered, split_spend

# The key of the commitments' fee in `RunResult.cost_by_market`.
COMMITMENT_MARKET = "commitment"


@dataclass(frozen=True, slots=True)
class CommitmentUsage:
    """One commitment over a replay."""

    label: str  # the commitment's name
    count: int  # nodes paid for
    paid_node_hours: float  # count x hours replayed
    used_node_hours: float  # node-hours it covered
    fee_usd: float  # what it billed
    covered_usd: float  # on-demand price of the node-hours it covered (not billed)
    # The part of the fee that paid for covered node-hours (at the commitment's price or
    # a savings plan's rates): utilisation in money, the same measure for both forms.
    used_fee_usd: float = 0.0
    # A savings plan's amount per hour (0 for a count of nodes, whose `count` says it).
    usd_per_hour_committed: float = 0.0

    @property
    def utilisation(self) -> float:
        """Share of what was paid that covered usage: of the paid node-hours for a count
        of nodes, of the amount for a savings plan (1.0 when nothing was paid)."""
        if self.paid_node_hours > 0:
            return self.used_node_hours / self.paid_node_hours
        return self.used_fee_usd / self.fee_usd if self.fee_usd > 0 else 1.0


@dataclass(frozen=True)
class CommitmentBill:
    """Per-step cumulative series (end of each step) and per-commitment totals."""

    fee_usd: np.ndarray  # (steps,) commitments' fee billed so far
    covered_usd: np.ndarray  # (steps,) on-demand price of covered node-time so far
    usage: tuple[CommitmentUsage, ...]  # per commitment, config order


def bill_commitments(
    commitments: Sequence[Commitment],
    intervals: Iterable[tuple[Pool, float, float]],
    prices: Mapping[Pool, float],
    start_s: float,
    step_ends_s: np.ndarray,
    savings_plans: Sequence[SpendCommitment] = (),
) -> CommitmentBill:
    """The commitments' bill from `start_s` to each of `step_ends_s` (ascending), for
    instances billed over `intervals` ((pool, from, to)) at `prices` (on-demand USD per
    node-hour by pool): the count commitments first, then the savings plans on the
    nodes they left (`split_spend`). `usage` lists the count commitments, then the
    savings plans, each in config order."""
    ends = np.asarray(step_ends_s, dtype=np.float64)
    end_s = float(ends[-1]) if len(ends) else start_s
    covered_pools = {p for c in commitments for p in c.pools}
    covered_pools |= {p for sp in savings_plans for p in sp.pools}
    deltas: dict[float, dict[Pool, int]] = defaultdict(lambda: defaultdict(int))
    for pool, a, b in intervals:
        if pool not in covered_pools or b <= a:
            continue
        deltas[a][pool] += 1
        deltas[b][pool] -= 1
    # Breakpoints: every change of the live counts and every step end, within the replay.
    times = sorted({start_s, *ends.tolist(), *(t for t in deltas if start_s < t < end_s)})
    live: dict[Pool, int] = defaultdict(int)
    for t in sorted(t for t in deltas if t <= start_s):  # live when accounting starts
        for pool, d in deltas[t].items():
            live[pool] += d
    n = len(commitments)
    n_sp = len(savings_plans)
    used_h = np.zeros(n + n_sp)
    covered_usd = np.zeros(n + n_sp)
    drawn_usd = np.zeros(n_sp)  # what covered node-hours drew from each savings plan
    rates = [dict(zip(sp.pools, sp.rate_usd_per_hour, strict=True)) for sp in savings_plans]
    cum_covered = np.zeros(len(times))
    for i in range(len(times) - 1):
        t, nxt = times[i], times[i + 1]
        if i > 0 and t in deltas:
            for pool, d in deltas[t].items():
                live[pool] += d
        hours = (nxt - t) / 3600.0
        rate = 0.0
        covered, left = split_covered(commitments, live)
        for (c, pool), k in covered.items():
            used_h[c] += k * hours
            usd = k * prices[pool] * hours
            covered_usd[c] += usd
            rate += usd
        if savings_plans:
            by_plan, _ = split_spend(savings_plans, left)
            for (s, pool), share in by_plan.items():
                used_h[n + s] += share * hours
                usd = share * prices[pool] * hours
                covered_usd[n + s] += usd
                drawn_usd[s] += share * rates[s][pool] * hours
                rate += usd
        cum_covered[i + 1] = cum_covered[i] + rate
    fee_rate = sum(c.fee_usd_per_hour for c in commitments)
    fee_rate += sum(sp.fee_usd_per_hour for sp in savings_plans)
    paid_h = (end_s - start_s) / 3600.0
    usage = tuple(
        CommitmentUsage(
            label=c.label,
            count=c.count,
            paid_node_hours=c.count * paid_h,
            used_node_hours=float(used_h[k]),
            fee_usd=c.fee_usd_per_hour * paid_h,
            covered_usd=float(covered_usd[k]),
            used_fee_usd=float(used_h[k]) * c.usd_per_hour,
        )
        for k, c in enumerate(commitments)
    ) + tuple(
        CommitmentUsage(
            label=sp.label,
            count=0,
            paid_node_hours=0.0,
            used_node_hours=float(used_h[n + s]),
            fee_usd=sp.fee_usd_per_hour * paid_h,
            covered_usd=float(covered_usd[n + s]),
            used_fee_usd=float(drawn_usd[s]),
            usd_per_hour_committed=sp.usd_per_hour_committed,
        )
        for s, sp in enumerate(savings_plans)
    )
    return CommitmentBill(
        fee_usd=fee_rate * (ends - start_s) / 3600.0,
        covered_usd=np.interp(ends, np.asarray(times), cum_covered),
        usage=usage,
    )
