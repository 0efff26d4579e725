"""The one container every source returns: labelled examples as tensors."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from forgetless.errors import ConfigError, DataError


def check_finite(values: torch.Tensor, name: str) -> None:
    """Raise a DataError naming ``name`` if the float tensor ``values`` holds NaN or infinity
    (one pass over the data; integer tensors cannot). A single NaN input makes every loss NaN
    and every later number meaningless, so it is refused where the data comes in."""
    if not values.is_floating_point() and not values.is_complex():
        return
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        count = int(bad.sum())
        row = int(bad.reshape(len(values), -1).any(dim=1).nonzero()[0]) if values.ndim else 0
        raise DataError(
            f"{name} holds {count} NaN or infinite value(s) (the first in row {row}); "
            "replace or drop those examples before training"
        )


def rows(tensor: torch.Tensor, index: torch.Tensor | slice) -> torch.Tensor:
    """``tensor[index]`` along the first dimension. A 1-D tensor of integer indices goes
    through ``index_select``, which gathers the same rows several times faster than advanced
    indexing (a batch of 128 MNIST images: 28 against 130 us on this project's machine)."""
    if (
        isinstance(index, torch.Tensor)
        and index.ndim == 1
        and index.dtype in (torch.int64, torch.int32)
        and index.device == tensor.device
    ):
        return tensor.index_select(0, index)
    return tensor[index]


@dataclass(frozen=True)
class ArraySet(torch.utils.data.Dataset):
    """Labelled examples held as whole tensors, indexed in batches; also a
    ``torch.utils.data.Dataset`` (``set[i]`` is ``(input, target)``, the input as the model
    takes it), so ``DataLoader(stream[0].train, batch_size=64)`` works.

    Attributes:
        x: inputs, ``[N, *shape]``. Images stay in their compact storage dtype (uint8) and are
            scaled to floats a batch at a time, so long streams of image tasks stay small.
            Token sequences are int64 ids ``[N, T]``, given to the model as they are.
        y: integer targets (int64): a label per example, ``[N]``, or one per position,
            ``[N, *positions]`` (next-token targets ``[N, T]`` for text).
        scale: factor turning stored ``x`` into model inputs (``1/255`` for 8-bit images);
            ``None`` when ``x`` already holds model inputs (floats, or int64 token ids).
        shift: added after scaling, so a model input is ``x * scale + shift``; 0 but for
            standardised inputs (:meth:`standardized`).
    """

    x: torch.Tensor
    y: torch.Tensor
    scale: float | None = None
    shift: float = 0.0

    def __post_init__(self) -> None:
        if self.x.ndim < 2:
            raise ConfigError(
                f"x must be [N, *shape] with at least 2 dimensions, got {tuple(self.x.shape)}"
            )
        if self.y.ndim < 1 or len(self.y) != len(self.x):
            raise ConfigError(
                f"y must hold one label per input (or one row of targets per input sequence): x has "
                f"{len(self.x)} rows, y has shape {tuple(self.y.shape)}"
            )
        if self.y.dtype != torch.int64:
            object.__setattr__(self, "y", self.y.long())
        # int64 inputs are token ids (an embedding's input); other integer storage is images.
        if self.scale is None and not (self.x.is_floating_point() or self.x.dtype == torch.int64):
            raise ConfigError(
                f"x of dtype {self.x.dtype} needs a scale (e.g. 1/255 for 8-bit images); "
                "token ids must be int64"
            )
        if self.shift and self.scale is None:
            raise ConfigError("a shift of the inputs needs a scale (1.0 for float inputs)")

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int | slice | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, targets)`` of the rows in ``index`` (one row for an int), the inputs as
        the model takes them (floats for images), as a ``Dataset`` gives them."""
        x = self.x[index]
        if self.scale is not None:
            x = x.to(torch.float32) * self.scale  # never in place: x may be a view
        return x, self.y[index]

    def to(self, device: torch.device | str) -> ArraySet:
        """The same set on ``device`` (itself if it is there already)."""
        x, y = self.x.to(device), self.y.to(device)
        if x is self.x and y is self.y:
            return self
        return ArraySet(x, y, self.scale, self.shift)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one input example."""
        return tuple(self.x.shape[1:])

    @property
    def input_dtype(self) -> torch.dtype:
        """The dtype of the model inputs :meth:`inputs` gives: float32 for scaled storage
        (images), else the stored one (int64 token ids, float inputs)."""
        return self.x.dtype if self.scale is None else torch.float32

    @property
    def target_shape(self) -> tuple[int, ...]:
        """Shape of one example's targets: ``()`` for a label, ``(T,)`` for a token sequence."""
        return tuple(self.y.shape[1:])

    def inputs(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Model-ready float inputs for the rows in ``index`` (all rows if ``None``)."""
        x = self.x if index is None else rows(self.x, index)
        if self.scale is None:
            return x
        # Float32 storage: a new tensor (x may be the stored one); other storage: scaled in the
        # float32 copy that .to makes.
        out = (
            x.mul(self.scale) if x.dtype == torch.float32 else x.to(torch.float32).mul_(self.scale)
        )
        return out.add_(self.shift) if self.shift else out

    def standardized(self, mean: float, std: float) -> ArraySet:
        """The same examples with model inputs ``(inputs - mean) / std`` (no copy of ``x``:
        the scale and shift change).

        Raises:
            ConfigError: ``std`` not positive, or token ids (which are not measurements).
        """
        if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
            raise ConfigError(f"standardising needs a finite mean and a std > 0, got {mean}, {std}")
        if self.scale is None and not self.x.is_floating_point():
            raise ConfigError("token ids cannot be standardised: only real-valued inputs can")
        scale = 1.0 if self.scale is None else self.scale
        return ArraySet(self.x, self.y, scale / std, (self.shift - mean) / std)

    def moments(self) -> tuple[int, float, float]:
        """``(n, sum, sum of squares)`` of every model input value, in float64: exact from a
        histogram for 8-bit storage, else summed a chunk at a time."""
        s, b = (1.0, 0.0) if self.scale is None else (self.scale, self.shift)
        n = self.x.numel()
        if self.x.dtype == torch.uint8:
            counts = torch.bincount(self.x.flatten(), minlength=256).double()
            values = torch.arange(256, dtype=torch.float64)
            total, squares = float(counts @ values), float(counts @ values.square())
        else:
            total = squares = 0.0
            for chunk in self.x.reshape(len(self.x), -1).split(4096):
                chunk = chunk.double()
                total += float(chunk.sum())
                squares += float(chunk.square().sum())
        # Moments of x * s + b from those of x.
        return n, s * total + b * n, s * s * squares + 2 * s * b * total + b * b * n

    @property
    def lazy_inputs(self) -> LazyInputs:
        """The model-ready inputs as an indexable view: ``view[rows]`` is ``inputs(rows)``, so
        a consumer that reads a chunk at a time never holds all of them as floats."""
        return LazyInputs(self)

    def subset(self, index: torch.Tensor) -> ArraySet:
        """The rows in ``index`` as a new set (a copy)."""
        return ArraySet(self.x[index], self.y[index], self.scale, self.shift)

    def with_labels(self, y: torch.Tensor) -> ArraySet:
        """The same inputs with other labels."""
        return ArraySet(self.x, y, self.scale, self.shift)

    @staticmethod
    def concat(parts: list[ArraySet]) -> ArraySet:
        """Stack several sets into one; mixed storage is promoted to float inputs."""
        if not parts:
            raise ConfigError("cannot concatenate an empty list of sets")
        if len({p.shape for p in parts}) != 1:
            raise ConfigError(
                f"cannot concatenate sets of different input shapes: {[p.shape for p in parts]}"
            )
        y = torch.cat([p.y for p in parts])
        scales = {(p.scale, p.shift) for p in parts}
        dtypes = {p.x.dtype for p in parts}
        if len(scales) == 1 and len(dtypes) == 1:
            return ArraySet(torch.cat([p.x for p in parts]), y, parts[0].scale, parts[0].shift)
        return ArraySet(torch.cat([p.inputs() for p in parts]), y, None)


@dataclass(frozen=True)
class SourceData:
    """A data set as a source delivers it: train and test sets plus class names."""

    name: str
    train: ArraySet
    test: ArraySet
    class_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.train.shape != self.test.shape:
            raise ConfigError(
                f"{self.name}: train inputs {self.train.shape} and test inputs {self.test.shape} differ"
            )
        if not self.class_names:
            n = int(max(self.train.y.max(), self.test.y.max())) + 1
            object.__setattr__(self, "class_names", tuple(str(i) for i in range(n)))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __repr__(self) -> str:
        return (
            f"SourceData({self.name!r}, train={len(self.train)}, test={len(self.test)}, "
            f"shape={self.train.shape}, classes={self.num_classes})"
        )


class LazyInputs:
    """``len(view)`` rows; ``view[rows]`` gives :meth:`ArraySet.inputs` of those rows."""

    def __init__(self, data: ArraySet):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: torch.Tensor | slice) -> torch.Tensor:
        return self.data.inputs(index)
