"""Spot-loss cover as a soft rule: what a fleet leaves uncovered and what that costs.

Where a budget binds (the joint searches of solver.mip) the robustness rows hold with a
non-negative slack per (model, group of locations): the capacity missing after the worst
failure domain's loss. Its penalty per rps is below what serving one more rps can add to
it (so serving always wins over covering) and far above any price difference (so cover
is bought whenever the budget and quotas allow). This module is the one place that
prices the slack and computes it for a fleet from its nodes and unmet load, so every
comparison of fleets (`fleet_cost`, the keep-current check, tests' own checkers) counts
it the same way. It also computes the storm cover the top priorities miss
(`Problem.storm_share`: a hard row, planned only where the budget pays for it), which
fleet comparisons price as cover.
docs/solver.md, "Cover under a binding budget", "Storm cover for the top priorities".
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from solver.problem import CoverShortfall, IntArray, LossCoverGroup, Problem

# The share of the unmet penalty one rps of served load may add in cover penalty, over
# every group it belongs to: below 1, so leaving load unmet never pays for cover.
COVER_WEIGHT = 0.9


def cover_penalty(problem: Problem, alpha: float, groups: Sequence[LossCoverGroup]) -> float:
    """USD/h per rps of missing cover capacity in one of a model's groups: one rps served
    adds `alpha` rps of missing cover in at most every group of the model, so it costs
    at most COVER_WEIGHT x the unmet penalty."""
    return COVER_WEIGHT * problem.unmet_penalty_usd_per_rps_hour / (alpha * max(1, len(groups)))


def group_shortfall_rps(
    problem: Problem,
    nodes: IntArray,
    unmet_rps: Sequence[float],
    m: int,
    alpha: float,
    group: LossCoverGroup,
    pools: Collection[int],
) -> float:
    """Capacity (rps) model m's fleet `nodes` misses in `group` after the worst failure
    domain's loss of spot, for alpha x the group's served load; `pools` are the model's
    candidate pools. Each node counts for at most alpha x the group's load, as in the
    model's rows (the same shortfall: a node above that covers everything alone)."""
    top = alpha * group.rps
    if top <= 0:
        return 0.0
    cap = problem.capacity_rps
    inside = [p for p in pools if problem.pools[p].location in group.locations]
    total = 0.0
    by_domain: dict[int, float] = {}
    for p in inside:
        c = min(float(cap[m, p]), top) * int(nodes[m, p])
        total += c
        pool = problem.pools[p]
        if pool.vanishes:
            by_domain[pool.failure_domain] = by_domain.get(pool.failure_domain, 0.0) + c
    if not by_domain:
        return 0.0  # nothing can vanish: the row holds whatever the load
    served = group.rps - sum(unmet_rps[k] for k in group.demands)
    return max(0.0, alpha * served - (total - max(by_domain.values())))


def group_storm_shortfall_rps(
    problem: Problem,
    nodes: IntArray,
    unmet_rps: Sequence[float],
    m: int,
    alpha: float,
    group: LossCoverGroup,
    pools: Collection[int],
) -> float:
    """Capacity (rps) model m's fleet `nodes` misses in `group` after a storm takes
    `Problem.storm_share(m)` of every vanishing pool's nodes, rounded up per pool, for
    alpha x the group's served load (0 for a model without a storm share); the same
    counting as `group_shortfall_rps`."""
    share = problem.storm_share(m)
    top = alpha * group.rps
    if share <= 0 or top <= 0:
        return 0.0
    cap = problem.capacity_rps
    left = 0.0
    vanish = False
    for p in pools:
        pool = problem.pools[p]
        if pool.location not in group.locations:
            continue
        n = int(nodes[m, p])
        vanish = vanish or pool.vanishes
        kept = problem.storm_survivors(n, share) if pool.vanishes else n
        left += min(float(cap[m, p]), top) * kept
    if not vanish:
        return 0.0  # nothing can vanish: the row holds whatever the load
    served = group.rps - sum(unmet_rps[k] for k in group.demands)
    return max(0.0, alpha * served - left)


def shortfalls(
    problem: Problem,
    nodes: IntArray,
    unmet_rps: Sequence[float],
    cands: dict[int, list[int]],
) -> tuple[tuple[CoverShortfall, float], ...]:
    """Every group a fleet leaves short of cover, with its penalty (USD/h), for the
    models in `cands` (their candidate pools, as the solver's rows use them)."""
    total_demand = [0.0] * len(problem.models)
    for d in problem.demands:
        total_demand[d.model] += d.rps
    out: list[tuple[CoverShortfall, float]] = []
    storm_alpha = problem.priority_storm_fraction
    for m, plist in sorted(cands.items()):
        alpha = problem.robustness_share(m, total_demand[m])
        if alpha <= 0 or total_demand[m] <= 0:
            continue
        groups = problem.loss_cover_groups(m, plist)
        for g in groups:
            short = group_shortfall_rps(problem, nodes, unmet_rps, m, alpha, g, plist)
            if short > 1e-6:
                rec = CoverShortfall(m, g.locations, short, short / alpha)
                out.append((rec, short * cover_penalty(problem, alpha, groups)))
            short = group_storm_shortfall_rps(problem, nodes, unmet_rps, m, storm_alpha, g, plist)
            if short > 1e-6:
                rec = CoverShortfall(m, g.locations, short, short / storm_alpha, storm=True)
                out.append((rec, short * cover_penalty(problem, alpha, groups)))
    return tuple(out)
