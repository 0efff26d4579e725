"""Strategies: one file per method family, each a small class of hooks (see ``base.py``).

:data:`STRATEGIES` maps CLI names to classes; :func:`make_strategies` turns ``"replay+ewc"``
plus parameters into a list of instances, the engine's hybrid.
"""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from forgetless.errors import ConfigError
from forgetless.strategies.base import HOOKS, Strategy
from forgetless.strategies.finetune import Finetune
from forgetless.strategies.joint import Cumulative, Joint

STRATEGIES: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Add a strategy class to :data:`STRATEGIES` under ``cls.name`` (usable as a decorator)."""
    if cls.name in STRATEGIES and STRATEGIES[cls.name] is not cls:
        raise ConfigError(f"a strategy named {cls.name!r} is registered already")
    STRATEGIES[cls.name] = cls
    return cls


for _cls in (Finetune, Joint, Cumulative):
    register(_cls)


def strategy_parameters(cls: type[Strategy]) -> dict[str, inspect.Parameter]:
    """The constructor parameters of a strategy class, by name."""
    sig = inspect.signature(cls.__init__)
    return {
        n: p for n, p in sig.parameters.items() if n != "self" and p.kind is p.POSITIONAL_OR_KEYWORD
    }


def make_strategies(
    spec: str | Strategy | Sequence[Strategy | str], params: Mapping[str, Any] | None = None
) -> list[Strategy]:
    """Instances for a strategy spec.

    Args:
        spec: a name (``"finetune"``), names joined by ``+`` (``"replay+ewc"``), an instance, or a
            list of either.
        params: constructor arguments; each goes to every named strategy that accepts it.
            Strings are converted to the parameter's annotated type, so CLI values work as is.

    Raises:
        ConfigError: an unknown name, or a parameter no strategy accepts (the message lists the
            accepted ones).
    """
    params = dict(params or {})
    if isinstance(spec, Strategy):
        return [spec]
    names_or_objects = spec.split("+") if isinstance(spec, str) else list(spec)
    built, used = [], set()
    for item in names_or_objects:
        if isinstance(item, Strategy):
            built.append(item)
            continue
        cls = _lookup(str(item).strip())
        accepted = strategy_parameters(cls)
        hints = typing.get_type_hints(cls.__init__)
        kwargs = {
            k: _coerce(k, v, hints.get(k), cls.name) for k, v in params.items() if k in accepted
        }
        used |= kwargs.keys()
        built.append(cls(**kwargs))
    unused = sorted(params.keys() - used)
    if unused:
        accepted = sorted({p for s in built for p in strategy_parameters(type(s))})
        raise ConfigError(
            f"parameter(s) {', '.join(unused)} not accepted by strategy {_spec_name(built)}; "
            f"accepted: {', '.join(accepted) or 'none'}"
        )
    return built


def _spec_name(strategies: Sequence[Strategy]) -> str:
    return "+".join(s.name for s in strategies)


def _lookup(name: str) -> type[Strategy]:
    if name in STRATEGIES:
        return STRATEGIES[name]
    hint = difflib.get_close_matches(name, STRATEGIES, n=1)
    suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
    raise ConfigError(f"unknown strategy {name!r}{suggestion}; known: {', '.join(STRATEGIES)}")


def _coerce(name: str, value: Any, annotation: Any, owner: str) -> Any:
    if not isinstance(value, str) or annotation in (None, str, Any):
        return value
    try:
        if annotation is bool:
            lowered = value.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return lowered in ("true", "1", "yes")
        if annotation in (int, float):
            return (
                annotation(float(value))
                if annotation is int and "e" in value.lower()
                else annotation(value)
            )
    except ValueError:
        raise ConfigError(
            f"{owner}: parameter {name!r} expects {annotation.__name__}, got {value!r}"
        ) from None
    return value


__all__ = [
    "HOOKS",
    "STRATEGIES",
    "Cumulative",
    "Finetune",
    "Joint",
    "Strategy",
    "make_strategies",
    "register",
]
