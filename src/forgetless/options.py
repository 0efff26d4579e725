"""The run options, declared once: :class:`~forgetless.experiment.RunConfig`'s fields.

Each field is an option: its name is the TOML key, the sweep axis and (with hyphens) the flag;
its type annotation the parser's type; its default the default; its line in the class's
``Attributes:`` section the help. A field's ``option(...)`` metadata adds only what the
command line shows differently (a metavar, the choices, a boolean's flag). :func:`run_options`
reads them; :func:`add_run_options` puts them on a parser; :func:`given_settings` returns the
ones the user gave, so that a flag on the command line always wins over a config file, even at
its default value. Nothing here imports torch.

Strategy parameters are the options no field claims: ``--NAME VALUE`` after ``--strategy``
(:func:`strategy_groups`), checked against the strategies' constructors when the run is built;
an unknown one gets a "did you mean".
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from forgetless.errors import ConfigError
from forgetless.names import flag, renamed


def int_list(text: str) -> list[int]:
    """``"1,2,3"`` as ``[1, 2, 3]`` (an argparse type)."""
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def float_list(text: str) -> list[float]:
    """``"0,15.5"`` as ``[0.0, 15.5]`` (an argparse type)."""
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


@dataclass(frozen=True)
class Option:
    """One run option, as the command line shows it.

    Attributes:
        name: the RunConfig field (and TOML key).
        flag: the command-line flag (``--batch-size``).
        parse: the command line's text to the value (``None`` for a boolean flag).
        default: the field's default.
        help: what it means, from RunConfig's docstring.
        group: the heading it is listed under in ``forgetless run --help``.
        metavar: the placeholder of its value in the help.
        choices: the values it takes, where they are a fixed list.
        sets: for a boolean flag, the value giving it sets (the opposite of the default).
    """

    name: str
    flag: str
    parse: Callable[[str], Any] | None
    default: Any
    help: str
    group: str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    sets: bool | None = None


#: The heading each group of RunConfig's fields is listed under, by the group's first field;
#: a field belongs to the group of the nearest field above it that starts one.
GROUPS = {
    "scenario": "scenario",
    "model": "model and strategy",
    "seed": "training loop",
    "weights": "trained start and revisits",
}


def run_options() -> list[Option]:
    """Every option RunConfig declares, in field order (``strategy_params`` is not one: its
    entries are the strategies' own ``--NAME VALUE`` options)."""
    from forgetless.experiment import RunConfig

    hints = typing.get_type_hints(RunConfig)
    described = attribute_help(RunConfig)
    options, group = [], ""
    for f in dataclasses.fields(RunConfig):
        group = GROUPS.get(f.name, group)
        meta = f.metadata
        if meta.get("cli", True) is False:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kind = _value_type(hints[f.name])
        if kind is bool:
            sets = not default
            name = meta.get("flag") or flag(("no_" if default else "") + f.name)
            parse = None
        else:
            sets, name = None, meta.get("flag") or flag(f.name)
            parse = meta.get("parse") or _parser(kind, f.name)
        text = described.get(f.name, "")
        if kind is bool:  # the help says what the flag does, not what the field means
            text = meta.get("flag_help") or f"sets {f.name} to {sets} ({text})"
        options.append(
            Option(
                name=f.name,
                flag=name,
                parse=parse,
                default=default,
                help=text,
                group=group,
                metavar=meta.get("metavar"),
                choices=tuple(meta["choices"]) if "choices" in meta else None,
                sets=sets,
            )
        )
    return options


def _value_type(hint: Any) -> Any:
    """``int | None`` -> ``int``; ``list[int] | None`` -> ``list[int]``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return hint


def _parser(kind: Any, name: str) -> Callable[[str], Any]:
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind) or (str,)
        return {int: int_list, float: float_list}.get(item, _text_list)
    if kind in (int, float):
        return kind
    return str


def _text_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def attribute_help(cls: type) -> dict[str, str]:
    """Each entry of the ``Attributes:`` section of ``cls``'s docstring, as one line of plain
    text (``code`` quotes and Sphinx roles removed)."""
    section = re.search(
        r"^Attributes:\n((?:[ ]{4}.*\n?|\n)*)", inspect.cleandoc(cls.__doc__ or ""), re.M
    )
    out = {}
    if section:
        for match in re.finditer(r"^    (\w+): (.*(?:\n {8,}.*)*)", section.group(1), re.M):
            text = " ".join(match.group(2).split())
            text = re.sub(r":\w+:`~?(?:[\w.]+\.)?(\w+)`", r"\1", text).replace("``", "")
            out[match.group(1)] = text
    return out


def _help(option: Option) -> str:
    text = option.help.rstrip(".")
    if option.choices and option.metavar and "one of" not in text:
        text += f": one of {', '.join(option.choices)}"
    shown = option.default not in (None, [], {}) and option.sets is None
    if shown and "default" not in text:
        value = ",".join(map(str, option.default)) if isinstance(option.default, list) else None
        text += f" (default: {value if value is not None else option.default})"
    return text.replace("%", "%%")


def add_run_options(
    parser: argparse.ArgumentParser,
    only: Sequence[str] | None = None,
    defaults: dict[str, Any] | None = None,
) -> list[Option]:
    """Put the run options on ``parser``, under their group headings: every one, or those
    named in ``only``. No option has a parser default (argparse.SUPPRESS): an option is in the
    parsed namespace only if it was given, which :func:`given_settings` reads; except those
    in ``defaults``, a command's own defaults (for commands without a config file)."""
    chosen = [o for o in run_options() if only is None or o.name in only]
    defaults = defaults or {}
    groups: dict[str, Any] = {}
    for o in chosen:
        if o.group not in groups:
            groups[o.group] = parser.add_argument_group(o.group) if only is None else parser
        target = groups[o.group]
        default = argparse.SUPPRESS
        if o.name in defaults:
            o = dataclasses.replace(o, default=defaults[o.name])
            default = o.default
        kwargs: dict[str, Any] = {"dest": o.name, "default": default, "help": _help(o)}
        if o.parse is None:
            target.add_argument(o.flag, action="store_true" if o.sets else "store_false", **kwargs)
            continue
        kwargs["type"] = o.parse
        if o.metavar:
            kwargs["metavar"] = o.metavar
        if o.choices:
            kwargs["choices"] = list(o.choices)
        target.add_argument(o.flag, **kwargs)
    return chosen


def list_fields() -> tuple[str, ...]:
    """RunConfig's fields whose value is a list (``hidden``, ``class_order``, ``schedule``): in
    a sweep's grid, only a list of lists varies them."""
    from forgetless.experiment import RunConfig

    hints = typing.get_type_hints(RunConfig)
    return tuple(
        f.name
        for f in dataclasses.fields(RunConfig)
        if typing.get_origin(_value_type(hints[f.name])) is list
    )


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The run options given on the command line (RunConfig field -> value)."""
    names = {o.name for o in run_options()}
    return {k: v for k, v in vars(args).items() if k in names}


def strategy_groups(argv: Sequence[str], extra: Sequence[str]) -> list[tuple[str | None, dict]]:
    """The strategy parameters among ``extra`` (the flags the parser did not know), grouped by
    the ``--strategy`` they follow in ``argv``: ``[(None, {...}), ("ewc", {"lam": "1000"})]``,
    the first group being those given before any ``--strategy`` (they go to every strategy
    that takes them). Names with hyphens become field names (``--buffer-size`` is
    ``buffer_size``); a renamed parameter gets its new name, with a deprecation warning."""
    positions, at = [], 0
    for token in extra:  # extra is a subsequence of argv, in order
        while at < len(argv) and argv[at] != token:
            at += 1
        positions.append(at)
        at += 1
    starts = [
        (i, argv[i + 1] if argv[i] == "--strategy" and i + 1 < len(argv) else argv[i][11:])
        for i in range(len(argv))
        if argv[i] == "--strategy" or argv[i].startswith("--strategy=")
    ]
    groups: list[tuple[str | None, dict]] = [(None, {})]
    groups += [(name, {}) for _, name in starts]
    i = 0
    while i < len(extra):
        token = extra[i]
        if not token.startswith("--") or len(token) == 2:
            raise ConfigError(
                f"unexpected argument {token!r}; strategy parameters are --NAME VALUE pairs"
            )
        name, eq, value = token[2:].partition("=")
        owner = sum(1 for start, _ in starts if start < positions[i])  # the --strategy before it
        if not eq:
            if i + 1 >= len(extra) or extra[i + 1].startswith("--"):
                raise ConfigError(f"{token} needs a value")
            value = extra[i + 1]
            i += 1
        groups[owner][1][renamed(name.replace("-", "_"), "strategy parameter")] = value
        i += 1
    return groups


def strategy_params(argv: Sequence[str], extra: Sequence[str]) -> dict[str, str]:
    """All the strategy parameters among ``extra``, wherever they stand (one strategy)."""
    out: dict[str, str] = {}
    for _, params in strategy_groups(argv, extra):
        out.update(params)
    return out


def check_strategy_params(
    spec: str, params: dict[str, Any], known_flags: Sequence[str] = ()
) -> None:
    """A ConfigError for a parameter that strategy ``spec`` does not take: "did you mean" the
    closest run option or parameter (``--scenaro``: ``--scenario``), or the parameters it takes,
    all spelt as flags. Imports the strategies (torch)."""
    from forgetless.strategies import STRATEGIES, strategy_parameters

    accepted = sorted(
        {p for name in spec.split("+") if name.strip() in STRATEGIES
         for p in strategy_parameters(STRATEGIES[name.strip()])}
    )  # fmt: skip
    candidates = [*known_flags, *(flag(p) for p in accepted)]
    for name in params:
        if name in accepted:
            continue
        match = difflib.get_close_matches(flag(name), candidates, n=1, cutoff=0.75)
        if match:
            raise ConfigError(f"unknown option {flag(name)} (did you mean {match[0]}?)")
        takes = ", ".join(flag(p) for p in accepted) or "none"
        raise ConfigError(
            f"{flag(name)}: not a run option, and not accepted by strategy {spec} "
            f"(its parameters: {takes})"
        )


def strategy_specs(
    argv: Sequence[str], extra: Sequence[str], names: Sequence[str] | None
) -> list[tuple[str, dict[str, str]]]:
    """Each ``--strategy`` with its parameters (``--strategy continual-backprop --rho 1e-4``),
    for commands that compare several; those given before any ``--strategy`` go to each that
    takes them. The old ``NAME:KEY=VALUE,...`` spelling is read too, with a deprecation
    warning. ``names`` (the ``--strategy`` values) ``None``: fine-tuning alone."""
    from forgetless.strategies import STRATEGIES, strategy_parameters

    groups = strategy_groups(argv, extra)
    specs = []
    for name, params in groups[1:] or [("finetune", {})]:
        if ":" in name:
            name, old = _colon_spec(name)
            params = {**old, **params}
        check_strategy_params(name, params)
        specs.append((name, params))
    for key, value in groups[0][1].items():
        owners = [
            params
            for name, params in specs
            if any(key in strategy_parameters(STRATEGIES[n]) for n in name.split("+"))
        ]
        if not owners:
            raise ConfigError(f"{flag(key)} is accepted by none of the strategies given")
        for params in owners:
            params.setdefault(key, value)
    return specs


def _colon_spec(text: str) -> tuple[str, dict[str, str]]:
    """The deprecated ``NAME:KEY=VALUE,KEY=VALUE`` as a name and its (string) parameters."""
    import warnings

    name, _, rest = text.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(
                f"--strategy {text!r}: parameters are KEY=VALUE pairs separated by commas, "
                "e.g. continual-backprop:rho=1e-4,maturity=100"
            )
        params[renamed(key.strip().replace("-", "_"), "strategy parameter")] = value.strip()
    suggestion = " ".join([name, *(f"{flag(k)} {v}" for k, v in params.items())])
    warnings.warn(
        f"--strategy {text} is deprecated (one release): parameters follow their strategy as "
        f"flags, as for 'forgetless run': --strategy {suggestion}",
        DeprecationWarning,
        stacklevel=3,
    )
    return name.strip(), params


class DeprecatedFlag(argparse.Action):
    """An old flag that still works for one release, with a one-line warning naming the new
    one: ``parser.add_argument("--tasks", dest="n_tasks", action=DeprecatedFlag,
    new="--n-tasks", type=int, help=argparse.SUPPRESS)``."""

    def __init__(self, option_strings, dest, new: str, **kwargs) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        import warnings

        warnings.warn(
            f"{option_string} is deprecated (one release): it is now {self.new}",
            DeprecationWarning,
            stacklevel=2,
        )
        setattr(namespace, self.dest, values)
