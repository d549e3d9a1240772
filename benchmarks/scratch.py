"""A fresh state database per benchmark run: `scratch_db("simulate")` is a file in a new
temporary directory, removed when the process exits.

Until December 7 2026 each benchmark's `--db` defaulted to one fixed file in /tmp, so two
runs at once (two benchmarks, or one benchmark against an older checkout) replayed into the
same SQLite file and one of them failed with "disk I/O error" halfway through. `--db` still
names a file to keep for inspection.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path


def scratch_db(name: str) -> Path:
    """A state database path of its own for this process, named after the benchmark."""
    directory = Path(tempfile.mkdtemp(prefix=f"capsched-{name}-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory / "state.db"
