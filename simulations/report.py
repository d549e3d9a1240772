"""Reports of a replay: the comparison table, summary.json and report.png."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from simulations.engine import RunResult

SUMMARY_KEYS = (
    "cost_usd",
    "cost_vs_static_peak",
    "slo_attainment",
    "unserved_fraction",
    "availability",
    "preemptions",
    "launches",
    "terminations",
    "gpu_hours",
    "solve_time_p95_s",
    "wall_s",
    "lower_bound_usd",
    "bound_kind",
    "budget_held_ticks",
    "quota_held_ticks",
)
STATIC_PEAK = "static-peak"


def summaries(results: Sequence[RunResult]) -> dict[str, dict[str, Any]]:
    """Each policy's summary.json entry; ratios against static-peak when it ran."""
    ref = next((r.cost_usd for r in results if r.policy == STATIC_PEAK), None)
    return {r.policy: r.summary(ref) for r in results}


def write_summary(out_dir: Path, results: Sequence[RunResult], extra: Mapping[str, Any]) -> Path:
    """Write DIR/summary.json: {"policies": {...}} plus run details under other keys."""
    path = out_dir / "summary.json"
    doc = {"policies": summaries(results), **extra}
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def table(policies: Mapping[str, Mapping[str, Any]]) -> str:
    """The comparison table printed by `capsched simulate`."""
    cols = (
        ("policy", None, "{}"),
        ("cost USD", "cost_usd", "{:.2f}"),
        ("vs static", "cost_vs_static_peak", "{:.3f}"),
        ("SLO att.", "slo_attainment", "{:.4f}"),
        ("unserved", "unserved_fraction", "{:.4f}"),
        ("avail.", "availability", "{:.3f}"),
        ("preempt", "preemptions", "{}"),
        ("launch", "launches", "{}"),
        ("term.", "terminations", "{}"),
        ("GPU-h", "gpu_hours", "{:.1f}"),
        ("solve p95 s", "solve_time_p95_s", "{:.3f}"),
        ("wall s", "wall_s", "{:.1f}"),
        ("bound USD", "lower_bound_usd", "{:.2f}"),
        ("bound", "bound_kind", "{}"),
    )
    rows = [[c[0] for c in cols]]
    for name, s in policies.items():
        row = []
        for _, key, fmt in cols:
            value = name if key is None else s.get(key)
            row.append("-" if value is None else fmt.format(value))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot(out_path: Path, results: Sequence[RunResult], title: str = "") -> Path:
    """report.png: demand, forecast and ready capacity by market for every policy over time,
    and the cumulative cost of each policy."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    n = len(results)
    fig, axes = plt.subplots(n + 1, 1, figsize=(11, 2.6 * (n + 1)), sharex=True, squeeze=False)
    for ax, r in zip(axes[:, 0], results, strict=False):
        hours = (r.times_s - r.times_s[0]) / 3600.0
        markets = list(r.capacity_by_market)
        ax.stackplot(
            hours,
            *(r.capacity_by_market[m] for m in markets),
            labels=[f"capacity {m}" for m in markets],
            alpha=0.35,
            step="post",
        )
        ax.plot(hours, r.demand_rps.sum(axis=0), color="black", lw=1.0, label="demand")
        if np.isfinite(r.forecast_rps).any():
            ax.plot(hours, r.forecast_rps, color="tab:red", lw=1.0, ls="--", label="planned for")
        ax.set_ylabel("requests/s")
        ax.set_title(r.policy, loc="left", fontsize=10)
        ax.legend(loc="upper right", fontsize=7, ncol=4)
    ax = axes[-1, 0]
    for r in results:
        hours = (r.times_s - r.times_s[0]) / 3600.0
        total = sum(r.cost_by_market.values())
        ax.plot(hours, total, label=r.policy)
    ax.set_ylabel("cumulative USD")
    ax.set_xlabel("hours since trace start")
    ax.legend(loc="upper left", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path
