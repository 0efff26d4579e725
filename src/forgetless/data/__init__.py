"""Sources: where arrays come from. Knows nothing of tasks.

- :func:`load` by name: ``"digits"`` (bundled with scikit-learn, offline), ``"mnist"``,
  ``"fashion-mnist"``, ``"kmnist"`` (IDX files found locally or fetched once).
- :func:`from_arrays`, :func:`from_dataset`: the user's own data.
- :func:`two_task_binary`: a synthetic pair of competing tasks.
- :mod:`forgetless.data.text`: text domains from files, folders or strings, tokenised into
  token streams; :mod:`forgetless.data.shakespeare`: Shakespeare's works as four domains.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from forgetless.data.arrays import ArraySet, SourceData
from forgetless.data.digits import load_digits
from forgetless.data.synthetic import two_task_binary
from forgetless.data.user import from_arrays, from_dataset
from forgetless.errors import ConfigError

#: Names :func:`load` accepts.
SOURCE_NAMES = ("digits", "mnist", "fashion-mnist", "kmnist")

__all__ = [
    "SOURCE_NAMES",
    "ArraySet",
    "SourceData",
    "cache_dir",
    "fetch",
    "from_arrays",
    "from_dataset",
    "load",
    "load_digits",
    "locate",
    "source_status",
    "two_task_binary",
]


def load(name: str, data_dir: str | Path | None = None) -> SourceData:
    """Load a known data set by name.

    Args:
        name: one of :data:`SOURCE_NAMES`.
        data_dir: a folder holding IDX files (``DIR/<name>/`` or the four files directly);
            searched before ``$FORGETLESS_DATA``, the cache and ``/usr/share/datasets/<name>``.

    Raises:
        ConfigError: for an unknown name. DataError: when files are missing or corrupt; the
            message says where it looked and how to get them.
    """
    if name == "digits":
        return load_digits()
    if name in SOURCE_NAMES:
        from forgetless.data.catalog import load_idx_source

        return load_idx_source(name, data_dir)
    hint = difflib.get_close_matches(name, SOURCE_NAMES, n=1)
    suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
    raise ConfigError(f"unknown data set {name!r}{suggestion}; known: {', '.join(SOURCE_NAMES)}")


def __getattr__(attr: str) -> Any:
    # The IDX catalogue imports pooch; keep it out of the import path of offline runs.
    if attr in ("locate", "source_status", "cache_dir"):
        from forgetless.data import catalog

        return getattr(catalog, attr)
    if attr == "fetch":
        from forgetless.data.fetch import fetch

        return fetch
    raise AttributeError(f"module 'forgetless.data' has no attribute {attr!r}")
