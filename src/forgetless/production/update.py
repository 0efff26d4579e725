"""Update a trained model on new data, with a mitigation, and measure every slice before and after.

The deployed model has learnt the old data; the update is a two-task stream run from a trained
start (:func:`forgetless.engine.train` with ``trained_tasks=1``):

- task ``old``: not trained. Its training examples are ``old``, the retained sample of old
  data the mitigation may use (EWC's Fisher, a replay buffer; fine-tuning and LwF need none);
  its test examples are the old slices, pooled.
- task ``new data``: fine-tuned on ``new``; tested on ``new_test`` (or on ``new`` itself).

Then baseline and candidate are compared slice by slice with the gate's statistics
(:func:`forgetless.production.gate.gate`). The given model is left as it is: the candidate is
a trained copy.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from forgetless.data.arrays import ArraySet
from forgetless.engine import FitConfig, train
from forgetless.errors import ConfigError
from forgetless.production.gate import GateResult, gate
from forgetless.production.slices import Slices, as_slices, check_slices, read_npz, to_set
from forgetless.result import Result
from forgetless.scenarios.stream import Protocol, Stream, Task
from forgetless.strategies import Strategy, coerce_params, make_strategies

#: The row of the new data in an update's comparison.
NEW = "new data"
#: Strategies whose state is built from the old task's examples: without ``old`` they have
#: nothing to build it from.
NEEDS_OLD_DATA = ("ewc", "online-ewc", "mas", "replay", "agem", "der", "derpp", "cumulative")


@dataclass
class UpdateResult:
    """An update: the candidate model, how every slice moved, and the engine's result.

    Attributes:
        model: the candidate (a trained copy of the given model).
        comparison: baseline (the given model) against the candidate on every old slice and on
            the new data (row ``"new data"``), with the gate's intervals and verdicts; its
            ``overall`` pools the old slices only.
        result: the engine's :class:`~forgetless.result.Result` of the two-task stream
            (row 0: the given model; row 1: the candidate).
        strategy: the strategy spec, and ``params`` its parameters.
    """

    model: nn.Module
    comparison: GateResult
    result: Result
    strategy: str
    params: dict[str, Any]

    def table(self) -> str:
        return self.comparison.table("before", "after")

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "params": self.params,
            "comparison": self.comparison.to_dict(),
            "result": self.result.to_dict(),
        }


def as_data(data: Any, what: str) -> ArraySet:
    """Training or test data: an :class:`ArraySet`, an ``(x, y)`` pair, or an ``.npz`` path."""
    if isinstance(data, ArraySet):
        return data
    if isinstance(data, (str, Path)):
        arrays = read_npz(data)
        return to_set(arrays["x"], arrays["y"], f"{what} ({data})")
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return to_set(data[0], data[1], what)
    raise ConfigError(f"{what} must be an (x, y) pair, an ArraySet or an .npz path")


def update(
    model: nn.Module,
    new: Any,
    old: Any = None,
    strategy: str | Strategy | list = "finetune",
    *,
    slices: Any = None,
    new_test: Any = None,
    params: Mapping[str, Any] | None = None,
    fit: FitConfig | None = None,
    seed: int = 0,
    max_drop: float = 1.0,
    confidence: float = 0.95,
    data_dir: str | None = None,
    **fit_options: Any,
) -> UpdateResult:
    """Fine-tune a trained ``model`` on ``new`` data with a mitigation, and compare it with the
    model as given on every slice.

    Args:
        model: the deployed, trained model (left unchanged).
        new: the new training data: an ``(x, y)`` pair, an ArraySet or an ``.npz`` path.
        old: a retained sample of the old data, for the mitigation: EWC's and MAS's importances
            are measured on it, replay replays it. ``None``: no old data (fine-tuning, LwF, L2
            and SI need none).
        strategy: a name (``"finetune"``, ``"ewc"``, ``"replay"``, ``"lwf"``, ``"replay+ewc"``)
            or instances, as for :func:`~forgetless.engine.train`. Replay, unless told
            otherwise in ``params``, replays the whole retained sample as it is
            (``buffer_size=len(old)``, ``store_new=False``).
        slices: held-out old data to evaluate, by name (a folder, an ``.npz``, ``stream:NAME``
            or a mapping; see :mod:`forgetless.production.slices`). ``None``: ``old`` itself,
            as slice ``"old"`` (then replay is judged on examples it trains on).
        new_test: held-out new data (``None``: ``new`` itself), row ``"new data"``.
        params: the strategy's parameters by name (``{"lam": 100.0}``).
        fit: loop settings; or pass them as keywords (``epochs=2, lr=0.05``).
        seed: of batch order and sampling.
        max_drop, confidence: for the comparison's verdicts (see :mod:`~.gate`).
        data_dir: where ``stream:NAME`` slices find their data.

    Returns:
        The :class:`UpdateResult`; ``.model`` is the candidate.
    """
    new_set = as_data(new, "new")
    old_set = None if old is None else as_data(old, "old")
    if slices is None:
        if old_set is None:
            raise ConfigError(
                "an update needs old data to judge it: give slices (held-out old data) or old"
            )
        eval_slices: Slices = {"old": old_set}
    else:
        eval_slices = as_slices(slices, data_dir)
    if NEW in eval_slices:
        raise ConfigError(f"{NEW!r} names the new data's row; rename that slice")
    new_eval = new_set if new_test is None else as_data(new_test, "new_test")
    params = dict(params or {})
    spec = strategy if isinstance(strategy, str) else None
    names = spec.split("+") if spec else []
    if old_set is None:
        needing = [n for n in names if n.strip() in NEEDS_OLD_DATA]
        if needing:
            raise ConfigError(
                f"strategy {needing[0]!r} builds its state from the old data: give old (a "
                "retained sample of it)"
            )
    if "replay" in names and old_set is not None:
        params.setdefault("buffer_size", len(old_set))
        params.setdefault("store_new", False)
    if spec:
        params = coerce_params(spec, params)  # typed as the constructors take them ("100" -> 100.0)
    strategies = make_strategies(strategy, params) if spec else make_strategies(strategy)

    every = {**eval_slices, NEW: new_eval, "new (training data)": new_set}
    if old_set is not None:
        every["old (retained sample)"] = old_set
    if fit is not None and fit_options:
        raise ConfigError("pass either fit=FitConfig(...) or loop options as keywords, not both")
    unknown = sorted(set(fit_options) - set(FitConfig.__dataclass_fields__))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)}; loop options are the fields of FitConfig "
            f"({', '.join(FitConfig.__dataclass_fields__)})"
        )
    fit = fit if fit is not None else FitConfig(**fit_options)
    device = fit.device
    baseline = copy.deepcopy(model).to(device)
    candidate = copy.deepcopy(model)
    outputs = check_slices(every, baseline, device)
    stream = _stream(old_set, eval_slices, new_set, new_eval, outputs, seed)
    result = train(
        stream,
        candidate,
        strategies,
        fit,
        seed,
        config={"update": True, "strategy": spec or "+".join(s.name for s in strategies),
                "params": params, "trained_tasks": 1, "fit": dataclasses.asdict(fit)},
        trained_tasks=1,
    )  # fmt: skip
    options = dict(max_drop=max_drop, confidence=confidence, seed=seed, device=device)
    old_rows = gate(baseline, candidate, eval_slices, **options)
    new_row = gate(baseline, candidate, {NEW: new_eval}, **options)[NEW]
    # The new data's row stands beside the old slices, outside their pooled "overall".
    comparison = dataclasses.replace(old_rows, slices=[*old_rows.slices, new_row])
    return UpdateResult(
        candidate.eval(), comparison, result, "+".join(s.name for s in strategies), params
    )


def _stream(
    old: ArraySet | None, slices: Slices, new: ArraySet, new_test: ArraySet, outputs: int, seed
) -> Stream:
    held_out = ArraySet.concat(list(slices.values()))
    old_train = old if old is not None else held_out.subset(torch.zeros(0, dtype=torch.int64))
    old_units = _units(old_train, held_out)
    new_units = _units(new, new_test)
    protocol = Protocol.DOMAIN if set(new_units) <= set(old_units) else Protocol.CLASS
    tasks = (
        Task("old", old_train, held_out, old_units, tuple(map(str, old_units))),
        Task(NEW, new, new_test, new_units, tuple(map(str, new_units))),
    )
    return Stream("update", tasks, protocol, outputs, seed)


def _units(*sets: ArraySet) -> tuple[int, ...]:
    labels = torch.cat([s.y for s in sets if len(s)])
    return tuple(int(u) for u in torch.unique(labels))
