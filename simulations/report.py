"""Reports of a replay: the comparison table, summary.json and report.png.

report.png has a row per policy and a column per model (per model and region where a
model has several), each column on one y scale, so policies compare at a glance and a
model's capacity is never added to another's; then each policy's cumulative cost, and
its cost per million tokens per GPU kind and per model (`simulations.token_cost`, the
same figures as summary.json's `usd_per_million_tokens_by_gpu_kind` and `..._by_model`
and the tables `breakdown_table` prints)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from simulations.engine import RunResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SUMMARY_KEYS = (
    "cost_usd",
    "cost_vs_static_peak",
    "slo_attainment",
    "unserved_fraction",
    "availability",
    "preemptions",
    "launches",
    "fast_launches",
    "terminations",
    "gpu_hours",
    "usd_per_million_tokens",
    "usd_per_million_tokens_by_model",
    "usd_per_million_tokens_by_gpu_kind",
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
    cols: tuple[tuple[str, str | None, str], ...] = (
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
        ("USD/Mtok", "usd_per_million_tokens", "{:.3f}"),
        ("solve p95 s", "solve_time_p95_s", "{:.3f}"),
        ("wall s", "wall_s", "{:.1f}"),
        ("bound USD", "lower_bound_usd", "{:.2f}"),
        ("bound", "bound_kind", "{}"),
    )
    if any("commitment_usd" in s for s in policies.values()):  # only with [[commitments]]
        cols = (
            *cols[:2],
            ("commit USD", "commitment_usd", "{:.2f}"),
            ("commit util", "commitment_utilisation", "{:.3f}"),
            *cols[2:],
        )
    rows = [[c[0] for c in cols]]
    for name, s in policies.items():
        row = []
        for _, key, fmt in cols:
            value = name if key is None else s.get(key)
            row.append("-" if value is None else fmt.format(value))
        rows.append(row)
    return _aligned(rows)


def _aligned(rows: Sequence[Sequence[str]]) -> str:
    """`rows` (the first the header) as text columns: the first left-aligned, the others
    right-aligned, a rule under the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# summary.json's cost per million tokens per group of nodes, and what its table calls it.
BREAKDOWNS = {
    "usd_per_million_tokens_by_gpu_kind": "GPU kind",
    "usd_per_million_tokens_by_model": "model",
}


def breakdown_table(policies: Mapping[str, Mapping[str, Any]], key: str) -> str:
    """USD per million tokens per policy (rows) and GPU kind or model (columns) from
    summary.json's `key` (one of `BREAKDOWNS`): "-" where the policy ran no node of the
    column, "idle" where its nodes there served no token. Empty without any column."""
    names = sorted({n for s in policies.values() for n in (s.get(key) or {})})
    if not names:
        return ""
    rows = [[f"USD/Mtok by {BREAKDOWNS[key]}", *names]]
    for policy, s in policies.items():
        row = [policy]
        for name in names:
            entry = (s.get(key) or {}).get(name)
            if entry is None:
                row.append("-")
            elif entry["usd_per_million_tokens"] is None:
                row.append("idle")
            else:
                row.append(f"{entry['usd_per_million_tokens']:.3f}")
        rows.append(row)
    return _aligned(rows)


def breakdown_tables(policies: Mapping[str, Mapping[str, Any]]) -> str:
    """The tables `capsched simulate` prints after its main one: USD per million tokens
    per GPU kind, then per model (`breakdown_table`)."""
    return "\n\n".join(t for t in (breakdown_table(policies, k) for k in BREAKDOWNS) if t)


# A step counts as an SLO miss when more than this share of a series' requests in it were
# not answered within the SLO (unserved, or served too slowly by the model's fleet).
MISS_SHARE = 0.001


@dataclass(frozen=True)
class Panel:
    """One panel of report.png: a policy's view of one (model, region) series."""

    policy: str  # policy name (the panel's row)
    model: str  # model (the panel's column, with the region)
    region: str  # source region; "" when the model has only one
    demand_rps: np.ndarray  # (steps,) requests/s asked for
    capacity_rps: np.ndarray  # (steps,) ready capacity within the region's latency limit
    served_rps: np.ndarray  # (steps,) demand routed to that capacity
    planned_rps: np.ndarray  # (steps,) rate the policy planned for (NaN where it does not say)
    missed: np.ndarray  # (steps,) bool: the step missed the SLO (MISS_SHARE)

    @property
    def planned_vs_served(self) -> float | None:
        """What the policy planned for over what it served, where it said what it planned."""
        said = np.isfinite(self.planned_rps)
        served = float(self.served_rps[said].sum())
        return float(self.planned_rps[said].sum()) / served if said.any() and served > 0 else None

    @property
    def capacity_vs_demand(self) -> float | None:
        """Ready capacity over demand, over the whole trace."""
        demand = float(self.demand_rps.sum())
        return float(self.capacity_rps.sum()) / demand if demand > 0 else None

    @property
    def label(self) -> str:
        """The panel's axes label (how tests and readers find it)."""
        return panel_label(self.policy, self.model, self.region)


def panel_label(policy: str, model: str, region: str) -> str:
    """The matplotlib label of one panel's axes in the report figure."""
    return f"panel {policy} {model} {region}".rstrip()


def panels(result: RunResult) -> list[Panel]:
    """One panel per model, or per (model, region) for a model with several regions."""
    regions_of: dict[str, list[str]] = {}
    for model, region in result.series:
        regions_of.setdefault(model, []).append(region)
    out = []
    for s, (model, region) in enumerate(result.series):
        m = result.models.index(model)
        served_m, within_m = result.served_rps[m], result.within_slo_rps[m]
        # The latency model is per model: its share within the SLO applies to each region.
        share = np.divide(within_m, served_m, out=np.ones_like(served_m), where=served_m > 0)
        demand = result.series_demand_rps[s]
        served = result.series_served_rps[s]
        missed_rps = demand - served * share
        out.append(
            Panel(
                policy=result.policy,
                model=model,
                region=region if len(regions_of[model]) > 1 else "",
                demand_rps=demand,
                capacity_rps=result.series_capacity_rps[s],
                served_rps=served,
                planned_rps=result.series_planned_rps[s],
                missed=(demand > 0) & (missed_rps > MISS_SHARE * demand),
            )
        )
    return out


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index ranges where `flags` is true."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _stats(p: Panel, step: float, unit: str) -> str:
    """The line above a panel: how much the policy planned and ran for what it served."""
    missed = f"SLO missed {int(p.missed.sum()) * step:g} {unit[:3]}"
    if p.capacity_vs_demand is None:
        return f"no demand · capacity {float(p.capacity_rps.mean()):.1f} rps on average · {missed}"
    return (
        f"planned/served {_ratio(p.planned_vs_served)} · "
        f"capacity/demand {_ratio(p.capacity_vs_demand)} · {missed}"
    )


def figure(results: Sequence[RunResult], title: str = "") -> Figure:
    """report.png as a figure: a row per policy and a column per model (and region where
    a model has several). Each panel shows demand, ready capacity within reach, what the
    policy planned for, the steps that missed the SLO (red), and planned/served and
    capacity/demand over the trace; a column has one y scale for every policy. The last
    row is each policy's cumulative cost."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    grid = [panels(r) for r in results]
    n_rows, n_cols = len(results), max((len(row) for row in grid), default=0)
    costs = {r.policy: r.token_costs() for r in results}
    per_token = any(c.by_gpu_kind for c in costs.values())  # a row for the bars
    n_extra = 2 if per_token else 1
    fig = Figure(figsize=(1.0 + 4.4 * max(n_cols, 2), 1.2 + 2.3 * (n_rows + n_extra)))
    height = fig.get_figheight()
    spec = fig.add_gridspec(
        n_rows + n_extra,
        max(n_cols, 1),
        hspace=0.35 if not per_token else 0.45,
        wspace=0.15,
        top=1 - 1.1 / height,
        bottom=0.5 / height,
    )
    first = results[0] if results else None
    span_s = float(first.times_s[-1] - first.times_s[0]) if first and len(first.times_s) else 0
    unit_s, unit = (60.0, "minutes") if span_s <= 3 * 3600 else (3600.0, "hours")
    step = (first.times_s[1] - first.times_s[0]) / unit_s if first and len(first.times_s) > 1 else 1
    # One y scale per column: the highest of demand, capacity and plan over every policy.
    tops = [1.0] * n_cols
    for row in grid:
        for j, p in enumerate(row):
            values = np.concatenate([p.demand_rps, p.capacity_rps, p.planned_rps])
            finite = values[np.isfinite(values)]
            if finite.size:
                tops[j] = max(tops[j], 1.1 * float(finite.max()))
    x_axis = None
    for i, (result, row) in enumerate(zip(results, grid, strict=True)):
        t = (result.times_s - result.times_s[0]) / unit_s
        for j, p in enumerate(row):
            ax = fig.add_subplot(spec[i, j], sharex=x_axis)
            x_axis = x_axis or ax
            ax.set_label(p.label)
            for a, b in _runs(p.missed):
                ax.axvspan(t[a], t[b - 1] + step, color="tab:red", alpha=0.18, lw=0)
                ax.axvspan(t[a], t[b - 1] + step, ymax=0.06, color="tab:red", lw=0)
            # Each value holds for its whole step: repeat the last one at the end of the trace.
            te = np.append(t, t[-1] + step) if len(t) else t

            def held(y: np.ndarray) -> np.ndarray:
                return np.append(y, y[-1]) if len(y) else y

            capacity = held(p.capacity_rps)
            ax.fill_between(te, capacity, step="post", color="tab:blue", alpha=0.25, lw=0)
            ax.step(te, capacity, where="post", color="tab:blue", lw=0.8)
            ax.step(te, held(p.demand_rps), where="post", color="black", lw=1.2)
            ax.step(te, held(p.planned_rps), where="post", color="tab:orange", lw=1.2, ls="--")
            ax.set_ylim(0, tops[j])
            ax.set_xlim(0, te[-1] if len(te) else 1)
            ax.set_title(_stats(p, step, unit), loc="left", fontsize=7.5)
            ax.tick_params(labelsize=8, labelbottom=i == n_rows - 1)
            if i == 0:  # the column's name, above the first panel's own line
                ax.annotate(
                    f"{p.model} · {p.region}" if p.region else p.model,
                    xy=(0.5, 1.0),
                    xycoords="axes fraction",
                    xytext=(0, 15),
                    textcoords="offset points",
                    ha="center",
                    fontsize=10,
                    fontweight="bold",
                )
            if j == 0:
                ax.set_ylabel(f"{result.policy}\nrequests/s", fontsize=9)
    cost = fig.add_subplot(spec[n_rows, :], sharex=x_axis)
    cost.set_label("cost")
    for r in results:
        t = (r.times_s - r.times_s[0]) / unit_s
        cost.plot(t, sum(r.cost_by_market.values()), label=f"{r.policy} {r.cost_usd:.2f} USD")
    cost.set_ylabel("cumulative USD", fontsize=9)
    cost.set_xlabel(f"{unit} since trace start", fontsize=9)
    cost.tick_params(labelsize=8)
    cost.legend(loc="upper left", fontsize=8, ncol=3)
    if per_token:
        bars = spec[n_rows + 1, :].subgridspec(1, 2, width_ratios=(3, 2), wspace=0.12)
        kinds = {p: {k: v.usd_per_million_tokens for k, v in c.by_gpu_kind.items()}
                 for p, c in costs.items()}  # fmt: skip
        models = {p: {k: v.usd_per_million_tokens for k, v in c.by_model.items()}
                  for p, c in costs.items()}  # fmt: skip
        _token_bars(fig.add_subplot(bars[0]), "GPU kind", kinds, 6)
        _token_bars(fig.add_subplot(bars[1]), "model", models, 3)
    fig.legend(
        handles=[
            Line2D([], [], color="black", lw=1.2, label="demand"),
            Patch(color="tab:blue", alpha=0.35, label="ready capacity within the latency limit"),
            Line2D([], [], color="tab:orange", lw=1.2, ls="--", label="planned for"),
            Patch(
                color="tab:red", alpha=0.35, label=f"SLO missed (> {MISS_SHARE:.1%} of requests)"
            ),
        ],
        loc="upper center",
        ncol=4,
        fontsize=9,
        frameon=False,
        bbox_to_anchor=(0.5, 1.0 - 0.3 / height),
    )
    if title:
        fig.suptitle(title, fontsize=11, y=1.0 - 0.05 / height)
    return fig


def token_bars_label(by: str) -> str:
    """The label of the axes of report.png's USD per million tokens bars by `by`."""
    return f"usd per million tokens by {by}"


def _token_bars(
    ax: Any, by: str, values: Mapping[str, Mapping[str, float | None]], legend_cols: int
) -> None:
    """Grouped bars: per name (GPU kind or model), a bar per policy of its USD per
    million tokens; "idle" where the policy's nodes there served no token, nothing
    where it ran none."""
    ax.set_label(token_bars_label(by))
    names = sorted({n for per in values.values() for n in per})
    width = 0.8 / max(len(values), 1)
    top = max((v for per in values.values() for v in per.values() if v), default=1.0)
    for i, (policy, per) in enumerate(values.items()):
        xs = [j - 0.4 + width * (i + 0.5) for j, n in enumerate(names) if n in per]
        ys = [per[n] or 0.0 for n in names if n in per]
        bars = ax.bar(xs, ys, width=width * 0.95, label=policy, color=f"C{i % 10}")
        labels = ["idle" if per[n] is None else f"{per[n]:.2f}" for n in names if n in per]
        ax.bar_label(bars, labels=labels, fontsize=6, padding=1, rotation=90)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylim(0, 1.25 * top)
    ax.set_ylabel("USD per million tokens", fontsize=9)
    ax.set_title(f"cost per million tokens served, by {by} of the nodes", loc="left", fontsize=9)
    ax.tick_params(labelsize=8)
    # Under the axis, not over the bars; one entry per policy, in its cost line's colour.
    ax.legend(
        loc="upper left", bbox_to_anchor=(0.0, -0.12), fontsize=7, ncol=legend_cols, frameon=False
    )


def plot(out_path: Path, results: Sequence[RunResult], title: str = "") -> Path:
    """Write report.png (see `figure`)."""
    figure(results, title).savefig(out_path, dpi=100, bbox_inches="tight")
    return out_path
