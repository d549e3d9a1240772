"""`capsched tui` arguments and entry point, kept apart from the app so that building
the `capsched` parser (every subcommand, the daemon's included) does not import Textual."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `capsched tui`."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--url", default="http://127.0.0.1:9464", help="control API (default: %(default)s)"
    )
    where.add_argument("--socket", type=Path, help="control API on a Unix socket")
    where.add_argument(
        "--db", type=Path, help="browse a state database read-only instead of a daemon"
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        help="bearer token for actions (default: ./capsched.token if it exists)",
    )
    parser.add_argument(
        "--refresh-s", type=float, default=2.0, help="seconds between refreshes (%(default)s)"
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of `capsched tui`."""
    from tui.app import run as run_app

    return run_app(args)
