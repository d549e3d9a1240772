"""`capsched simulate`: replay a request trace through capsched and the baselines.

    capsched simulate [--config FILE] [--trace FILE] [--trace-format F]
                      [--scenario SCENARIO.toml] [--policy capsched,spothedge,...]
                      [--fleet-gpus N] [--out DIR]
    capsched simulate [...] --commitment-sweep CLOUD/REGION/TYPE:0,2,4,8 [--workers N]
    capsched simulate [...] --commitment-sweep savings:CLOUD/REGION/FAMILY-OR-*:0,2.5,5
    capsched simulate --sweep SWEEP.toml [--workers N] [--out DIR]
                      [--executor local|ray] [--ray-address ADDRESS]
                      [--ray-runtime-env JSON]

Without `--trace` it replays the bundled Azure LLM trace slice under the embedded
default scenario (bundled synthetic spot capacity: the same numbers on every machine;
the real SkyPilot traces are `--scenario simulations/data/scenarios/
skypilot-spot-traces.toml`). Writes
`DIR/summary.json` (per policy: cost_usd, cost_vs_static_peak, slo_attainment,
unserved_fraction, availability, preemptions, launches, terminations, gpu_hours,
usd_per_million_tokens and the same per model and per GPU kind of the nodes,
`usd_per_million_tokens_by_model` and `usd_per_million_tokens_by_gpu_kind`: name ->
{usd, million_tokens, usd_per_million_tokens}, simulations.token_cost;
solve_time_p95_s, wall_s), `DIR/report.png`, `DIR/run.json` (inputs, notes, and per
policy and model the requests served, unserved and within the SLO, early and late; for a
deferrable model also `deadline_missed` and `waiting_at_end`) and one state database per
policy (`DIR/state-<policy>.db`).

A sweep file lists scenarios, inline or by file, and optionally the policies::

    policies = ["capsched", "spothedge"]
    [[scenarios]]
    name = "double-interruptions"
    market = { interruption_multiplier = 2.0 }
    [[scenarios]]
    file = "what-if.toml"        # relative to the sweep file

Every (scenario, policy) pair runs in a local process pool of `--workers` processes, or
with `--executor ray` as one Ray task each (`simulations/ray_executor.py`: the cluster at
`--ray-address` or RAY_ADDRESS, else a local one of `--workers` CPUs; needs the extra
`capsched[ray]`). Either way the results are the same and land, written by this process,
in `DIR/<scenario>/` and `DIR/sweep.json`.

Exit codes: 0 success, 1 runtime failure, 2 bad input (one line per problem).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import logging
import multiprocessing
import re
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from adapters.sim import SpotTraceError
from scheduler.config import ConfigError
from scheduler.errors import problem_lines
from simulations import commitment_sweep, ray_executor
from simulations.engine import RunResult, World, run_policy
from simulations.report import (
    STATIC_PEAK,
    breakdown_tables,
    plot,
    summaries,
    table,
    write_summary,
)
from simulations.roster import policy_names
from simulations.scenario import Scenario, ScenarioError, load_scenario
from simulations.traces import FORMATS, TraceFormatError
from simulations.world import SweepTask, WorldSpec, build_world

log = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `capsched simulate`."""
    parser.add_argument("--config", type=Path, help="config TOML (default: the embedded one)")
    parser.add_argument("--trace", type=Path, help="request trace (default: bundled Azure slice)")
    parser.add_argument(
        "--trace-format",
        default="auto",
        choices=("auto", *FORMATS),
        help="trace format (default: detected from the header)",
    )
    parser.add_argument("--scenario", type=Path, help="scenario TOML (default: embedded one)")
    parser.add_argument(
        "--policy",
        default="all",
        help="comma-separated policies to compare (default: all registered)",
    )
    parser.add_argument(
        "--fleet-gpus", type=float, help="scale the trace so its peak needs about N GPUs"
    )
    parser.add_argument("--seed", type=int, help="seed of the run (default: scenario or config)")
    parser.add_argument("--out", type=Path, default=Path("simulate-out"), help="output folder")
    parser.add_argument("--sweep", type=Path, help="SWEEP.toml: many scenarios in parallel")
    parser.add_argument(
        "--workers", type=int, default=2, help="processes (or local Ray CPUs) for a sweep"
    )
    parser.add_argument(
        "--executor",
        default="local",
        choices=("local", "ray"),
        help="where a sweep runs: local process pool, or Ray (extra capsched[ray])",
    )
    parser.add_argument(
        "--ray-address",
        help="Ray cluster for --executor ray (default: RAY_ADDRESS, else a local one)",
    )
    parser.add_argument(
        "--ray-runtime-env",
        metavar="JSON",
        help='Ray runtime_env of the sweep\'s tasks, e.g. \'{"working_dir": "."}\'',
    )
    parser.add_argument(
        "--commitment-sweep",
        metavar="POOL:COUNTS",
        help=(
            "which commitment to buy: replay once per committed count of the on-demand pool"
            " CLOUD/REGION-OR-ZONE/TYPE, e.g. aws/us-east-1/g6e.xlarge:0,2,4,8 (0 = none), or"
            " auto:COUNTS (the pool with a reserved price where a first replay ran the most"
            " on-demand node-hours), or per USD/h of a savings plan in a region, of one"
            " instance family or every one (*): savings:aws/us-east-2/g6e:0,2.5,5, or"
            " savings:auto:AMOUNTS (every family in that busiest pool's region);"
            " --policy defaults to capsched here; writes commitment_sweep.json and .png"
        ),
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _fail(problems: Sequence[str]) -> int:
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _policies(arg: str) -> list[str]:
    known = policy_names()
    if arg == "all":
        return known
    names = [p.strip() for p in arg.split(",") if p.strip()]
    unknown = [p for p in names if p not in known]
    if unknown:
        raise ValueError(f"--policy: unknown {', '.join(unknown)}; known: {', '.join(known)}")
    return names


def _with_reference(names: list[str]) -> list[str]:
    """static-peak is the cost reference of summary.json: run it too when it exists."""
    if STATIC_PEAK in names or STATIC_PEAK not in policy_names():
        return names
    return [*names, STATIC_PEAK]


def _out_problem(out: Path) -> str | None:
    """Why `--out` cannot be (or become) the output folder, or None when it can."""
    for path in (out, *out.parents):
        if path.exists():
            if path.is_dir():
                return None
            if path == out:
                return f"--out {out}: exists and is not a folder"
            return f"--out {out}: {path} is a file, not a folder"
    return None


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _bad_input(exc: Exception) -> list[str]:
    if isinstance(exc, ConfigError):  # ScenarioError is one too
        return exc.problems
    return [str(exc)]


BAD_INPUT = (ConfigError, TraceFormatError, SpotTraceError, ValueError, KeyError)


def run(args: argparse.Namespace) -> int:
    """Entry point of `capsched simulate`."""
    if args.sweep is None and args.executor != "local":
        return _fail([f"--executor {args.executor} runs sweeps only: add --sweep SWEEP.toml"])
    for option in ("ray_address", "ray_runtime_env"):
        if getattr(args, option) is not None and args.executor != "ray":
            return _fail([f"--{option.replace('_', '-')} needs --executor ray"])
    if args.commitment_sweep is not None and args.sweep is not None:
        return _fail(["--commitment-sweep and --sweep do not go together"])
    try:
        names = _with_reference(_policies(args.policy))
        if args.commitment_sweep is not None:  # no cost reference needed: counts compare
            names = ["capsched"] if args.policy == "all" else _policies(args.policy)
    except ValueError as exc:
        return _fail([str(exc)])
    problem = _out_problem(args.out)
    if problem is not None:
        return _fail([problem])
    if args.sweep is not None:
        return _run_sweep(args, names)
    spec = WorldSpec(
        config_path=args.config,
        trace_path=args.trace,
        trace_format=args.trace_format,
        scenario_path=args.scenario,
        fleet_gpus=args.fleet_gpus,
        seed=args.seed,
    )
    try:
        world, notes = build_world(spec)
    except BAD_INPUT as exc:
        return _fail(_bad_input(exc))
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # no permission, read-only file system
        return _fail([f"--out {out}: cannot create the folder: {exc.strerror or exc}"])
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if args.commitment_sweep is not None:
        return _run_commitment_sweep(args, world, names, spec)
    results: list[RunResult] = []
    bar = _progress(world.info.n_steps * len(names), args.no_progress)
    try:
        for name in names:
            if bar is not None:
                bar.set_description(name)
            results.append(run_policy(world, name, out / f"state-{_safe(name)}.db", _advance(bar)))
    finally:
        if bar is not None:
            bar.close()
    _write(out, results, spec, notes, world.info.seed)
    policies = summaries(results)
    print(table(policies))
    _print_breakdowns(policies)
    _print_launch_holds(results)
    print(f"wrote {out / 'summary.json'} and {out / 'report.png'}")
    return 0


def _run_commitment_sweep(
    args: argparse.Namespace, world: World, names: list[str], spec: WorldSpec
) -> int:
    """`--commitment-sweep`: one replay per (count, policy), the cost curve and the
    cheapest count (simulations.commitment_sweep)."""
    out: Path = args.out
    done: dict[tuple[float, str], RunResult] = {}
    try:
        parsed = commitment_sweep.parse_spec(args.commitment_sweep, world.config, world.catalog)
        if isinstance(parsed, commitment_sweep.AutoSweep):  # the busiest pool of a replay
            bar = _progress(world.info.n_steps, args.no_progress)
            try:
                first = run_policy(world, names[0], out / "state-auto.db", _advance(bar))
            finally:
                if bar is not None:
                    bar.close()
            busiest = commitment_sweep.busiest_pool(first, world.config, world.catalog)
            if busiest is None:
                return _fail(
                    [
                        f"--commitment-sweep auto: {names[0]} ran no on-demand node in a pool"
                        " with a commitment price (the catalog's reserved prices, or a"
                        " [[commitments]] entry of the config); name the pool"
                    ]
                )
            print(f"auto: {names[0]} ran the most on-demand node-hours in {busiest}")
            parsed = commitment_sweep.auto_spec(parsed, busiest, world.config, world.catalog)
            if commitment_sweep.unchanged(world, parsed):  # the first replay is count 0
                done[0, names[0]] = first
        sweep_spec = parsed
    except commitment_sweep.SweepSpecError as exc:
        return _fail([str(exc)])
    runs = len(sweep_spec.levels) * len(names) - len(done)
    bar = _progress(world.info.n_steps * runs, args.no_progress)
    try:
        rows = commitment_sweep.sweep(
            world,
            sweep_spec,
            names,
            out,
            workers=args.workers,
            progress=_advance(bar),
            done=done,
        )
    finally:
        if bar is not None:
            bar.close()
    trace = "/".join(Path(str(spec.trace_path or "default trace")).parts[-2:])
    title = f"{trace}: {sweep_spec.pool}"
    commitment_sweep.write_outputs(out, rows, sweep_spec, title)
    print(commitment_sweep.table(rows, sweep_spec))
    for policy, row in commitment_sweep.chosen(rows).items():
        none = next((r for r in rows if r.policy == policy and r.level == 0), None)
        vs = f", {row.cost_usd / none.cost_usd:.3f}x no commitment" if none else ""
        what = sweep_spec.level_text(row.level)
        if sweep_spec.section.is_spend:
            what += " USD/h"
        print(f"chosen: {policy} buys {what} of {sweep_spec.pool} ({row.cost_usd:.2f} USD{vs})")
    print(f"wrote {out / 'commitment_sweep.json'} and {out / 'commitment_sweep.png'}")
    return 0


def _print_breakdowns(policies: Mapping[str, Mapping[str, Any]]) -> None:
    """USD per million tokens per GPU kind and per model, after the main table."""
    tables = breakdown_tables(policies)
    if tables:
        print(f"\n{tables}\n")


def _print_launch_holds(results: Sequence[RunResult]) -> None:
    """Say where the budget or a quota held launches back: a binding limit is never silent."""
    for r in results:
        for line in r.launch_hold_notes():
            print(f"held: {line}")


def _progress(total: int, disabled: bool, unit: str = "step") -> Any:
    if disabled:
        return None
    from tqdm import tqdm

    # disable=None: no bar when stderr is not a terminal (CI logs, pipes).
    return tqdm(total=total, unit=unit, file=sys.stderr, disable=None, leave=False)


def _advance(bar: Any) -> Callable[[int], None] | None:
    if bar is None:
        return None
    update: Callable[[int], None] = bar.update
    return update


def _write(
    out: Path, results: list[RunResult], spec: WorldSpec, notes: list[str], seed: int
) -> None:
    write_summary(out, results, {})
    run_info = {
        "config": str(spec.config_path) if spec.config_path else "embedded default",
        "trace": str(spec.trace_path) if spec.trace_path else "bundled Azure LLM 2023 slice",
        "trace_format": spec.trace_format,
        "scenario": str(spec.scenario_path) if spec.scenario_path else "embedded default",
        "fleet_gpus": spec.fleet_gpus,
        "seed": seed,
        "notes": notes,
        "state_db": {r.policy: r.state_db for r in results},
        "ticks": {r.policy: r.ticks for r in results},
        "tick_errors": {r.policy: r.tick_errors for r in results},
        "failed_launches": {r.policy: r.failed_launches for r in results},
        # Requests per model, with unserved and SLO-missed ones in the first boot time +
        # tick after the trace start apart from the rest (RunResult.per_model).
        "per_model": {r.policy: r.per_model() for r in results},
    }
    (out / "run.json").write_text(json.dumps(run_info, indent=2) + "\n", encoding="utf-8")
    plot(out / "report.png", results, title=Path(str(spec.trace_path or "default trace")).name)


# --------------------------------------------------------------------------- sweeps


def load_sweep(path: Path) -> tuple[list[Scenario], list[str] | None]:
    """Scenarios and (optional) policies of a sweep file; ScenarioError names the key."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(path, [f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(path, [f"{path}: not valid TOML: {exc}"]) from None
    problems: list[str] = []
    unknown = set(raw) - {"policies", "scenarios"}
    if unknown:
        problems.append(f"{path}: unknown keys {sorted(unknown)}")
    policies = raw.get("policies")
    if policies is not None and (
        not isinstance(policies, list) or not all(isinstance(p, str) for p in policies)
    ):
        problems.append(f"{path}: policies: expected a list of policy names")
    entries = raw.get("scenarios")
    if not isinstance(entries, list) or not entries:
        problems.append(f"{path}: scenarios: expected at least one [[scenarios]] table")
        entries = []
    scenarios: list[Scenario] = []
    for i, entry in enumerate(entries):
        entry = dict(entry)
        file = entry.pop("file", None)
        try:
            if file is not None:
                base, _ = load_scenario(path.parent / str(file))
                scenario = base.model_copy(update={"name": entry.get("name", base.name)})
                if set(entry) - {"name"}:
                    problems.append(f"{path}: scenarios[{i}]: use either file or inline keys")
            else:
                scenario = Scenario.model_validate(entry)
        except ScenarioError as exc:
            problems.extend(exc.problems)
            continue
        except ValidationError as exc:
            where = ("scenarios", i)
            problems.extend(problem_lines(exc, path, Scenario, syntax="toml", prefix=where))
            continue
        scenarios.append(scenario)
    names = [s.name for s in scenarios]
    for name in {n for n in names if names.count(n) > 1}:
        problems.append(f"{path}: scenarios: duplicate name {name!r}")
    if problems:
        raise ScenarioError(path, problems)
    return scenarios, policies


def _sweep_task(spec: WorldSpec, policy: str, db: Path) -> RunResult:
    world, _ = build_world(spec)
    return run_policy(world, policy, db)


def _run_local(
    specs: Mapping[str, WorldSpec],
    tasks: Sequence[SweepTask],
    on_done: Callable[[SweepTask, RunResult], None],
    workers: int,
) -> None:
    """Every task in a local process pool; each worker builds its world from the spec."""
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding solver threads
    with cf.ProcessPoolExecutor(max_workers=max(1, workers), mp_context=ctx) as pool:
        futures = {
            pool.submit(_sweep_task, specs[t.scenario], t.policy, t.state_db): t for t in tasks
        }
        for fut in cf.as_completed(futures):
            on_done(futures[fut], fut.result())


def _run_sweep(args: argparse.Namespace, names: list[str]) -> int:
    address = ray_executor.cluster_address(args.ray_address)
    runtime_env: dict[str, Any] | None = None
    if args.executor == "ray":
        try:
            if args.ray_runtime_env is not None:
                runtime_env = ray_executor.parse_runtime_env(args.ray_runtime_env)
            ray_executor.import_ray(address)  # before any work: a missing extra fails fast
        except (ray_executor.RayUnavailable, ValueError) as exc:
            return _fail([str(exc)])
    try:
        scenarios, policies = load_sweep(args.sweep)
        if policies is not None:
            names = _with_reference(_policies(",".join(policies)))
        specs = {
            s.name: WorldSpec(
                config_path=args.config,
                trace_path=args.trace,
                trace_format=args.trace_format,
                scenario_path=args.sweep,
                scenario=s,
                fleet_gpus=args.fleet_gpus,
                seed=args.seed,
            )
            for s in scenarios
        }
        built = {name: build_world(spec) for name, spec in specs.items()}  # fail fast
    except BAD_INPUT as exc:
        return _fail(_bad_input(exc))
    out: Path = args.out
    results: dict[str, dict[str, RunResult]] = {s: {} for s in specs}
    tasks: list[SweepTask] = []
    for sname in specs:
        (out / _safe(sname)).mkdir(parents=True, exist_ok=True)
        for policy in names:
            db = out / _safe(sname) / f"state-{_safe(policy)}.db"
            tasks.append(SweepTask(sname, policy, db))
    bar = _progress(len(tasks), args.no_progress, unit="run")  # one per finished replay

    def done(task: SweepTask, result: RunResult) -> None:
        results[task.scenario][task.policy] = result
        if bar is not None:
            bar.update(1)

    try:
        if args.executor == "ray":
            worlds = {name: world for name, (world, _) in built.items()}
            ray_executor.run_sweep(
                worlds,
                tasks,
                done,
                address=address,
                num_cpus=args.workers,
                runtime_env=runtime_env,
            )
        else:
            _run_local(specs, tasks, done, args.workers)
    except ray_executor.ClusterUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
    doc: dict[str, Any] = {"scenarios": {}}
    for sname, spec in specs.items():
        ordered = [results[sname][p] for p in names]
        folder = out / _safe(sname)
        world, notes = built[sname]
        _write(folder, ordered, replace(spec, scenario=None), notes, world.info.seed)
        doc["scenarios"][sname] = {"policies": summaries(ordered)}
        print(f"\nscenario {sname}")
        print(table(doc["scenarios"][sname]["policies"]))
        _print_breakdowns(doc["scenarios"][sname]["policies"])
        _print_launch_holds(ordered)
    (out / "sweep.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out / 'sweep.json'}")
    return 0
