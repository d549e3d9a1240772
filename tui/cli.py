"""`capsched tui` arguments and entry point, kept apart from the app so that building
the `capsched` parser (every subcommand, the daemon's included) does not import Textual."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_NO_TERMINAL = 2


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
    # Without a terminal on both ends Textual has no keys to read and nowhere to draw,
    # and its input loop spins a core until killed: refuse at once instead.
    ends = (("stdin", sys.stdin), ("stdout", sys.stdout))
    not_tty = [name for name, f in ends if f is None or not f.isatty()]
    if not_tty:
        print(
            f"error: capsched tui needs a terminal ({' and '.join(not_tty)} not a tty); "
            "run it in an interactive terminal, or read the daemon with `curl` and the "
            "control API (docs/api.md)",
            file=sys.stderr,
        )
        return EXIT_NO_TERMINAL
    from tui.app import run as run_app

    return run_app(args)
