"""One daemon per state database: an exclusive lock beside the database file.

Two daemons on one database both act, and each marks the other's nodes gone (issue 15).
`capsched daemon` takes `fcntl.flock(LOCK_EX)` on `<state_db>.lock` before it opens the
store and holds it for the life of the process; the kernel drops it when the process
ends, however it ends (`kill -9` included), so a stale lock file never blocks a restart.
The holder writes its pid into the file so the refused one can name it. Readers (`tui
--db`, `capsched backup`) do not take the lock: SQLite's WAL lets them read beside the
daemon.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class StateLockHeld(Exception):
    """Another process holds the state database's lock."""

    def __init__(self, lock_path: Path, holder_pid: int | None) -> None:
        self.lock_path = lock_path  # the lock file
        self.holder_pid = holder_pid  # pid written by the holder; None if unreadable
        pid = str(holder_pid) if holder_pid is not None else "unknown"
        super().__init__(f"locked by another capsched daemon (pid {pid}, lock file {lock_path})")


def lock_path_for(state_db: str | Path) -> Path:
    """The lock file of a state database: `<state_db>.lock`."""
    return Path(f"{state_db}.lock")


class StateLock:
    """The held lock; `release` (or the end of the process) lets the next daemon in."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path  # the lock file
        self._fd = fd  # open while the lock is held

    @classmethod
    def acquire(cls, state_db: str | Path) -> StateLock:
        """Take the lock of `state_db` without waiting; raises `StateLockHeld` when another
        process has it, `OSError` when the lock file cannot be opened."""
        path = lock_path_for(state_db)
        # No O_TRUNC: the holder's pid stays readable for the one refused.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise StateLockHeld(path, holder) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Drop the lock (the file stays: removing it would race with a starting daemon)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None
