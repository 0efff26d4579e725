"""Reading TOML files (run configs, sweeps) with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomllib

from forgetless.errors import ConfigError


def read_toml(path: str | Path, what: str = "file") -> dict[str, Any]:
    """The parsed contents of ``path``; a missing or malformed file is a :class:`ConfigError`
    that says which ``what`` it was."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no {what} {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None
