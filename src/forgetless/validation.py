"""Checks for parameters: each returns the value, converted, or raises a ConfigError that names
the parameter and the range it must lie in. One place, so every strategy words it alike."""

from __future__ import annotations

import numbers

from forgetless.errors import ConfigError


def check_range(
    name: str,
    value: float,
    low: float,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a float if it lies in the interval, else a ConfigError naming ``name``."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    too_low = value <= low if low_open else value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high or value != value:  # value != value: NaN
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        upper = "inf" if high is None else f"{high:g}"
        raise ConfigError(
            f"{name} must be in {left}{low:g}, {upper}{right if high is not None else ')'}, got {value:g}"
        )
    return value


def check_positive_int(name: str, value: object) -> int:
    """``value`` as an int if it is a positive integer, else a ConfigError naming ``name``.

    Integral strings are accepted, since command-line values arrive as text.
    """
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer (>= 1), got {value!r}")
    return value


def check_samples(name: str, value: object) -> int | None:
    """``value`` as ``None`` or a positive int, else a ConfigError naming ``name``.

    Numeric strings are accepted: the strategy registry passes CLI values of ``int | None``
    parameters through as strings.
    """
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not is_positive_int(value):
        raise ConfigError(
            f"{name} must be None (all of the task's examples) or an integer in [1, inf), "
            f"got {value!r}"
        )
    return int(value)


def is_positive_int(value: object) -> bool:
    """Whether ``value`` is an integer (not a bool) of at least 1."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= 1
