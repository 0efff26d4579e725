"""Short names for runs that say what differs between them: ``ewc lam=10 s0``.

Every table, heading, figure and file name that shows several runs names each by the settings
that vary among them (strategy parameters and loop settings alike), so that two runs that differ
only in ``lam`` or ``lr`` never look the same. Settings sort by value, numbers as numbers
(``lam=10, 100, 1000``, not ``10, 1000, 100``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

#: Config fields that do not change a run's numbers (where data is read from, what is shown,
#: how many threads compute it, how often losses are logged): never part of a label. The same
#: list as ``forgetless.experiment.NON_RESULT_FIELDS``, kept here so that labels import no torch.
QUIET_FIELDS = ("data_dir", "threads", "progress", "log_every")
#: Fields shown by name of their own in a label rather than as ``name=value``.
_NAMED = ("scenario", "protocol", "strategy", "seed")


def flat_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a run's config that decide its numbers, in one flat mapping: the
    strategy's parameters by their names, then the other fields (scenario, model, loop), without
    the fields of :data:`QUIET_FIELDS`; nested settings (the ``fit`` of a result made by
    ``train`` directly) by their own names. A strategy parameter that shares a field's name is
    kept as ``strategy.NAME``."""
    flat: dict[str, Any] = {}
    params = config.get("strategy_params") or {}
    for key, value in config.items():
        if key == "strategy_params" or key in QUIET_FIELDS:
            continue
        if isinstance(value, Mapping):  # nested settings (``train``'s ``fit``): by their names
            flat.update({k: v for k, v in value.items() if k not in QUIET_FIELDS})
        else:
            flat[key] = value
    for key, value in params.items():
        flat[f"strategy.{key}" if key in flat else key] = value
    return flat


def varying_keys(configs: Sequence[Mapping[str, Any]], *, exclude: Sequence[str] = ()) -> list[str]:
    """The settings (keys of :func:`flat_settings`) whose values differ among ``configs``, in
    a fixed order: strategy parameters first, then the other fields, each group by name. A
    setting missing from a config counts as None."""
    flats = [flat_settings(c) for c in configs]
    seen: dict[str, None] = {}
    for flat in flats:
        seen.update(dict.fromkeys(flat))
    varying = [k for k in seen if k not in exclude and len({repr(f.get(k)) for f in flats}) > 1]
    params = {k for c in configs for k in (c.get("strategy_params") or {})}
    return sorted(varying, key=lambda k: (k not in params and not k.startswith("strategy."), k))


def label_keys(configs: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """Per config, the settings its label shows: the strategy parameters that differ among the
    runs of its strategy (a parameter of another strategy says nothing about this one), then
    the other settings that differ among all ``configs``; never scenario, protocol, strategy
    or seed, which labels show by value."""
    params = {k for c in configs for k in (c.get("strategy_params") or {})}
    shared = [k for k in varying_keys(configs, exclude=_NAMED) if k not in params]
    by_strategy: dict[Any, list[str]] = {}
    for config in configs:
        strategy = config.get("strategy")
        if strategy not in by_strategy:
            peers = [c for c in configs if c.get("strategy") == strategy]
            by_strategy[strategy] = [k for k in varying_keys(peers, exclude=_NAMED) if k in params]
    return [by_strategy[c.get("strategy")] + shared for c in configs]


def value_text(value: Any) -> str:
    """A setting's value, short: ``1000`` for 1000.0, ``0.001``, ``400,400`` for a list,
    ``none`` for None."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(value_text(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}:{value_text(v)}" for k, v in sorted(value.items()))
    return str(value)


def settings_text(config: Mapping[str, Any], keys: Sequence[str]) -> str:
    """``name=value`` of each of ``keys`` in ``config`` (see :func:`flat_settings`), joined by
    spaces; the seed as ``s0``; scenario, protocol and strategy as their values. A setting
    left unset (None) is left out: ``ewc`` beside ``ewc init=xavier``, not ``init=none``."""
    flat = flat_settings(config)
    parts = []
    for key in keys:
        value = flat.get(key)
        if value is None and key not in _NAMED:
            continue
        if key == "seed":
            parts.append(f"s{value_text(value)}")
        elif key in _NAMED:
            parts.append(value_text(value))
        else:
            parts.append(f"{key}={value_text(value)}")
    return " ".join(parts)


def strategy_text(name: str, params: Mapping[str, Any]) -> str:
    """A strategy and its parameters as run labels show them: ``ewc lam=1000``,
    ``shrink-perturb shrink=0.5 every=task``; parameters left unset (None) are left out."""
    parts = [name] + [f"{k}={value_text(v)}" for k, v in params.items() if v is not None]
    return " ".join(parts)


def run_labels(
    configs: Sequence[Mapping[str, Any]], *, seed: bool = True, number_alike: bool = True
) -> list[str]:
    """One short label per config: its scenario (when the scenarios differ), its protocol
    (when those differ), its strategy, the settings that tell it apart (:func:`label_keys`),
    and its seed (``seed=False`` leaves it out, for points that average seeds):
    ``ewc lam=10 s0``. Labels of configs that agree on everything are told apart by a number
    (``#2``) unless ``number_alike`` is False."""
    scenarios = len({c.get("scenario") for c in configs}) > 1
    protocols = len({c.get("protocol") for c in configs}) > 1
    labels = []
    for config, keys in zip(configs, label_keys(configs), strict=True):
        head = [config.get("scenario")] if scenarios else []
        head += [config.get("protocol")] if protocols else []
        head.append(config.get("strategy"))
        parts = [value_text(h) for h in head]
        extra = settings_text(config, keys)
        if extra:
            parts.append(extra)
        if seed:
            parts.append(f"s{value_text(config.get('seed'))}")
        labels.append(" ".join(parts))
    if not number_alike:
        return labels
    counts = {label: labels.count(label) for label in labels}
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if counts[label] == 1 else f"{label} #{seen[label]}")
    return unique


def ordered(configs: Sequence[Mapping[str, Any]]) -> list[int]:
    """The indices of ``configs`` in reading order: by scenario, protocol and strategy, then by
    the values of the settings that differ (numbers as numbers), then by seed."""
    keys = varying_keys(configs, exclude=_NAMED)

    def key(i: int) -> tuple:
        c = configs[i]
        head = tuple(str(c.get(k)) for k in ("scenario", "protocol", "strategy"))
        return (head, sort_key(c, keys), _order(c.get("seed")))

    return sorted(range(len(configs)), key=key)


def file_stem(label: str) -> str:
    """A label as a file name: ``ewc lam=10 s0`` -> ``ewc_lam10_s0``; letters, digits, ``.``,
    ``-`` and ``_`` only."""
    stem = label.replace("=", "").replace("#", "run")
    stem = re.sub(r"[^A-Za-z0-9.\-]+", "_", stem).strip("_.")
    return stem or "run"


def unique_stems(labels: Sequence[str]) -> list[str]:
    """:func:`file_stem` of each label, numbered where two would coincide, so that no file of
    one run overwrites another's."""
    stems, seen = [], set()
    for label in labels:
        stem, n = file_stem(label), 1
        while stem.lower() in seen:  # case-insensitive file systems
            n += 1
            stem = f"{file_stem(label)}_{n}"
        seen.add(stem.lower())
        stems.append(stem)
    return stems


def sort_key(config: Mapping[str, Any], keys: Sequence[str]) -> tuple:
    """A key that orders configs by the values of ``keys``, numbers by value (``10 < 100 <
    1000``), then text; None first."""
    flat = flat_settings(config)
    return tuple(_order(flat.get(k)) for k in keys)


def _order(value: Any) -> tuple:
    if value is None:
        return (0, 0.0, "")
    if isinstance(value, bool):
        return (1, float(value), "")
    if isinstance(value, (int, float)):
        return (1, float(value), "")
    if isinstance(value, (list, tuple)):
        return (2, 0.0, "", *(_order(v) for v in value))
    return (3, 0.0, str(value))
