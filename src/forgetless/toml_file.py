"""Reading TOML files (run configs, sweeps) with errors that name the file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# The standard library reads TOML from Python 3.11; on 3.10, tomli (the same parser, a
# dependency there) does.
if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from forgetless.errors import ConfigError
from forgetless.json_file import check_depth


def read_toml(path: str | Path, what: str = "file") -> dict[str, Any]:
    """The parsed contents of ``path``; a missing, unreadable, malformed or absurdly nested
    file is a :class:`ConfigError` that says which ``what`` it was."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no {what} {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"the {what} {path} is a folder, not a TOML file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: not UTF-8 text ({err.reason})") from None
    except OSError as err:
        raise ConfigError(f"cannot read the {what} {path}: {err.strerror or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None
    except RecursionError:
        raise ConfigError(f"{path}: TOML nested too deep to read") from None
    check_depth(data, path)
    return data
