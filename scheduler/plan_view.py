"""How a plan is shown: JSON for programs, an aligned table for people."""

from __future__ import annotations

from typing import Any

from scheduler.catalog import Catalog
from scheduler.domain import Plan


def plan_json(plan: Plan) -> dict[str, Any]:
    """The plan as the JSON document `capsched plan --json` prints.

    `nodes` uses the same keys as a fleet file, so a plan can be fed back as `--fleet`.
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
            {"model": u.model, "region": u.region, "rps": round(u.rps, 4)} for u in plan.unmet
        ],
        "notes": list(plan.notes),
    }


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
    for u in plan.unmet:
        lines.append(f"unmet: {u.model} from {u.region}: {u.rps:.2f} rps")
    for note in plan.notes:
        lines.append(f"note: {note}")
    if estimated:
        lines.append("* AWS spot price estimated as on-demand x (1 - Spot Advisor savings)")
    return "\n".join(lines)
