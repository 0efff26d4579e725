"""Weight interpolation between the old and the updated model, the after-the-fact mitigation.

WiSE-FT (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models", CVPR) takes

    theta(alpha) = (1 - alpha) * theta_old + alpha * theta_new

for a mixing coefficient ``alpha`` in [0, 1]: 0 is the old model, 1 the fine-tuned one. When
both lie in one basin (fine-tuning from the old weights usually keeps them there), points in
between often keep most of the new data's gain and most of the old accuracy. Sweeping
``alpha`` and evaluating every slice draws that trade-off; :meth:`MergeSweep.choose` picks the
largest ``alpha`` whose old slices stay within a drop. Choose on held-out data: choosing and
then gating on the same examples flatters the choice.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from forgetless.errors import ConfigError
from forgetless.production.slices import Slices, as_slices, check_slices, correct


def interpolate(
    old: Mapping[str, torch.Tensor], new: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * old + alpha * new`` for every floating-point entry; other entries
    (counters such as batch norm's ``num_batches_tracked``) are taken from ``new``."""
    if set(old) != set(new):
        differ = sorted(set(old) ^ set(new))
        raise ConfigError(
            f"the old and new weights name different tensors ({', '.join(differ[:4])}): "
            "they must come from the same model"
        )
    out = {}
    for name, a in old.items():
        b = new[name]
        if a.shape != b.shape:
            raise ConfigError(
                f"{name} is {list(a.shape)} in the old weights, {list(b.shape)} in the new"
            )
        out[name] = torch.lerp(a, b.to(a.dtype), alpha) if a.is_floating_point() else b.clone()
    return out


@dataclass(frozen=True)
class MergeSweep:
    """Accuracy of every slice at every ``alpha``.

    Attributes:
        alphas: the mixing coefficients, ascending (0: the old model, 1: the new one).
        accuracy: per slice name, one accuracy per alpha (fractions).
        examples: per slice name, its number of examples.
        new_slice: the name of the new data's slice; every other slice is old data.
    """

    alphas: list[float]
    accuracy: dict[str, list[float]]
    examples: dict[str, int]
    new_slice: str

    @property
    def old_slices(self) -> list[str]:
        return [name for name in self.accuracy if name != self.new_slice]

    def old_mean(self) -> list[float]:
        """The old slices' accuracy at each alpha, weighted by their examples."""
        names = self.old_slices
        total = sum(self.examples[n] for n in names)
        return [
            sum(self.accuracy[n][i] * self.examples[n] for n in names) / total
            for i in range(len(self.alphas))
        ]

    def choose(self, max_drop: float = 1.0) -> float:
        """The largest alpha at which no old slice is more than ``max_drop`` points below its
        accuracy at alpha 0 (the old model), on these examples' point estimates; 0 if none."""
        chosen = 0.0
        for i, alpha in enumerate(self.alphas):
            drops = [100 * (self.accuracy[n][0] - self.accuracy[n][i]) for n in self.old_slices]
            if max(drops, default=0.0) <= max_drop:
                chosen = max(chosen, alpha)
        return chosen

    def to_dict(self) -> dict[str, Any]:
        return {
            "alphas": self.alphas,
            "accuracy": self.accuracy,
            "examples": self.examples,
            "new_slice": self.new_slice,
            "old_mean": self.old_mean(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def table(self) -> str:
        names = list(self.accuracy)
        width = max(8, *(len(n) for n in names))
        lines = [f"{'alpha':>6} " + " ".join(f"{n:>{width}}" for n in names)]
        for i, alpha in enumerate(self.alphas):
            cells = " ".join(f"{100 * self.accuracy[n][i]:>{width}.1f}" for n in names)
            lines.append(f"{alpha:>6.2f} {cells}")
        return "\n".join(lines)


def merge_sweep(
    model: nn.Module,
    old: Mapping[str, torch.Tensor],
    new: Mapping[str, torch.Tensor],
    slices: Any,
    new_data: Any,
    alphas: Sequence[float] = tuple(i / 10 for i in range(11)),
    *,
    new_slice: str = "new data",
    batch_size: int = 1024,
    device: str = "cpu",
    data_dir: str | None = None,
) -> MergeSweep:
    """Evaluate ``theta(alpha)`` (see the module docstring) on every old slice and on the new
    data, for each alpha.

    Args:
        model: a module of the architecture both state dicts belong to (its own weights are
            not used; it is not changed).
        old, new: the state dicts of the old and the updated model.
        slices: the old data's slices (a path, ``stream:NAME`` or a mapping; see
            :mod:`forgetless.production.slices`).
        new_data: held-out new data, an ``(x, y)`` pair, an ArraySet or an ``.npz`` path.
        alphas: mixing coefficients in [0, 1].
    """
    from forgetless.production.update import as_data

    values = sorted({float(a) for a in alphas})
    if not values or values[0] < 0 or values[-1] > 1:
        raise ConfigError(f"alphas must lie in [0, 1], got {list(alphas)}")
    sets: Slices = dict(as_slices(slices, data_dir))
    if new_slice in sets:
        raise ConfigError(f"{new_slice!r} names the new data; rename that slice")
    sets[new_slice] = as_data(new_data, "new data")
    work = copy.deepcopy(model).to(device)
    check_slices(sets, work, device)
    accuracy: dict[str, list[float]] = {name: [] for name in sets}
    for alpha in values:
        work.load_state_dict(interpolate(old, new, alpha))
        for name, data in sets.items():
            accuracy[name].append(float(correct(work, data, batch_size, device).float().mean()))
    return MergeSweep(values, accuracy, {n: len(s) for n, s in sets.items()}, new_slice)


def merged_model(
    model: nn.Module, old: Mapping[str, torch.Tensor], new: Mapping[str, torch.Tensor], alpha
) -> nn.Module:
    """A copy of ``model`` holding ``theta(alpha)``."""
    if not 0 <= alpha <= 1:
        raise ConfigError(f"alpha must lie in [0, 1], got {alpha!r}")
    merged = copy.deepcopy(model)
    merged.load_state_dict(interpolate(old, new, float(alpha)))
    return merged.eval()
