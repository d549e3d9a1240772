"""How a plan is shown: JSON for programs, an aligned table for people. Both say what
the plan was made for (the demand) next to what it is (nodes, cost, unmet demand)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from scheduler.domain import Demand, Plan
from scheduler.fleet.catalog import Catalog


def demand_totals(demand: Sequence[Demand]) -> list[Demand]:
    """The demand the solver serves: one entry per (model, region), in the order first
    given, repeated entries summed."""
    totals: dict[tuple[str, str], float] = {}
    for d in demand:
        totals[d.model, d.region] = totals.get((d.model, d.region), 0.0) + d.rps
    return [Demand(m, r, rps) for (m, r), rps in totals.items()]


def plan_json(plan: Plan, demand: Sequence[Demand]) -> dict[str, Any]:
    """The plan as the JSON document `capsched plan --json` prints.

    `demand` is what the plan was made for, with the keys of a demand file; `nodes` uses
    the keys of a fleet file. So either can be fed back (`--demand`, `--fleet`).
    """
    return {
        "status": plan.status.value,
        "usd_per_hour": round(plan.usd_per_hour, 4),
        "objective_usd_per_hour": round(plan.objective, 4),
        "gap": round(plan.gap, 6),
        "solve_time_s": round(plan.solve_time_s, 4),
        "nodes": [
            {
                "model": pl.model,
                "cloud": pl.pool.cloud.value,
                "region": pl.pool.region,
                "zone": pl.pool.zone,
                "instance_type": pl.pool.instance_type,
                "market": pl.pool.market.value,
                "count": pl.count,
            }
            for pl in plan.placements
        ],
        "unmet": [
            {
                "model": u.model,
                "region": u.region,
                "rps": round(u.rps, 4),
                "priority": u.priority,
                "reasons": [r.value for r in u.reasons],
            }
            for u in plan.unmet
        ],
        "relaxed": [r.value for r in plan.relaxed],
        "notes": list(plan.notes),
        "demand": [
            {"model": d.model, "region": d.region, "rps": round(d.rps, 4)}
            for d in demand_totals(demand)
        ],
    }


def demand_table(plan: Plan, demand: Sequence[Demand], source: str) -> str:
    """What the plan was made for: requests/s per (model, region) from `source`, and how
    much of each the plan leaves unserved."""
    unmet: dict[tuple[str, str], float] = {}
    for u in plan.unmet:
        unmet[u.model, u.region] = unmet.get((u.model, u.region), 0.0) + u.rps
    rows: list[tuple[str, ...]] = [("model", "region", "rps", "unmet rps")]
    for d in demand_totals(demand):
        left = unmet.get((d.model, d.region), 0.0)
        rows.append((d.model, d.region, f"{d.rps:.2f}", f"{left:.2f}" if left > 0 else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:  # names left, numbers right
        cells = zip(row, widths, strict=True)
        lines.append(
            "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(cells))
        )
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([f"planned for this demand ({source}):", *lines])


def plan_table(plan: Plan, catalog: Catalog) -> str:
    """The plan as a text table with prices, then totals and unmet demand."""
    prices = {o.pool: o for o in catalog.offerings}
    header = ("model", "cloud", "region/zone", "instance type", "market", "nodes", "USD/h each")
    rows: list[tuple[str, ...]] = [header]
    estimated = False
    for pl in plan.placements:
        offering = prices.get(pl.pool)
        price = f"{offering.usd_per_hour:.4f}" if offering else "?"
        if offering and offering.price_is_estimate:
            price += "*"
            estimated = True
        rows.append(
            (
                pl.model,
                pl.pool.cloud.value,
                pl.pool.zone or pl.pool.region,
                pl.pool.instance_type,
                pl.pool.market.value,
                str(pl.count),
                price,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(
        f"status {plan.status.value}  cost {plan.usd_per_hour:.2f} USD/h  "
        f"gap {plan.gap:.2%}  solved in {plan.solve_time_s:.2f} s"
    )
    for u in sorted(plan.unmet, key=lambda u: (-u.priority, u.model, u.region)):
        why = ", ".join(r.value for r in u.reasons) or "not analysed"
        lines.append(
            f"unmet: {u.model} from {u.region}: {u.rps:.2f} rps (priority {u.priority}; {why})"
        )
    for note in plan.notes:
        lines.append(f"note: {note}")
    if estimated:
        lines.append("* AWS spot price estimated as on-demand x (1 - Spot Advisor savings)")
    return "\n".join(lines)
