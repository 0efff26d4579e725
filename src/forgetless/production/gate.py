"""The forgetting gate: does a candidate model lose accuracy on old-data slices?

Both models answer the same examples of each slice, so the comparison is paired: each example
is a negative flip (right before, wrong after), a positive flip (wrong before, right after) or
unchanged, with counts ``n-``, ``n+``, ``n0`` over ``n`` examples. The change in accuracy is

    d = (n+ - n-) / n.

**Its interval** is a paired bootstrap over examples: the Bayesian bootstrap (Rubin 1981, "The
Bayesian bootstrap", Annals of Statistics), which re-weights the examples with Dirichlet
weights, with Jeffreys' prior. Every example of a kind carries the same ``+1``, ``0`` or ``-1``,
so a re-weighting's change is ``p+ - p-`` with ``(p-, p0, p+) ~ Dirichlet(n- + 1/2, n0 + 1/2,
n+ + 1/2)``: ``resamples`` draws cost O(resamples) whatever ``n``, with no loop over examples.
Jeffreys' half counts keep a slice with no flips from looking certain (a plain bootstrap of
five unchanged examples has no spread at all, and would call them proof); on large slices they
vanish and the draws match the ordinary bootstrap. ``low`` and ``high`` are the one-sided
bounds at ``confidence`` (the ``1 - confidence`` and ``confidence`` quantiles of the draws).

**The verdict**, with ``m`` the slice's ``max_drop`` (in accuracy points):

- ``fail``: ``high < -m``, the drop exceeds ``m`` with the stated confidence;
- ``pass``: ``low >= -m``, the drop is within ``m`` with the stated confidence;
- ``inconclusive``: the interval straddles ``-m``; ``needed`` estimates how many examples
  would decide it at the rates observed (normal approximation, per-example variance
  ``p+ + p- - (p+ - p-)^2`` from the Jeffreys-smoothed rates), or ``None`` when the change
  sits on the threshold and no size would.

A slice at a true drop of exactly ``m`` fails with probability ``1 - confidence`` (the test's
size); two models with the same true accuracy and ``m = 0`` likewise. Every slice is its own
test: with many slices, the chance that one of them fails by chance grows (raise
``confidence`` to hold the family's rate). McNemar's exact test (the flips alone, via scipy's
binomial test; ``mcnemar_p``) is reported beside, as the test that anything changed at all.

Exit codes for CI: 0 every slice passes, 1 a slice failed, 3 none failed but one is
inconclusive (2 is for usage and data errors).
"""

from __future__ import annotations

import difflib
import json
import math
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from forgetless.errors import ConfigError
from forgetless.production.slices import Slices, as_slices, check_slices, correct

#: The exit code of each verdict (2 is for usage and data errors).
EXIT_CODES = {"pass": 0, "fail": 1, "inconclusive": 3}
#: The name of the row over all examples of all slices; thresholds may name it.
OVERALL = "overall"
METHOD = "paired Bayesian bootstrap over examples, Jeffreys prior"


@dataclass(frozen=True)
class SliceVerdict:
    """One slice's comparison. Accuracies, ``change`` and its bounds are fractions (0.012 is
    1.2 points); ``max_drop`` is in points, as given.

    Attributes:
        name: the slice (``"overall"`` for all examples together).
        examples: ``n``.
        baseline_accuracy, candidate_accuracy: on the same ``n`` examples.
        change: ``candidate - baseline``.
        low, high: the one-sided bounds on the change at the gate's confidence.
        negative_flips: right before, wrong after (``n-``).
        positive_flips: wrong before, right after (``n+``).
        mcnemar_p: McNemar's exact two-sided p-value that flips go either way equally.
        max_drop: the largest acceptable drop, in points.
        verdict: ``pass``, ``fail`` or ``inconclusive``.
        needed: for an inconclusive slice, about how many examples would decide it at the rates
            observed (``None`` otherwise, or when no size would).
    """

    name: str
    examples: int
    baseline_accuracy: float
    candidate_accuracy: float
    change: float
    low: float
    high: float
    negative_flips: int
    positive_flips: int
    mcnemar_p: float
    max_drop: float
    verdict: str
    needed: int | None = None


@dataclass(frozen=True)
class GateResult:
    """The gate's decision: every slice, the overall row, and how they were computed.

    ``verdict`` is ``fail`` if any row (slices or overall) fails, else ``inconclusive`` if any
    is, else ``pass``; ``exit_code`` is its code for CI.
    """

    slices: list[SliceVerdict]
    overall: SliceVerdict
    confidence: float
    resamples: int
    seed: int
    method: str = METHOD

    @property
    def rows(self) -> list[SliceVerdict]:
        return [*self.slices, self.overall]

    @property
    def verdict(self) -> str:
        verdicts = {row.verdict for row in self.rows}
        for verdict in ("fail", "inconclusive"):
            if verdict in verdicts:
                return verdict
        return "pass"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def __getitem__(self, name: str) -> SliceVerdict:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "confidence": self.confidence,
            "resamples": self.resamples,
            "seed": self.seed,
            "method": self.method,
            "slices": [asdict(s) for s in self.slices],
            "overall": asdict(self.overall),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateResult:
        return cls(
            slices=[SliceVerdict(**s) for s in data["slices"]],
            overall=SliceVerdict(**data["overall"]),
            confidence=data["confidence"],
            resamples=data["resamples"],
            seed=data["seed"],
            method=data.get("method", METHOD),
        )

    def table(self, before: str = "before", after: str = "after") -> str:
        """The terminal table: one row per slice and overall, in points, then the verdict."""
        width = max(len("slice"), *(len(r.name) for r in self.rows))
        wb, wa = max(7, len(before)), max(7, len(after))
        bounds = f"{100 * self.confidence:g}% bounds"
        head = (
            f"{'slice':<{width}} {'n':>7} {before:>{wb}} {after:>{wa}} {'change':>7} "
            f"{bounds:>17} {'flips -/+':>11} {'max drop':>8}  verdict"
        )
        lines = [head]
        for row in self.rows:
            flips = f"{row.negative_flips}/{row.positive_flips}"
            verdict = row.verdict
            if row.verdict == "inconclusive":
                verdict += (
                    f" (needs ~{row.needed:,} examples)"
                    if row.needed
                    else " (the change sits on the threshold)"
                )
            interval = f"[{100 * row.low:+.1f}, {100 * row.high:+.1f}]"
            lines.append(
                f"{row.name:<{width}} {row.examples:>7} {100 * row.baseline_accuracy:>{wb}.1f} "
                f"{100 * row.candidate_accuracy:>{wa}.1f} {100 * row.change:>+7.1f} "
                f"{interval:>17} {flips:>11} {row.max_drop:>8g}  {verdict}"
            )
        lines.append(f"verdict: {self.verdict} (exit code {self.exit_code})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def read_thresholds(path: str | Path) -> dict[str, float]:
    """Per-slice ``max_drop`` (points) from a TOML file::

        max_drop = 1.0          # every slice not named below (optional)
        [slices]
        "segment 2019" = 0.5
        overall = 0.25

    A name in ``[slices]`` that no slice has is an error (at :func:`decide`). The default, if
    given, comes back under the key ``"*"``."""
    from forgetless.toml_file import read_toml

    data = read_toml(path, "thresholds file")
    unknown = sorted(set(data) - {"max_drop", "slices"})
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(unknown)}; expected max_drop and a [slices] table"
        )
    out = {}
    if "max_drop" in data:
        out["*"] = _points(data["max_drop"], f"{path}: max_drop")
    table = data.get("slices", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [slices] must be a table of slice names to points")
    for name, value in table.items():
        out[str(name)] = _points(value, f"{path}: slice {name!r}")
    return out


def _points(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{what} must be a number of accuracy points, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{what} must be >= 0 points, got {value!r}")
    return float(value)


def decide(
    baseline_correct: Mapping[str, torch.Tensor],
    candidate_correct: Mapping[str, torch.Tensor],
    max_drop: float = 1.0,
    confidence: float = 0.95,
    thresholds: Mapping[str, float] | str | Path | None = None,
    resamples: int = 10_000,
    seed: int = 0,
) -> GateResult:
    """The gate on per-example correctness: for each slice name, ``[n]`` booleans of whether
    the baseline and the candidate answered each example right (the same examples, in the same
    order). See the module docstring for the statistics.

    Args:
        max_drop: the largest acceptable drop in accuracy, in points, for every slice without
            a threshold of its own.
        confidence: of each one-sided bound, in (0.5, 1).
        thresholds: per-slice ``max_drop`` by name (a mapping, or a TOML file as in
            :func:`read_thresholds`); ``"overall"`` names the row over all slices.
        resamples: bootstrap draws per slice (>= 100).
        seed: of the draws; each slice's draws depend on the seed and its name only.
    """
    max_drop = _points(max_drop, "max_drop")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
        raise ConfigError(f"confidence must be a number in (0.5, 1), got {confidence!r}")
    if not 0.5 < confidence < 1:
        raise ConfigError(f"confidence must be in (0.5, 1), e.g. 0.95, got {confidence!r}")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 100:
        raise ConfigError(f"resamples must be an integer >= 100, got {resamples!r}")
    if set(baseline_correct) != set(candidate_correct) or not baseline_correct:
        raise ConfigError("the baseline and the candidate must be compared on the same slices")
    if isinstance(thresholds, (str, Path)):
        thresholds = read_thresholds(thresholds)
    thresholds = dict(thresholds or {})
    default = thresholds.pop("*", max_drop)
    names = list(baseline_correct)
    if OVERALL in names:
        raise ConfigError(f"{OVERALL!r} names the row over all slices; rename that slice")
    unknown = [n for n in thresholds if n not in names and n != OVERALL]
    if unknown:
        hint = difflib.get_close_matches(unknown[0], [*names, OVERALL], n=1)
        raise ConfigError(
            f"the thresholds name slice {unknown[0]!r}, which is not among the slices "
            f"({', '.join(names)})" + (f"; did you mean {hint[0]!r}?" if hint else "")
        )
    counts = {}
    for name in names:
        b = torch.as_tensor(baseline_correct[name]).bool().reshape(-1).cpu()
        c = torch.as_tensor(candidate_correct[name]).bool().reshape(-1).cpu()
        if len(b) != len(c):
            raise ConfigError(
                f"slice {name!r}: {len(b)} baseline answers but {len(c)} candidate answers"
            )
        if len(b) == 0:
            raise ConfigError(f"slice {name!r} is empty: it needs at least one example")
        counts[name] = _counts(b, c)
    total = np.sum(list(counts.values()), axis=0)
    rows = [
        _verdict(name, counts[name], _points(thresholds.get(name, default), name), confidence,
                 resamples, seed)
        for name in names
    ]  # fmt: skip
    overall = _verdict(
        OVERALL, total, _points(thresholds.get(OVERALL, default), OVERALL), confidence,
        resamples, seed,
    )  # fmt: skip
    return GateResult(rows, overall, float(confidence), resamples, seed)


def _counts(b: torch.Tensor, c: torch.Tensor) -> np.ndarray:
    """``[n-, n0, n+, baseline right]`` for one slice."""
    negative = int((b & ~c).sum())
    positive = int((~b & c).sum())
    return np.array([negative, len(b) - negative - positive, positive, int(b.sum())])


def _verdict(
    name: str, counts: np.ndarray, max_drop: float, confidence: float, resamples: int, seed: int
) -> SliceVerdict:
    from scipy import stats

    negative, same, positive, right_before = (int(v) for v in counts)
    n = negative + same + positive
    change = (positive - negative) / n
    # One generator per slice, from the seed and the name: a slice's draws do not depend on
    # which other slices are gated with it.
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    alpha = np.array([negative, same, positive], dtype=np.float64) + 0.5
    draws = rng.dirichlet(alpha, size=resamples)
    changes = draws[:, 2] - draws[:, 0]
    low, high = np.quantile(changes, [1 - confidence, confidence])
    threshold = -max_drop / 100
    needed = None
    if high < threshold:
        verdict = "fail"
    elif low >= threshold:
        verdict = "pass"
    else:
        verdict = "inconclusive"
        needed = _needed(alpha / alpha.sum(), change, threshold, confidence, n)
    discordant = negative + positive
    p = stats.binomtest(negative, discordant, 0.5).pvalue if discordant else 1.0
    return SliceVerdict(
        name=name,
        examples=n,
        baseline_accuracy=right_before / n,
        candidate_accuracy=(right_before - negative + positive) / n,
        change=change,
        low=float(low),
        high=float(high),
        negative_flips=negative,
        positive_flips=positive,
        mcnemar_p=float(p),
        max_drop=max_drop,
        verdict=verdict,
        needed=needed,
    )


def _needed(
    rates: np.ndarray, change: float, threshold: float, confidence: float, n: int
) -> int | None:
    """Examples for a one-sided bound at ``confidence`` to clear ``threshold`` at these rates:
    ``z sqrt(v / N) < |change - threshold|``, with ``v`` the per-example variance of the
    change."""
    from scipy import stats

    gap = abs(change - threshold)
    if gap < 1e-12:
        return None
    p_neg, _, p_pos = rates
    variance = p_pos + p_neg - (p_pos - p_neg) ** 2
    z = stats.norm.ppf(confidence)
    return max(n + 1, math.ceil(variance * (z / gap) ** 2))


def gate(
    baseline: nn.Module,
    candidate: nn.Module,
    slices: Any,
    *,
    max_drop: float = 1.0,
    confidence: float = 0.95,
    thresholds: Mapping[str, float] | str | Path | None = None,
    resamples: int = 10_000,
    seed: int = 0,
    batch_size: int = 1024,
    device: str = "cpu",
    data_dir: str | None = None,
) -> GateResult:
    """Gate ``candidate`` against ``baseline`` on old-data ``slices``: per slice and overall,
    both accuracies on the same examples, the paired change with its bounds, the flips and a
    verdict (see :func:`decide` and the module docstring).

    Args:
        baseline, candidate: the deployed model and its proposed update (same outputs).
        slices: a folder of ``.npz`` files, one ``.npz`` (with a ``slice`` array or not),
            ``stream:NAME``, a :class:`~forgetless.scenarios.Stream`, or a mapping of names to
            ``(x, y)`` pairs (see :mod:`forgetless.production.slices`).
        max_drop, confidence, thresholds, resamples, seed: as for :func:`decide`.
        batch_size: examples per forward pass.
        device: where the models run.
        data_dir: for ``stream:NAME`` slices, where the data is.

    Returns:
        The :class:`GateResult`; ``result.exit_code`` is what ``forgetless gate`` exits with.
    """
    sets: Slices = as_slices(slices, data_dir)
    baseline.to(device)
    candidate.to(device)
    outputs = check_slices(sets, baseline, device)
    other = check_slices(sets, candidate, device)
    if other != outputs:
        raise ConfigError(
            f"the baseline has {outputs} outputs and the candidate {other}: they must answer "
            "the same classes"
        )
    before = {n: correct(baseline, s, batch_size, device) for n, s in sets.items()}
    after = {n: correct(candidate, s, batch_size, device) for n, s in sets.items()}
    return decide(before, after, max_drop, confidence, thresholds, resamples, seed)
