"""A `capsched daemon` in a subprocess, for tests that kill or signal it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

TICK_LINE = "logger=scheduler.loop.reconciler tick now_s="


def start_daemon(
    config: Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    *,
    verbose: bool = False,
    args: Sequence[str] = (),
) -> subprocess.Popen[str]:
    """Start the daemon on `config` (plus `args`); its log lines (debug ones too when
    `verbose`) come on `stderr`."""
    flags = ["-v"] if verbose else []
    command = ["daemon", "--config", str(config), *args]
    return subprocess.Popen(
        [sys.executable, "-m", "capsched.cli", *flags, *command],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
    )


def wait_for_ticks(proc: subprocess.Popen[str], n: int) -> None:
    """Block until the daemon has logged `n` ticks (no sleeping, no polling)."""
    assert proc.stderr is not None
    seen = 0
    for line in proc.stderr:
        if TICK_LINE in line:
            seen += 1
            if seen >= n:
                return
    raise AssertionError(f"daemon exited with {proc.wait()} before {n} ticks")
