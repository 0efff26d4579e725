"""Reading JSON (results, run configs, checkpoint metadata) as untrusted data: errors name the
file, nesting depth is bounded, and the result is plain data only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from forgetless.errors import ConfigError

#: The deepest nesting of arrays and objects accepted. A result nests four levels, a checkpoint's
#: skeleton about twenty; Python's own recursion limit would otherwise fail with a traceback.
MAX_DEPTH = 100


def loads_json(text: str | bytes, source: str | Path, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value in ``text``; a ConfigError naming ``source`` if it is not valid JSON or is
    nested deeper than ``max_depth``."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ConfigError(
            f"{source}: JSON nested too deep to read (more than {max_depth} levels): the file "
            "is corrupt or was crafted"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(
            f"{source} is not valid JSON ({err}): the file is truncated or corrupt"
        ) from None
    check_depth(value, source, max_depth)
    return value


def read_json(path: str | Path, what: str = "file", max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value in the file ``path``; a missing, unreadable or malformed file is a
    ConfigError that names it (and says it is the ``what``)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"no {what} at {path}") from None
    except OSError as err:
        raise ConfigError(f"cannot read the {what} {path}: {err.strerror or err}") from None
    return loads_json(data, path, max_depth)


def check_depth(value: Any, source: str | Path, max_depth: int = MAX_DEPTH) -> None:
    """Raise a ConfigError if ``value`` nests lists and dicts more than ``max_depth`` deep
    (walked without recursion, so any depth is measured safely)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            raise ConfigError(
                f"{source}: JSON nested more than {max_depth} levels deep: the file is corrupt "
                "or was crafted"
            )
        stack.extend((child, depth + 1) for child in children)
