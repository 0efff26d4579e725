"""Input drift: is a new batch drawn from the distribution of a reference sample?

Two tests, on the inputs (flattened) or on a layer's features:

- **MMD** (Gretton et al. 2012, "A kernel two-sample test", JMLR): the unbiased estimate of the
  squared maximum mean discrepancy with a Gaussian kernel ``k(a, b) = exp(-||a - b||^2 /
  (2 sigma^2))``, ``sigma`` the median distance between pooled points (the median heuristic),

      MMD^2_u = sum_{i != j} k(x_i, x_j) / (n (n - 1)) + sum_{i != j} k(y_i, y_j) / (m (m - 1))
                - 2 sum_{i, j} k(x_i, y_j) / (n m),

  with a permutation p-value: the pooled points are re-split at random ``permutations`` times
  and ``p = (1 + #{MMD^2 of a split >= observed}) / (1 + permutations)``. The statistic of
  every split comes from one kernel matrix through matrix products of split indicators, so the
  permutations cost ``permutations x N^2`` multiply-adds and no Python loop. Each side is
  subsampled to ``max_samples`` points (the kernel matrix is ``N^2``).
- **Kolmogorov-Smirnov** per feature (``scipy.stats.ks_2samp``, all the examples), with the
  Benjamini-Hochberg correction over features (``scipy.stats.false_discovery_control``;
  ``correction="bonferroni"`` for the family-wise bound). Features constant in both samples
  give ``p = 1``.

The verdict is ``drift`` when either test is significant at ``alpha / 2`` (Bonferroni over the
two, so that a batch from the reference distribution is flagged with probability at most
``alpha``); the exit codes are the gate's: 0 no drift, 1 drift, 2 usage or data errors.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from forgetless.errors import ConfigError, DataError

CORRECTIONS = ("bh", "bonferroni")
EXIT_CODES = {"no drift": 0, "drift": 1}


@dataclass(frozen=True)
class DriftResult:
    """One batch against the reference.

    Attributes:
        verdict: ``"drift"`` or ``"no drift"``.
        alpha: the significance level of the whole verdict.
        mmd2: the unbiased MMD^2 estimate; ``mmd_p`` its permutation p-value.
        bandwidth: the kernel's ``sigma``.
        ks_p: the smallest corrected per-feature KS p-value; ``ks_statistic`` the largest KS
            statistic; ``drifted_features`` how many features have a corrected p below
            ``alpha / 2``; ``features`` how many were tested; ``top_features`` the indices of
            up to ten with the smallest p-values.
        reference_examples, batch_examples: the sample sizes (MMD uses up to ``max_samples``
            of each); ``permutations``; ``correction``; ``space``: ``"inputs"`` or the layer.
    """

    verdict: str
    alpha: float
    mmd2: float
    mmd_p: float
    bandwidth: float
    ks_p: float
    ks_statistic: float
    drifted_features: int
    features: int
    top_features: list[int]
    reference_examples: int
    batch_examples: int
    permutations: int
    correction: str
    space: str

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exit_code": self.exit_code}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def summary(self) -> str:
        return (
            f"MMD^2 {self.mmd2:.4g} (p {self.mmd_p:.3g}, {self.permutations} permutations, "
            f"sigma {self.bandwidth:.3g}); KS: {self.drifted_features}/{self.features} features "
            f"drifted (smallest {self.correction}-corrected p {self.ks_p:.3g}, largest "
            f"statistic {self.ks_statistic:.3f}); {self.reference_examples} reference vs "
            f"{self.batch_examples} batch examples on the {self.space}: {self.verdict.upper()}"
        )


def mmd_test(
    x: torch.Tensor,
    y: torch.Tensor,
    permutations: int = 1000,
    seed: int = 0,
    bandwidth: float | None = None,
) -> tuple[float, float, float]:
    """``(MMD^2_u, permutation p-value, sigma)`` for samples ``x`` ``[n, D]`` and ``y``
    ``[m, D]`` (see the module docstring)."""
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise DataError(f"MMD needs at least 2 examples on each side, got {n} and {m}")
    pooled = torch.cat([x, y]).to(torch.float64)
    squared = torch.cdist(pooled, pooled).pow_(2)
    if bandwidth is None:
        off = squared[~torch.eye(len(pooled), dtype=torch.bool)]
        median = float(off.median())
        bandwidth = max(median, 1e-12) ** 0.5
    # float32 from here: the permutations' products are the cost, and their rounding (about
    # 1e-7 relative) is far below the spread of the statistic between splits.
    kernel = torch.exp(-squared / (2 * bandwidth**2)).to(torch.float32)
    total = float(kernel.sum(dtype=torch.float64))
    generator = torch.Generator().manual_seed(seed)
    observed = torch.zeros(1, n + m)
    observed[0, :n] = 1
    stat = float(_mmd2(observed, kernel, total, n, m)[0])
    exceed = 0
    for start in range(0, permutations, 256):
        rows = min(256, permutations - start)
        order = torch.rand(rows, n + m, generator=generator).argsort(dim=1)
        split = torch.zeros(rows, n + m)
        split.scatter_(1, order[:, :n], 1.0)
        exceed += int((_mmd2(split, kernel, total, n, m) >= stat).sum())
    return stat, (1 + exceed) / (1 + permutations), float(bandwidth)


def _mmd2(split: torch.Tensor, kernel: torch.Tensor, total: float, n: int, m: int) -> torch.Tensor:
    """MMD^2_u of each row's split (1: the x side), from the kernel matrix: with ``a`` the
    indicator of x and ``b = 1 - a``, ``a K a``, ``a K b`` and ``b K b = 1 K 1 - a K a - 2 a K
    b``; the diagonal (``k(z, z) = 1``) is left out of the within-sample sums."""
    ak = split @ kernel
    aka = (ak * split).sum(dim=1, dtype=torch.float64)
    akb = ak.sum(dim=1, dtype=torch.float64) - aka
    bkb = total - aka - 2 * akb
    return (aka - n) / (n * (n - 1)) + (bkb - m) / (m * (m - 1)) - 2 * akb / (n * m)


def ks_test(
    x: np.ndarray, y: np.ndarray, correction: str = "bh"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-feature two-sample KS statistics, p-values and corrected p-values, for ``x``
    ``[n, D]`` and ``y`` ``[m, D]``."""
    from scipy import stats

    if correction not in CORRECTIONS:
        raise ConfigError(f"correction must be one of {', '.join(CORRECTIONS)}, got {correction!r}")
    statistic = np.zeros(x.shape[1])
    p = np.ones(x.shape[1])
    # A feature constant in both samples (a border pixel) cannot differ: p = 1, statistic 0.
    live = (np.ptp(x, axis=0) > 0) | (np.ptp(y, axis=0) > 0) | (x[0] != y[0])
    if live.any():
        result = stats.ks_2samp(x[:, live], y[:, live], axis=0)
        statistic[live] = result.statistic
        p[live] = result.pvalue
    if correction == "bh":
        adjusted = stats.false_discovery_control(p, method="bh")
    else:
        adjusted = np.minimum(p * len(p), 1.0)
    return statistic, p, adjusted


def layer_features(
    model: nn.Module, layer: str, x: torch.Tensor, batch_size: int = 1024, device: str = "cpu"
) -> torch.Tensor:
    """The outputs of ``model``'s submodule named ``layer`` on inputs ``x``, flattened to
    ``[N, D]`` (eval mode, no gradients)."""
    names = [name for name, _ in model.named_modules() if name]
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        raise ConfigError(
            f"the model has no layer {layer!r}; its layers: {', '.join(names[:12])}"
            + (" ..." if len(names) > 12 else "")
        ) from None
    captured: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        if not isinstance(output, torch.Tensor):
            raise ConfigError(f"layer {layer!r} returns a {type(output).__name__}, not a tensor")
        captured.append(output.detach().flatten(1).cpu())

    handle = module.register_forward_hook(hook)
    was_training = model.training
    model.eval().to(device)
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                model(x[start : start + batch_size].to(device))
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(captured)


def drift(
    reference: Any,
    batch: Any,
    *,
    alpha: float = 0.05,
    permutations: int = 1000,
    max_samples: int = 1000,
    correction: str = "bh",
    seed: int = 0,
    model: nn.Module | None = None,
    layer: str | None = None,
    batch_size: int = 1024,
    device: str = "cpu",
) -> DriftResult:
    """Test whether ``batch`` comes from ``reference``'s distribution (see the module
    docstring).

    Args:
        reference, batch: inputs ``[N, ...]`` (arrays, tensors, an ArraySet, an ``(x, y)``
            pair or an ``.npz`` path with an ``x`` array; labels are not used).
        alpha: the level of the verdict, in (0, 1).
        permutations: splits for the MMD p-value (>= 1).
        max_samples: points per side in the MMD (a random subset beyond; KS uses all).
        correction: over KS features, ``"bh"`` or ``"bonferroni"``.
        seed: of the subsampling and the permutations.
        model, layer: test on the features ``layer`` of ``model`` computes, not the inputs.
    """
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), e.g. 0.05, got {alpha!r}")
    for name, value, least in (("permutations", permutations, 1), ("max_samples", max_samples, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{name} must be an integer >= {least}, got {value!r}")
    ref = _inputs(reference, "reference")
    new = _inputs(batch, "batch")
    if ref.shape[1:] != new.shape[1:]:
        raise DataError(
            f"the reference's inputs are {list(ref.shape[1:])} and the batch's "
            f"{list(new.shape[1:])}: they must have one shape"
        )
    space = "inputs"
    if layer is not None:
        if model is None:
            raise ConfigError("features of a layer need the model (--model and --weights)")
        ref = layer_features(model, layer, ref, batch_size, device)
        new = layer_features(model, layer, new, batch_size, device)
        space = f"features of layer {layer!r}"
    ref, new = ref.flatten(1).to(torch.float64), new.flatten(1).to(torch.float64)
    generator = torch.Generator().manual_seed(seed)
    sub_ref = ref[torch.randperm(len(ref), generator=generator)[:max_samples]]
    sub_new = new[torch.randperm(len(new), generator=generator)[:max_samples]]
    mmd2, mmd_p, bandwidth = mmd_test(sub_ref, sub_new, permutations, seed)
    statistic, _, adjusted = ks_test(ref.numpy(), new.numpy(), correction)
    level = alpha / 2
    drifted = mmd_p < level or float(adjusted.min()) < level
    return DriftResult(
        verdict="drift" if drifted else "no drift",
        alpha=float(alpha),
        mmd2=mmd2,
        mmd_p=mmd_p,
        bandwidth=bandwidth,
        ks_p=float(adjusted.min()),
        ks_statistic=float(statistic.max()),
        drifted_features=int((adjusted < level).sum()),
        features=int(ref.shape[1]),
        top_features=[int(i) for i in np.argsort(adjusted, kind="stable")[:10]],
        reference_examples=len(ref),
        batch_examples=len(new),
        permutations=permutations,
        correction=correction,
        space=space,
    )


def _inputs(data: Any, what: str) -> torch.Tensor:
    from forgetless.data.arrays import ArraySet
    from forgetless.production.slices import read_npz

    if isinstance(data, ArraySet):
        x = data.inputs()
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x = torch.as_tensor(np.asarray(data[0]) if not torch.is_tensor(data[0]) else data[0])
    elif isinstance(data, (str,)) or hasattr(data, "__fspath__"):
        x = torch.as_tensor(read_npz(data, need_y=False)["x"])
    else:
        x = torch.as_tensor(np.asarray(data) if not torch.is_tensor(data) else data)
    if x.ndim < 2 or len(x) < 2:
        raise DataError(f"the {what} must be [N, ...] inputs with N >= 2, got {list(x.shape)}")
    if x.dtype == torch.bool or x.is_complex():
        raise DataError(f"the {what}'s inputs must be numbers, got {x.dtype}")
    x = x.to(torch.float32)
    if not torch.isfinite(x).all():
        raise DataError(f"the {what} holds NaN or infinite values")
    return x
