"""``forgetless reproduce``: published protocols as data, run through the run store.

:data:`CATALOGUE` holds the entries (:class:`Entry`: the runs, the published figures, our
tolerance, the expected minutes, a pure function from the Results to our figures);
:func:`~forgetless.reproduce.runner.reproduce` runs one through the sweep runner and compares.
Importing this package, and listing the catalogue, imports no torch.
"""

from forgetless.reproduce.catalogue import CATALOGUE
from forgetless.reproduce.entry import (
    Entry,
    Measure,
    Published,
    Run,
    Tolerance,
    compare,
    over_seeds,
)

__all__ = [
    "CATALOGUE",
    "Entry",
    "Measure",
    "Published",
    "Run",
    "Tolerance",
    "compare",
    "find_entry",
    "over_seeds",
]


def find_entry(name: str, catalogue: dict[str, Entry] | None = None) -> Entry:
    """The entry called ``name``; an unknown name is a ConfigError with a "did you mean"."""
    import difflib

    from forgetless.errors import ConfigError

    catalogue = CATALOGUE if catalogue is None else catalogue
    if name in catalogue:
        return catalogue[name]
    match = difflib.get_close_matches(name, list(catalogue), n=1, cutoff=0.5)
    hint = f"; did you mean {match[0]!r}?" if match else ""
    raise ConfigError(
        f"no reproduction called {name!r}{hint} (forgetless reproduce --list shows them all)"
    )
