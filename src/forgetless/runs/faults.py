"""The run store's write points, where the crash tests inject faults.

In the spirit of SQLite's crash tests, every place the store changes something on disk calls
:func:`point` with a name saying where it is ("resume checkpoint: written, not renamed").
Normally that costs one attribute check. A test arms it, in this process with :func:`arm` or
in a child process with the environment variable ``FORGETLESS_FAULT=N[:MODE]``, so that the
``N``-th point reached (counting from 1) does ``MODE``:

- ``kill``: SIGKILL this process, as ``kill -9`` would: no ``finally``, no flush, no cleanup;
- ``parent``: SIGKILL the parent process first (a sweep's main process), then this one;
- ``raise``: raise :class:`FaultInjected` (a ``BaseException``, which no handler of the store
  catches), for tests that stay in one process;
- ``interrupt``: raise ``KeyboardInterrupt``, as Ctrl-C would there.

``FORGETLESS_FAULT_LOG=FILE`` appends each point's name to ``FILE`` as it is reached, so a
test can list the points of an uninterrupted run and then kill at each one in turn. Nothing
else in the package reads these variables; they exist for the tests alone.
"""

from __future__ import annotations

import os
import signal

ENV = "FORGETLESS_FAULT"
LOG_ENV = "FORGETLESS_FAULT_LOG"
MODES = ("kill", "parent", "raise", "interrupt")


class FaultInjected(BaseException):
    """Raised at an armed write point in ``raise`` mode (a simulated crash)."""


class _Plan:
    def __init__(self) -> None:
        self.target: int | None = None
        self.mode = "kill"
        self.reached = 0
        self.log: str | None = None

    @property
    def active(self) -> bool:
        return self.target is not None or self.log is not None


_plan = _Plan()


def arm(target: int | None, mode: str = "kill", log: str | None = None) -> None:
    """Make the ``target``-th write point from now do ``mode`` (``None``: disarm); ``log``:
    a file each point's name is appended to."""
    if mode not in MODES:
        raise ValueError(f"fault mode must be one of {MODES}, got {mode!r}")
    _plan.target, _plan.mode, _plan.reached, _plan.log = target, mode, 0, log


def arm_from_environment() -> None:
    """Arm (or disarm) the plan exactly as ``FORGETLESS_FAULT``/``FORGETLESS_FAULT_LOG`` say now.

    Run at import, and by every sweep worker as it starts: a forked worker has its parent's
    modules, so the import-time reading is the parent's, taken before a test set the
    variables; reading them again gives a forked worker the plan a spawned one gets."""
    spec = os.environ.get(ENV)
    log = os.environ.get(LOG_ENV)
    if not spec and not log:
        arm(None)
        return
    target, mode = None, "kill"
    if spec:
        number, _, mode = spec.partition(":")
        target, mode = int(number), mode or "kill"
    arm(target, mode, log)


def point(name: str) -> None:
    """A write point: a no-op unless a fault plan is armed (see the module docstring)."""
    if not _plan.active:
        return
    _plan.reached += 1
    if _plan.log is not None:
        with open(_plan.log, "a") as f:
            f.write(name + "\n")
    if _plan.reached != _plan.target:
        return
    if _plan.mode == "raise":
        raise FaultInjected(f"fault injected at write point {_plan.reached}: {name}")
    if _plan.mode == "interrupt":
        raise KeyboardInterrupt
    if _plan.mode == "parent":
        os.kill(os.getppid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


arm_from_environment()
