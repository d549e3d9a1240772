"""The `capsched` command line.

Exit codes: 0 success, 1 runtime failure, 2 bad input (config, demand, fleet).
Bad input prints one line per problem naming the file and the key, no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from scheduler.config import DEFAULT_CONFIG_PATH, ConfigError, load_config

EXIT_BAD_INPUT = 2
# `capsched plan` without --demand: an example load for the embedded config's models
# and regions, shipped in the package next to that config.
DEFAULT_DEMAND_PATH = DEFAULT_CONFIG_PATH.with_name("default_demand.json")

log = logging.getLogger("capsched")


def _setup_logging(verbose: bool, service: bool) -> None:
    # A service logs its decisions (journald keeps them); one-shot commands stay quiet.
    logging.basicConfig(
        level=logging.DEBUG if verbose else (logging.INFO if service else logging.WARNING),
        format="level=%(levelname)s logger=%(name)s %(message)s",
        stream=sys.stderr,
    )


def _fail(problems: Sequence[str]) -> int:
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    return EXIT_BAD_INPUT


def cmd_validate_config(args: argparse.Namespace) -> int:
    """Check a config file, including names it takes from the catalog and profiles."""
    from scheduler.catalog import load_catalog
    from scheduler.config_check import check_config
    from scheduler.profiles import load_profiles

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
    from scheduler.catalog import load_catalog
    from scheduler.config_check import check_config
    from scheduler.inputs import InputError, read_demand, read_fleet
    from scheduler.plan_view import demand_table, plan_json, plan_table
    from scheduler.planner import PlanningError, make_plan
    from scheduler.profiles import load_profiles

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _fail(exc.problems)
    catalog, profiles = load_catalog(), load_profiles()
    problems = check_config(config, catalog, profiles)
    if problems:
        return _fail([f"{args.config or 'default config'}: {p}" for p in problems])
    try:
        demand = read_demand(args.demand or DEFAULT_DEMAND_PATH)
        fleet = read_fleet(args.fleet) if args.fleet else []
        plan = make_plan(config, catalog, profiles, demand, fleet)
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
    from scheduler.service import main as run

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _fail(exc.problems)
    return run(config, args.config)


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
    p.set_defaults(func=cmd_daemon)

    for name, module in _LAZY_COMMANDS.items():
        p = sub.add_parser(name, help=module[1])
        _attach(p, module[0])
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
    _setup_logging(args.verbose, service=args.command == "daemon")
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
