"""Strategies: one file per method family, each a small class of hooks (see ``base.py``).

:data:`STRATEGIES` maps CLI names to classes; :func:`make_strategies` turns ``"replay+ewc"``
plus parameters into a list of instances, the engine's hybrid.

The built-in classes are imported when first asked for (``STRATEGIES["ewc"]``, or
``from forgetless.strategies import EWC``), not with this package: a run imports the one
strategy it uses instead of all 26 (about 50 ms of imports). Listing the names imports none.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
import typing
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any

from forgetless.errors import ConfigError
from forgetless.names import renamed
from forgetless.strategies.base import HOOKS, Strategy

#: The built-in strategies, in the order `forgetless run --help` lists them (baselines,
#: regularisers, rehearsal, plasticity, isolation, adapters): name -> (module, class).
_BUILT_IN: dict[str, tuple[str, str]] = {
    "finetune": ("finetune", "Finetune"),
    "joint": ("joint", "Joint"),
    "cumulative": ("joint", "Cumulative"),
    "l2": ("l2", "L2"),
    "ewc": ("ewc", "EWC"),
    "online-ewc": ("ewc", "OnlineEWC"),
    "si": ("si", "SI"),
    "mas": ("mas", "MAS"),
    "lwf": ("lwf", "LwF"),
    "replay": ("replay", "Replay"),
    "agem": ("agem", "AGEM"),
    "gss": ("gss", "GSS"),
    "icarl": ("icarl", "ICaRL"),
    "der": ("der", "DER"),
    "derpp": ("der", "DERPP"),
    "continual-backprop": ("continual_backprop", "ContinualBackprop"),
    "shrink-perturb": ("shrink_perturb", "ShrinkPerturb"),
    "pnn": ("pnn", "PNN"),
    "packnet": ("packnet", "PackNet"),
    "hat": ("hat", "HAT"),
    "hypermask": ("hypermask", "HyperMask"),
    "specialists": ("specialists", "Specialists"),
    "head": ("head", "Head"),
    "lora": ("lora", "LoRA"),
    "curlora": ("curlora", "CURLoRA"),
    "olora": ("olora", "OLoRA"),
}
#: Class name -> module, for ``from forgetless.strategies import EWC``.
_CLASS_MODULES = {cls: module for module, cls in _BUILT_IN.values()}


def _import_class(name: str) -> type[Strategy]:
    module, attribute = _BUILT_IN[name]
    cls = getattr(importlib.import_module(f"forgetless.strategies.{module}"), attribute)
    if cls.name != name:  # the table above and the class disagree: a mistake in this file
        raise ConfigError(f"the built-in strategy {name!r} is a class named {cls.name!r}")
    return cls


class StrategyRegistry(MutableMapping[str, type[Strategy]]):
    """Name -> strategy class, in registration order; a built-in class is imported the first
    time it is looked up (``registry[name]``, ``.get``, ``.values()``); ``in``, ``len`` and
    iteration (the names) import nothing."""

    def __init__(self, lazy: Mapping[str, tuple[str, str]]):
        self._classes: dict[str, type[Strategy] | None] = dict.fromkeys(lazy)

    def __getitem__(self, name: str) -> type[Strategy]:
        cls = self._classes[name]
        if cls is None:
            cls = self._classes[name] = _import_class(name)
        return cls

    def __setitem__(self, name: str, cls: type[Strategy]) -> None:
        self._classes[name] = cls

    def __delitem__(self, name: str) -> None:
        del self._classes[name]

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)

    def __repr__(self) -> str:
        return f"StrategyRegistry({', '.join(self._classes)})"


STRATEGIES: StrategyRegistry = StrategyRegistry(_BUILT_IN)


def register(cls: type[Strategy]) -> type[Strategy]:
    """Add a strategy class to :data:`STRATEGIES` under ``cls.name`` (usable as a decorator)."""
    if cls.name in STRATEGIES and STRATEGIES[cls.name] is not cls:
        raise ConfigError(f"a strategy named {cls.name!r} is registered already")
    STRATEGIES[cls.name] = cls
    return cls


def __getattr__(name: str) -> Any:
    """The built-in classes by their class names, imported on first use."""
    if name in _CLASS_MODULES:
        module = importlib.import_module(f"forgetless.strategies.{_CLASS_MODULES[name]}")
        value = globals()[name] = getattr(module, name)
        return value
    raise AttributeError(f"module 'forgetless.strategies' has no attribute {name!r}")


def strategy_parameters(cls: type[Strategy]) -> dict[str, inspect.Parameter]:
    """The constructor parameters of a strategy class, by name."""
    sig = inspect.signature(cls.__init__)
    return {
        n: p for n, p in sig.parameters.items() if n != "self" and p.kind is p.POSITIONAL_OR_KEYWORD
    }


def parameter_help(cls: type[Strategy]) -> dict[str, str]:
    """One line per constructor parameter of a strategy class, from the ``Args:`` section of
    its docstring: what the parameter means (its first clause) and, where the text lists them
    (``one of ``a``, ``b``...``), its choices as ``a|b``. Parameters the docstring does not
    describe get an empty line. A subclass that keeps its base's parameters (``curlora`` of
    ``lora``) is described by the base's docstring where its own says nothing."""
    described: dict[str, str] = {}
    for klass in cls.__mro__:
        section = re.search(
            r"^Args:\n((?:[ ]{4}.*\n?|\n)*)", inspect.cleandoc(klass.__doc__ or ""), re.M
        )
        if section:
            for match in re.finditer(r"^    (\w+): (.*(?:\n {8,}.*)*)", section.group(1), re.M):
                described.setdefault(match.group(1), " ".join(match.group(2).split()))
    lines = {}
    for name in strategy_parameters(cls):
        text = described.get(name, "")
        listed = re.search(r"one of ((?:``[^`]+``(?:,| or|,? or)?\s*)+)", text)
        if listed:
            options = re.findall(r"``([^`]+)``", listed.group(1))
        else:  # '``"example"`` (...) or ``"batch"`` (...)': the quoted words are the choices
            options = re.findall(r'``"([\w-]+)"``', text)
            options = options if len(options) > 1 else []
        meaning = re.sub(r" \(:\w+:`[^`]+`\)", "", _first_clause(text))  # a bare reference
        meaning = re.sub(r":\w+:`~?(?:[\w.]+\.)?(\w+)`", r"\1", meaning)
        meaning = meaning.replace("``", "")
        if len(meaning) > 90:  # one line: asides in brackets go first, then the tail
            meaning = re.sub(r" \([^()]*\)", "", meaning)
        if len(meaning) > 90:
            meaning = meaning[:88].rsplit(" ", 1)[0] + " ..."
        lines[name] = f"{meaning} ({'|'.join(options)})" if options else meaning
    return lines


def _first_clause(text: str) -> str:
    """``text`` up to its first sentence end or semicolon (``Eq. 5``, ``e.g.`` do not end one),
    or up to where it starts listing choices."""
    for match in re.finditer(r"\. |; |: ``|, one of ", text):
        before = text[: match.start()]
        if before.count("(") > before.count(")"):  # inside brackets: an aside, read on
            continue
        if not re.search(r"(\bEq|\be\.g|\bi\.e|\bcf|\bvs)$", before):
            return before.rstrip(".")
    return text.rstrip(".")


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
    params = _renamed(params or {})
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


def coerce_params(spec: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` as the named strategies' constructors will receive them: strings converted to
    the annotated type, ints widened to float where a float is expected, so that ``"100"``,
    ``100`` and ``100.0`` name the same run. Unknown names or parameters are errors."""
    classes = [_lookup(name.strip()) for name in spec.split("+")]
    out = {}
    for key, value in _renamed(params).items():
        owners = [cls for cls in classes if key in strategy_parameters(cls)]
        if not owners:
            accepted = sorted({p for cls in classes for p in strategy_parameters(cls)})
            raise ConfigError(
                f"parameter(s) {key} not accepted by strategy {spec}; "
                f"accepted: {', '.join(accepted) or 'none'}"
            )
        annotation = typing.get_type_hints(owners[0].__init__).get(key)
        value = _coerce(key, value, annotation, owners[0].name)
        wants_float = annotation is float or float in typing.get_args(annotation)
        if wants_float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        out[key] = value
    return out


def _renamed(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with each renamed parameter under its new name (a warning for each old one:
    :data:`forgetless.names.RENAMED_PARAMETERS`)."""
    return {renamed(key, "strategy parameter"): value for key, value in params.items()}


def _spec_name(strategies: Sequence[Strategy]) -> str:
    return "+".join(s.name for s in strategies)


def _lookup(name: str) -> type[Strategy]:
    if name in STRATEGIES:
        return STRATEGIES[name]
    hint = difflib.get_close_matches(name, STRATEGIES, n=1)
    suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
    raise ConfigError(f"unknown strategy {name!r}{suggestion}; known: {', '.join(STRATEGIES)}")


def _coerce(name: str, value: Any, annotation: Any, owner: str) -> Any:
    """A CLI string as the parameter's annotated type (``int``, ``float``, ``bool``, optional);
    a whole float for an ``int`` (a buffer size of 50.0 from a log range) and an int for a
    ``float`` become that type, so equal values name the same run."""
    args = typing.get_args(annotation)
    optional = type(None) in args
    if optional:
        rest = [a for a in args if a is not type(None)]
        annotation = rest[0] if len(rest) == 1 else Any
    if not isinstance(value, str):
        if annotation is int and isinstance(value, float) and value.is_integer():
            return int(value)
        if annotation is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value
    if optional and value.strip().lower() == "none":  # Optional[X]: "none" means None
        return None
    if annotation not in (int, float, bool):
        return value
    lowered = value.strip().lower()
    if annotation is bool:
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
    else:
        try:
            number = float(lowered)
            if annotation is float:
                return number
            if number.is_integer():  # accepts "200" and "1e3"
                return int(number)
        except ValueError:
            pass
    raise ConfigError(f"{owner}: parameter {name!r} expects {annotation.__name__}, got {value!r}")


__all__ = [
    "AGEM",
    "DER",
    "DERPP",
    "EWC",
    "GSS",
    "HAT",
    "HOOKS",
    "L2",
    "MAS",
    "PNN",
    "SI",
    "STRATEGIES",
    "CURLoRA",
    "ContinualBackprop",
    "Cumulative",
    "Finetune",
    "Head",
    "HyperMask",
    "ICaRL",
    "Joint",
    "LoRA",
    "LwF",
    "OLoRA",
    "OnlineEWC",
    "PackNet",
    "Replay",
    "ShrinkPerturb",
    "Specialists",
    "Strategy",
    "coerce_params",
    "make_strategies",
    "register",
]
