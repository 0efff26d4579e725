"""One writer per run: a lock file in the run's folder.

The lock is an advisory ``flock`` on ``RUN/lock``, held for as long as a process trains the run.
The kernel releases it when the holder ends in any way (``kill -9`` included), so a lock left
by a dead process is taken over at once and safely: no stale-lock guessing, no race between
two processes deciding that the holder is gone. While held, the file names its holder (pid,
host, start time) for the message another process shows. Where ``fcntl`` does not exist
(Windows), an exclusive-create lock file is used instead, taken over when its holder's pid no
longer runs on this host.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from forgetless.errors import ForgetlessError
from forgetless.json_file import loads_json

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = "lock"


class RunBusy(ForgetlessError):
    """Another process is writing the run (``holder`` says which, when it could be read)."""

    def __init__(self, message: str, holder: dict[str, Any] | None):
        super().__init__(message)
        self.holder = holder


def describe_holder(holder: dict[str, Any] | None) -> str:
    """``pid 123 on host h since 2024-05-01 10:00:00`` (or what is known of it)."""
    if not holder:
        return "another process"
    since = holder.get("started")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) if since else ""
    return f"pid {holder.get('pid')} on host {holder.get('host')}{when}"


class RunLock:
    """The lock of the run folder ``folder`` (created if missing)."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, wait: bool = True, on_wait=None) -> None:
        """Take the lock. If another process holds it: with ``wait``, call ``on_wait(message)``
        once and block until it is free (Ctrl-C stops waiting); else raise :class:`RunBusy`."""
        if fcntl is None:
            self._acquire_exclusive_file(wait, on_wait)
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self.holder()
                message = (
                    f"run {self.path.parent.name} is being written by {describe_holder(holder)}"
                )
                if not wait:
                    raise RunBusy(message, holder) from None
                if on_wait is not None:
                    on_wait(f"{message}; waiting for it to finish (Ctrl-C to stop)")
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(_me()).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Let go of the lock (the file stays, empty)."""
        if fcntl is None:
            self.path.unlink(missing_ok=True)
            return
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            finally:
                os.close(self._fd)  # closing releases the flock
                self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock as its file says (``None`` if nobody, or it cannot be read)."""
        try:
            holder = loads_json(self.path.read_bytes() or b"null", self.path)
        except (OSError, ValueError):
            return None
        return holder if isinstance(holder, dict) else None

    def held_by_other(self) -> dict[str, Any] | None:
        """The holder if another process holds the lock now, else ``None`` (a test that takes
        and drops a shared lock, so it never waits)."""
        if not self.path.exists():
            return None
        if fcntl is None:
            holder = self.holder()
            return holder if holder and _alive(holder) else None
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return self.holder() or {}
        finally:
            os.close(fd)  # also drops the shared lock, if taken
        return None

    def _acquire_exclusive_file(self, wait: bool, on_wait) -> None:
        told = False
        while True:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self.holder()
                if holder is not None and not _alive(holder):
                    self.path.unlink(missing_ok=True)  # its holder is gone: take it over
                    continue
                message = (
                    f"run {self.path.parent.name} is being written by {describe_holder(holder)}"
                )
                if not wait:
                    raise RunBusy(message, holder) from None
                if on_wait is not None and not told:
                    on_wait(f"{message}; waiting for it to finish (Ctrl-C to stop)")
                    told = True
                time.sleep(1.0)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(_me(), f)
            return


def _me() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the holder may still run: always, if it is on another host (we cannot tell)."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder.get("pid", 0)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True
