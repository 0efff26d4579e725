"""The first thing a sweep's worker process runs: tie its life to its parent's.

A worker killed with its sweep must not live on: an orphan keeps hundreds of MB, and keeps
writing a run that the restarted sweep is about to continue. So before a worker runs anything
(a spawned worker: before it imports anything heavy; this module imports only the standard
library, and ``forgetless/__init__.py`` imports nothing heavy on its own; a forked one has its
parent's modules already), :func:`die_with_parent`:

- on Linux, asks the kernel to SIGKILL the worker when its parent dies
  (``prctl(PR_SET_PDEATHSIG)``);
- checks that the parent is still the one that started it: if the parent died before the
  signal was armed (``kill -9`` while the workers start), the worker has been re-parented
  and exits at once;
- elsewhere (and as a second guard), starts a thread that exits the worker within a second
  of its parent going away (``os.getppid()`` changes).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1
_POLL_SECONDS = 1.0


def die_with_parent(parent_pid: int) -> None:
    """Worker initialiser: exit when ``parent_pid`` (the sweep's process) is gone."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: libc's prctl
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass  # the polling thread below still guards
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), daemon=True, name="die-with-parent").start()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


def _watch(parent_pid: int) -> None:
    while True:
        time.sleep(_POLL_SECONDS)
        if os.getppid() != parent_pid:
            os._exit(1)
