"""Named slices of data (old user segments, cohorts, the new data): loaded, checked, evaluated.

A slice is an :class:`~forgetless.data.arrays.ArraySet` of inputs and labels; a set of slices
is an ordered ``dict`` of them by name. On disk (:func:`load_slices`):

- a folder of ``.npz`` files, each with arrays ``x`` and ``y``: one slice per file, named by
  the file's stem, in name order;
- one ``.npz`` with ``x``, ``y`` and a ``slice`` array naming each example's slice (strings or
  integers), in order of first appearance; without ``slice``, the file is one slice;
- ``stream:NAME``: the test sets of a stream's tasks (e.g. ``stream:split-mnist``), named by
  the tasks.

Files are data: ``np.load(..., allow_pickle=False)`` refuses object arrays. Inputs go to the
model as float32, exactly as stored: store what the model takes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from forgetless.data.arrays import ArraySet
from forgetless.errors import ConfigError, DataError

Slices = dict[str, ArraySet]


def read_npz(path: str | Path, need_y: bool = True) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file, never unpickling (object arrays are refused)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no data file {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except ValueError as err:  # object arrays need pickle
        raise DataError(f"{path}: {err} (forgetless reads plain numeric arrays only)") from None
    except Exception as err:
        raise DataError(f"cannot read {path} as an .npz file: {err}") from None
    need = ("x", "y") if need_y else ("x",)
    absent = [k for k in need if k not in arrays]
    if absent:
        raise DataError(
            f"{path} has no array {' or '.join(map(repr, absent))} (it has "
            f"{', '.join(sorted(arrays)) or 'none'}); expected x [N, ...] and y [N] labels"
        )
    return arrays


def to_set(x: Any, y: Any, name: str) -> ArraySet:
    """Inputs and integer labels as an :class:`ArraySet` (inputs as float32), checked."""
    x = np.asarray(x) if not isinstance(x, torch.Tensor) else x
    y = np.asarray(y) if not isinstance(y, torch.Tensor) else y
    xt = torch.as_tensor(x)
    yt = torch.as_tensor(y)
    if xt.dtype == torch.bool or not (xt.is_floating_point() or _is_integer(xt)):
        raise DataError(f"slice {name!r}: x must hold numbers, got dtype {xt.dtype}")
    if xt.ndim < 2:
        raise DataError(
            f"slice {name!r}: x must be [N, ...] with one row per example, got shape "
            f"{tuple(xt.shape)}"
        )
    if len(xt) == 0:
        raise DataError(f"slice {name!r} is empty: it needs at least one example")
    if yt.ndim != 1 or len(yt) != len(xt):
        raise DataError(
            f"slice {name!r}: y must be [N] labels, one per row of x: x has {len(xt)} rows, "
            f"y has shape {tuple(yt.shape)}"
        )
    if yt.is_floating_point():
        if not torch.equal(yt, yt.round()):
            raise DataError(f"slice {name!r}: y must hold integer class labels")
    elif not _is_integer(yt):
        raise DataError(f"slice {name!r}: y must hold integer class labels, got {yt.dtype}")
    xt = xt.to(torch.float32)
    if not torch.isfinite(xt).all():
        raise DataError(f"slice {name!r}: x holds NaN or infinite values")
    return ArraySet(xt, yt.long())


def _is_integer(t: torch.Tensor) -> bool:
    return not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool


def load_slices(spec: str | Path, data_dir: str | None = None, seed: int = 0) -> Slices:
    """Slices from a folder of ``.npz`` files, one ``.npz`` (with or without a ``slice``
    array), or ``stream:NAME`` (see the module docstring)."""
    text = str(spec)
    if text.startswith("stream:"):
        from forgetless.scenarios import make_stream

        stream = make_stream(text.removeprefix("stream:"), seed=seed, data_dir=data_dir)
        return {task.name: task.test for task in stream.tasks}
    path = Path(spec)
    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if not files:
            raise ConfigError(f"the slices folder {path} holds no .npz files")
        slices = {}
        for file in files:
            arrays = read_npz(file)
            slices[file.stem] = to_set(arrays["x"], arrays["y"], file.stem)
        return slices
    if not path.is_file():
        raise ConfigError(
            f"no slices at {path}: give a folder of .npz files, one .npz, or stream:NAME"
        )
    arrays = read_npz(path)
    if "slice" not in arrays:
        return {path.stem: to_set(arrays["x"], arrays["y"], path.stem)}
    names = arrays["slice"]
    if names.ndim != 1 or len(names) != len(arrays["x"]):
        raise DataError(
            f"{path}: slice must name each example's slice, one per row of x ({len(arrays['x'])}"
            f"), got shape {names.shape}"
        )
    labels = [str(v) for v in names.tolist()]
    order = list(dict.fromkeys(labels))
    slices = {}
    for name in order:
        rows = np.flatnonzero(np.asarray(labels) == name)
        slices[name] = to_set(arrays["x"][rows], arrays["y"][rows], name)
    return slices


def as_slices(slices: Any, data_dir: str | None = None) -> Slices:
    """``slices`` as a dict of named sets: a path or ``stream:NAME`` (:func:`load_slices`), a
    :class:`~forgetless.scenarios.Stream` (its tasks' test sets), or a mapping of names to
    ``(x, y)`` pairs or :class:`ArraySet` objects."""
    from forgetless.scenarios import Stream

    if isinstance(slices, (str, Path)):
        return load_slices(slices, data_dir)
    if isinstance(slices, Stream):
        return {task.name: task.test for task in slices.tasks}
    if not isinstance(slices, Mapping) or not slices:
        raise ConfigError(
            "slices must be a path, stream:NAME, a Stream, or a non-empty mapping of names to "
            f"(x, y) pairs, got {type(slices).__name__}"
        )
    out = {}
    for name, value in slices.items():
        if isinstance(value, ArraySet):
            if len(value) == 0:
                raise DataError(f"slice {name!r} is empty: it needs at least one example")
            out[str(name)] = value
        elif isinstance(value, (tuple, list)) and len(value) == 2:
            out[str(name)] = to_set(value[0], value[1], str(name))
        else:
            raise ConfigError(f"slice {name!r} must be an (x, y) pair, got {type(value).__name__}")
    return out


def check_slices(slices: Slices, model: nn.Module, device: str | torch.device = "cpu") -> int:
    """Check that every slice fits ``model``: one input shape, inputs the model takes, labels
    within its outputs. Returns the model's number of outputs."""
    shapes = {name: s.shape for name, s in slices.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{n} {list(v)}" for n, v in shapes.items())
        raise DataError(f"the slices' inputs differ in shape: {listed}")
    name, first = next(iter(slices.items()))
    outputs = output_width(model, first.inputs(slice(0, 2)), device, f"slice {name!r}")
    for name, s in slices.items():
        low, high = int(s.y.min()), int(s.y.max())
        if low < 0 or high >= outputs:
            raise DataError(
                f"slice {name!r}: labels must be in 0..{outputs - 1} (the model's {outputs} "
                f"outputs), found {low if low < 0 else high}"
            )
    return outputs


def output_width(
    model: nn.Module, x: torch.Tensor, device: str | torch.device, what: str = "the data"
) -> int:
    """The model's number of outputs on the example inputs ``x``; a clear error if it cannot
    take them or does not return ``[batch, outputs]`` scores."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x.to(device))
    except Exception as err:
        raise DataError(
            f"{what}: the model cannot take inputs of shape {list(x.shape[1:])}: "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DataError(f"{what}: the model must return [batch, classes] scores, got {shape}")
    return out.shape[1]


@torch.no_grad()
def correct(
    model: nn.Module, data: ArraySet, batch_size: int = 1024, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """``[N]`` booleans: whether ``model``'s top class is each example's label (eval mode,
    batches of ``batch_size``)."""
    was_training = model.training
    model.eval()
    try:
        hits = []
        for start in range(0, len(data), batch_size):
            rows = slice(start, start + batch_size)
            scores = model(data.inputs(rows).to(device))
            hits.append(scores.argmax(dim=1).cpu() == data.y[rows])
        return torch.cat(hits)
    finally:
        model.train(was_training)
