"""Which forgetless made a number: its version and, in a git checkout, the commit.

Every result (``Result.environment``) and every benchmark's JSON records
:func:`provenance`, so a figure can be traced to the code that produced it. Reading the
commit never fails: outside a checkout, without git, or from an installed copy it is
``"unknown"``. Import-light (no torch), so benchmarks and the CLI's parser may use it.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

#: What ``git_commit`` says where no commit can be read.
UNKNOWN = "unknown"


def provenance() -> dict[str, str]:
    """``{"forgetless": version, "git_commit": sha}``, the commit with ``+dirty`` when tracked
    files differ from it (``"unknown"`` outside a git checkout of forgetless)."""
    from forgetless import __version__

    return {"forgetless": __version__, "git_commit": git_commit()}


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the checkout this package is imported from, read once per process.

    Only a checkout of forgetless itself counts: a copy installed into another project's
    repository (a virtual environment inside it) reports ``"unknown"``, not that project's
    commit."""
    package = Path(__file__).resolve().parent
    try:
        top = _git(package, "rev-parse", "--show-toplevel")
        if top is None or (Path(top) / "src" / "forgetless").resolve() != package:
            return UNKNOWN
        commit = _git(package, "rev-parse", "HEAD")
        if commit is None:
            return UNKNOWN
        dirty = _git(package, "status", "--porcelain", "--untracked-files=no")
    except OSError:  # no git on this machine
        return UNKNOWN
    return commit + ("+dirty" if dirty else "")


def _git(folder: Path, *args: str) -> str | None:
    """The output of ``git args`` in ``folder``, stripped; None when git fails."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=folder, capture_output=True, text=True, timeout=10, check=False
        )
    except subprocess.TimeoutExpired:
        return None
    return done.stdout.strip() if done.returncode == 0 else None
