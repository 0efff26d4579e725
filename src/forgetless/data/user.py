"""The user's own data: arrays, tensors, or any ``torch.utils.data.Dataset``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from forgetless.data.arrays import ArraySet, SourceData, check_finite
from forgetless.errors import ConfigError
from forgetless.validation import check_range


def as_tensor(values: Any, name: str) -> torch.Tensor:
    """``values`` (numpy array, tensor or nested sequence) as a CPU tensor; clear error otherwise."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu()
    try:
        return torch.as_tensor(np.asarray(values))
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"{name} must be an array or tensor, got {type(values).__name__}: {err}"
        ) from err


def from_arrays(
    x_train: Any,
    y_train: Any,
    x_test: Any,
    y_test: Any,
    name: str = "arrays",
    class_names: Sequence[str] = (),
    scale: float | None = None,
) -> SourceData:
    """Wrap in-memory arrays as a source.

    Args:
        x_train, y_train, x_test, y_test: inputs ``[N, *shape]`` and integer labels ``[N]``.
        name: a name for reports.
        class_names: one name per class; by default ``"0"``, ``"1"``, ...
        scale: factor turning stored inputs into model inputs (e.g. ``1/255`` for uint8 images).
            Integer inputs without a scale are converted to float32 as they are.

    Returns:
        SourceData ready for any scenario builder.
    """
    if scale is not None:
        scale = check_range("scale", scale, 0.0, low_open=True)  # finite: inf makes inputs inf
    sets = []
    for split, (x, y) in {"train": (x_train, y_train), "test": (x_test, y_test)}.items():
        xt, yt = as_tensor(x, f"x_{split}"), as_tensor(y, f"y_{split}")
        if len(xt) == 0 or len(yt) == 0:
            raise ConfigError(
                f"the {split} set is empty (x_{split} has {len(xt)} rows, y_{split} "
                f"{len(yt)}); every task needs examples to {'fit' if split == 'train' else 'measure'}"
            )
        check_finite(xt, f"x_{split}")
        check_finite(yt, f"y_{split}")
        if yt.is_floating_point() and not torch.equal(yt, yt.round()):
            raise ConfigError(f"y_{split} must hold integer class labels, got non-integer floats")
        if len(yt) and int(yt.min()) < 0:
            raise ConfigError(f"y_{split} must hold labels 0..C-1, found {int(yt.min())}")
        if scale is None and not xt.is_floating_point():
            xt = xt.to(torch.float32)
        sets.append(ArraySet(xt, yt.long(), scale))
    return SourceData(name, sets[0], sets[1], tuple(class_names))


def from_dataset(
    train: torch.utils.data.Dataset,
    test: torch.utils.data.Dataset,
    name: str = "dataset",
    class_names: Sequence[str] = (),
    batch_size: int = 1024,
) -> SourceData:
    """Materialise map-style ``torch.utils.data.Dataset`` objects yielding ``(x, y)`` as tensors.

    The data sets are read once, in batches, through a DataLoader; training then indexes the
    tensors directly, so the loop never pays per-sample Python again.
    """
    return from_arrays(
        *_materialise(train, "train", batch_size),
        *_materialise(test, "test", batch_size),
        name=name,
        class_names=class_names,
    )


def _materialise(dataset: torch.utils.data.Dataset, split: str, batch_size: int):
    try:
        n = len(dataset)  # type: ignore[arg-type]
    except TypeError as err:
        raise ConfigError(f"the {split} dataset must be map-style (define __len__)") from err
    if n == 0:
        raise ConfigError(f"the {split} dataset is empty")
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    xs, ys = [], []
    for item in loader:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise ConfigError(f"the {split} dataset must yield (x, y) pairs")
        xs.append(torch.as_tensor(item[0]))
        ys.append(torch.as_tensor(item[1]))
    return torch.cat(xs), torch.cat(ys)
