"""Checks for parameters: each returns the value, converted, or raises a ConfigError that names
the parameter and the range it must lie in. One place, so every strategy words it alike."""

from __future__ import annotations

import math
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
    """``value`` as a float if it lies in the interval, else a ConfigError naming ``name``.

    The interval's ends are finite numbers (``high=None``: unbounded above), so NaN and
    infinities are always refused: ``lam = inf`` means nothing a run can compute with."""
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    too_low = value <= low if low_open else value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high or not math.isfinite(value):
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


def check_bool(name: str, value: object) -> bool:
    """``value`` if it is a bool, else a ConfigError naming ``name`` (``progress = "yes"`` in a
    TOML file is a string, and any non-empty string would read as true)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


def check_optional_positive_int(name: str, value: object) -> int | None:
    """``None``, or ``value`` as a positive int (see :func:`check_positive_int`)."""
    return None if value is None else check_positive_int(name, value)


def check_int_list(name: str, value: object, positive: bool = False) -> list[int] | None:
    """``None``, or ``value`` as a non-empty list of ints (``positive``: each >= 1); else a
    ConfigError naming ``name`` (``hidden = "abc"`` in a TOML file)."""
    if value is None:
        return None
    if (
        not isinstance(value, (list, tuple))
        or not value
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        or (positive and min(value) < 1)
    ):
        kind = "positive integers" if positive else "integers"
        raise ConfigError(f"{name} must be a non-empty list of {kind}, got {value!r}")
    return list(value)


def check_run_fields(config: object) -> None:
    """Type and range checks of a :class:`~forgetless.experiment.RunConfig`'s fields that the
    loop settings (:class:`~forgetless.engine.FitConfig`) do not cover: a wrong type from a
    TOML file is a ConfigError naming the field, never a TypeError deep in training."""
    for name in ("scenario", "model"):
        value = getattr(config, name)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{name} must be a name, got {value!r}")
    for name in ("protocol", "data_dir"):
        value = getattr(config, name)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
    check_optional_positive_int("n_tasks", config.n_tasks)
    check_int_list("class_order", config.class_order)
    check_int_list("hidden", config.hidden, positive=True)
    for name in ("reset_optimizer", "progress", "retain_raw_data"):
        check_bool(name, getattr(config, name))
    if not isinstance(config.strategy_params, dict):
        raise ConfigError(
            f"strategy_params must be a table of settings, got {config.strategy_params!r}"
        )


def check_device_name(name: object) -> str:
    """``name`` if torch reads it as a device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``),
    else a ConfigError; whether this machine has that device is :func:`available_device`'s."""
    import torch

    if not isinstance(name, str):
        raise ConfigError(f"device must be a name such as 'cpu' or 'cuda:0', got {name!r}")
    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(
            f"device {name!r} is not a torch device name: use cpu, cuda, cuda:N or mps"
        ) from None
    return name


def available_device(name: str):
    """The ``torch.device`` ``name``, checked to exist on this machine (a CUDA device needs a
    CUDA build of torch and a GPU of that index), else a ConfigError saying what there is."""
    import torch

    device = torch.device(check_device_name(name))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                "this torch was built without CUDA"
                if torch.version.cuda is None
                else "no CUDA GPU is visible"
            )
            raise ConfigError(
                f"device {name!r} is not available: {why}; use device='cpu' (--device cpu)"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"device {name!r} is not available: this machine has {count} CUDA GPU(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
    elif device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ConfigError(f"device {name!r} is not available on this machine; use cpu")
    elif device.type != "cpu":
        raise ConfigError(f"device {name!r} is not supported: use cpu, cuda, cuda:N or mps")
    return device
