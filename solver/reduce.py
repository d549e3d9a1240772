"""Presolve reductions that cannot change the optimum (docs/solver.md, "Reductions")."""

from __future__ import annotations

import math
from collections import defaultdict

from solver.problem import Problem


def candidate_pools(problem: Problem) -> dict[int, list[int]]:
    """Pools worth a variable for each model.

    A pool is kept when the model can run there (capacity > 0) and either some
    demand of the model may be routed to its location, the model already runs
    there, or the model has no demand at all (minimum replicas may go anywhere).
    Among the rest, a pool is dropped when another pool in the same location,
    market, quotas and (for spot) failure domain is at least as good in every respect
    (capacity, accelerators, price, risk, churn cost, availability).
    Pools holding current nodes are always kept.
    """
    quota_sig: dict[int, frozenset[int]] = defaultdict(frozenset)
    for qi, q in enumerate(problem.quotas):
        for p in q.pools:
            quota_sig[p] = quota_sig[p] | {qi}
    # A pool that draws from an amount (a savings plan) is its own group: dominance does
    # not compare what pools draw, so none of them may drop another.
    draws = {p for c in problem.spend_caps for p in c.pools}
    locations: dict[int, set[int]] = defaultdict(set)
    for d in problem.demands:
        locations[d.model].update(d.locations)

    out: dict[int, list[int]] = {}
    for m in range(len(problem.models)):
        cap = problem.capacity_rps[m]
        cur = problem.current[m]
        groups: dict[tuple[object, ...], list[int]] = defaultdict(list)
        keep: list[int] = []
        for p, pool in enumerate(problem.pools):
            if cur[p] > 0:
                keep.append(p)
                continue
            if cap[p] <= 0 or pool.max_nodes <= 0:
                continue
            if locations[m] and pool.location not in locations[m]:
                continue
            # Failure domains only matter for pools that can vanish (robustness counts
            # spot losses that are not replaced within their notice).
            domain = pool.failure_domain if pool.vanishes else -1
            own = p if p in draws else -1
            groups[(pool.location, domain, pool.spot, quota_sig[p], own)].append(p)
        for members in groups.values():
            keep.extend(_undominated(problem, m, members))
        out[m] = sorted(set(keep))
    return out


def _undominated(problem: Problem, m: int, members: list[int]) -> list[int]:
    """Members no other member dominates, possibly several nodes of it at once.

    q dominates p with multiplicity k = ceil(cap_p / cap_q) when k nodes of q give at
    least p's capacity and cost, accelerators, risk and churn of k q-nodes are no more
    than one p-node's: any plan using p is then matched or beaten by swapping each
    p-node for k q-nodes (more nodes never hurt minimum replicas; more on-demand
    capacity never hurts the on-demand share). For spot pools of a model with an
    on-demand share, extra spot capacity would dilute the share, so k nodes of q must
    give exactly p's capacity. For a model placed by size, k nodes of q must give at
    least p's capacity for each of its size classes too.
    """
    cap = problem.capacity_rps[m]
    class_caps = [problem.size_classes[c].capacity_rps for c in problem.classes_of(m)]
    strict_share = problem.on_demand_share_min(m) > 0
    pools = problem.pools
    # Per member: capacity, accelerators, price, risk, launch cost, room, spot.
    attrs = {
        p: (
            float(cap[p]),
            pools[p].gpus,
            pools[p].usd_per_hour,
            pools[p].risk_usd_per_hour,
            pools[p].launch_usd_per_hour,
            pools[p].max_nodes,
            pools[p].spot,
        )
        for p in members
    }

    # Cheapest per rps first (then smallest, then index): a dominating pool is seen first.
    ordered = sorted(members, key=lambda p: (attrs[p][2] / attrs[p][0], attrs[p][0], p))
    kept: list[int] = []
    for p in ordered:
        # Whether a kept q dominates p, inline: this loop runs for every pool of every
        # presolve (about 2% of the BurstGPT week's replay as a nested function).
        cp, gp, up, rp, lp, mp, spot_p = attrs[p]
        for q in kept:
            cq, gq, uq, rq, lq, mq, _ = attrs[q]
            k = math.ceil(cp / cq - 1e-9)
            if (
                k * cq >= cp - 1e-9
                and not (spot_p and strict_share and k * cq > cp + 1e-9)
                and not any(k * caps[q] < caps[p] - 1e-9 for caps in class_caps)
                and k * gq <= gp
                and k * uq <= up + 1e-12
                and k * rq <= rp + 1e-12
                and k * lq <= lp + 1e-12
                and mq >= min(mp * k, 10_000)
            ):
                break
        else:
            kept.append(p)
    return kept
