"""The `capsched` command line.

Exit codes: 0 success, 1 runtime failure, 2 bad input (config, demand, fleet).
Bad input prints one line per problem naming the file and the key, no traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from scheduler.config import DEFAULT_CONFIG_PATH, ConfigError, load_config
from scheduler.loop.logs import LOG_FORMATS, LogFormat, setup_logging

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command Ctrl-C ended
# `capsched plan` without --demand: an example load for the embedded config's models
# and regions, shipped in the package next to that config.
DEFAULT_DEMAND_PATH = DEFAULT_CONFIG_PATH.with_name("default_demand.json")

log = logging.getLogger("capsched")


def _setup_logging(verbose: bool, service: bool, log_format: LogFormat) -> None:
    # A service logs its decisions (journald keeps them); one-shot commands stay quiet.
    level = logging.DEBUG if verbose else (logging.INFO if service else logging.WARNING)
    setup_logging(level, log_format)


def _fail(problems: Sequence[str]) -> int:
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    return EXIT_BAD_INPUT


def cmd_validate_config(args: argparse.Namespace) -> int:
    """Check a config file, including names it takes from the catalog and profiles."""
    from scheduler.decide.config_check import check_config
    from scheduler.fleet.catalog import load_catalog
    from scheduler.fleet.profiles import load_profiles

    try:
        config = load_config(args.file)
    except ConfigError as exc:
        return _fail(exc.problems)
    problems = check_config(config, load_catalog(), load_profiles())
    if problems:
        return _fail([f"{args.file}: {p}" for p in problems])
    print(f"{args.file}: ok ({len(config.models)} models, {len(config.regions)} regions)")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Solve once and print the plan."""
    from capsched.inputs import InputError, merge_demand, read_demand, read_fleet
    from capsched.plan_view import demand_table, plan_json, plan_table
    from scheduler.decide.config_check import check_config
    from scheduler.decide.obtainability import Obtainability
    from scheduler.decide.planner import (
        PlanningError,
        check_demand,
        check_servable,
        make_plan,
        servable_rps,
    )
    from scheduler.fleet.catalog import load_catalog
    from scheduler.fleet.profiles import load_profiles
    from scheduler.loop.store import read_obtainability

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _fail(exc.problems)
    catalog, profiles = load_catalog(), load_profiles()
    problems = check_config(config, catalog, profiles)
    if problems:
        return _fail([f"{args.config or 'default config'}: {p}" for p in problems])
    try:
        entries = read_demand(args.demand or DEFAULT_DEMAND_PATH)
        fleet = read_fleet(args.fleet) if args.fleet else []
        # Names are checked as listed (errors say `demand[i]`), rates once summed per pair.
        check_demand(config, entries)
        merged = merge_demand(entries)
        demand = merged.demand
        check_servable(merged.demand, servable_rps(config, catalog, profiles))
        # What the daemon learned about pools (scheduler/decide/obtainability.py), if its state
        # database is there: weighed as the daemon weighs it, and listed in the notes.
        learned = Obtainability(read_obtainability(config.scheduler.state_db))
        now_s = time.time()
        catalog = dataclasses.replace(
            catalog, offerings=tuple(learned.apply(catalog.offerings, now_s))
        )
        plan = make_plan(config, catalog, profiles, merged.demand, fleet)
        plan = dataclasses.replace(plan, notes=(*plan.notes, *learned.notes(now_s)))
        note = merged.note(str(args.demand or "default demand"))
        if note is not None:
            plan = dataclasses.replace(plan, notes=(*plan.notes, note))
    except InputError as exc:
        return _fail(exc.problems)
    except PlanningError as exc:
        source = {"demand": args.demand or "default demand", "fleet": args.fleet}.get(
            exc.source, args.config or "default config"
        )
        return _fail([f"{source}: {exc}"])
    if args.json:
        print(json.dumps(plan_json(plan, demand), indent=2))
    else:
        source = str(args.demand) if args.demand else f"default: {DEFAULT_DEMAND_PATH}"
        print(demand_table(plan, demand, source))
        print()
        print(plan_table(plan, catalog))
    return 0


def cmd_daemon(args: argparse.Namespace) -> int:
    """Run the service until SIGTERM."""
    from capsched.service import main as run

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _fail(exc.problems)
    return run(config, args.config, adopt=args.adopt)


def cmd_backup(args: argparse.Namespace) -> int:
    """Copy the state database with SQLite's online backup API (safe while a daemon runs)."""
    from scheduler.loop.store import BackupError, backup_database

    if args.db is not None:
        source = args.db
    else:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            return _fail(exc.problems)
        if config.scheduler.state_db == ":memory:":
            return _fail([f"{args.config or 'default config'}: scheduler.state_db: in memory"])
        source = Path(config.scheduler.state_db)
    try:
        info = backup_database(source, args.to, overwrite=args.force)
    except BackupError as exc:
        return _fail([str(exc)])
    ids = f"; node ids after a restore start with {info.id_prefix}-" if info.id_prefix else ""
    print(f"{info.path}: backup of {source} ({info.size_bytes} bytes, {info.nodes} nodes{ids})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="capsched", description="Cost-aware capacity scheduler for LLM inference fleets."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate-config", help="check a config file; exit 2 on problems")
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_validate_config)

    p = sub.add_parser(
        "plan",
        help="solve the placement once and print the plan",
        description="Solve the placement once for a demand and a current fleet, and print "
        "the demand it planned for, then the plan.",
    )
    p.add_argument("--config", type=Path, help="config TOML (default: the embedded default)")
    p.add_argument(
        "--demand",
        type=Path,
        help='JSON {"demand": [{"model","region","rps"}]} (default: the example demand '
        "shipped with capsched for the embedded config's models and regions, "
        f"{DEFAULT_DEMAND_PATH}; it is not read from a running daemon)",
    )
    p.add_argument(
        "--fleet", type=Path, help='JSON {"nodes": [...]} of the current fleet (default: none)'
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser(
        "daemon", help="run the scheduler as a service (embedded default: simulated)"
    )
    p.add_argument("--config", type=Path, help="config TOML (default: the embedded default)")
    p.add_argument(
        "--adopt",
        action="store_true",
        help="on a new state database, take over running instances tagged as ours",
    )
    p.set_defaults(func=cmd_daemon)

    p = sub.add_parser(
        "backup", help="copy the state database (safe while the daemon runs); see docs/state.md"
    )
    p.add_argument("--to", type=Path, required=True, help="backup file to write")
    p.add_argument("--force", action="store_true", help="replace the backup file if it exists")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--config", type=Path, help="config naming scheduler.state_db")
    where.add_argument("--db", type=Path, help="the state database (instead of --config)")
    p.set_defaults(func=cmd_backup)

    for name, module in _LAZY_COMMANDS.items():
        p = sub.add_parser(name, help=module[1])
        _attach(p, module[0])
    for p in sub.choices.values():  # after the subcommand, where people type it
        p.add_argument(
            "--log-format",
            choices=LOG_FORMATS,
            default="auto",
            help="log lines: key=value with the time in front (timed), without it (plain,"
            " for journald, which adds its own), or JSON; auto: timed on a terminal",
        )
    return parser


# Subcommands implemented outside scheduler/ (in simulations/, which imports scheduler):
# the CLI is the one place that wires them in, by module name.
_LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "forecast-eval": (
        "simulations.forecast_eval",
        "replay a demand series through every forecasting method and score them",
    ),
    "tui": ("tui.cli", "watch and steer a running daemon, or browse a state database"),
    "simulate": (
        "simulations.simulate_cli",
        "replay a request trace through capsched and the baselines in virtual time",
    ),
}


def _attach(parser: argparse.ArgumentParser, module_name: str) -> None:
    import importlib

    module = importlib.import_module(module_name)
    add: Callable[[argparse.ArgumentParser], None] = module.add_arguments
    add(parser)
    parser.set_defaults(func=module.run)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `capsched` console script."""
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose, service=args.command == "daemon", log_format=args.log_format)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        # Ctrl-C ends a command at once, without a traceback. (The daemon stops cleanly
        # with exit 0 on SIGINT once it runs; this covers the seconds before that.)
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code


if __name__ == "__main__":
    sys.exit(main())
