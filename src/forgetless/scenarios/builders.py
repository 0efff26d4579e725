"""Scenario builders: each turns sources into a Stream, deterministically from a seed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from forgetless.data.arrays import ArraySet, SourceData
from forgetless.errors import ConfigError
from forgetless.scenarios.stream import Protocol, Stream, Task


@dataclass(frozen=True)
class _Part:
    """A task before the protocol assigns output units: labels are local, ``0..k-1``."""

    name: str
    train: ArraySet
    test: ArraySet
    class_names: tuple[str, ...]
    # Output unit of each local class under task-/class-IL; None: the next free units.
    unit_ids: tuple[int, ...] | None = None


def _assemble(name: str, parts: list[_Part], protocol: Protocol | str, seed: int) -> Stream:
    protocol = Protocol.parse(protocol)
    if protocol is Protocol.DOMAIN:
        sizes = {len(p.class_names) for p in parts}
        if len(sizes) != 1:
            raise ConfigError(
                f"{name}: the domain-incremental protocol needs the same classes in every task, "
                f"but the tasks have {sorted(sizes)} classes; use --protocol task or class, "
                "or a number of tasks that divides the classes evenly"
            )
        k = sizes.pop()
        tasks = tuple(Task(p.name, p.train, p.test, tuple(range(k)), p.class_names) for p in parts)
        return Stream(name, tasks, protocol, k, seed)

    tasks, next_unit = [], 0
    given = [p.unit_ids for p in parts if p.unit_ids is not None]
    use_given = len(given) == len(parts) and len({u for ids in given for u in ids}) == sum(
        map(len, given)
    )
    for p in parts:
        units = p.unit_ids if use_given else tuple(range(next_unit, next_unit + len(p.class_names)))
        next_unit = max(next_unit, max(units) + 1)
        lookup = torch.tensor(units, dtype=torch.int64)
        tasks.append(
            Task(
                p.name,
                p.train.with_labels(lookup[p.train.y]),
                p.test.with_labels(lookup[p.test.y]),
                units,
                p.class_names,
            )
        )
    return Stream(name, tuple(tasks), protocol, next_unit, seed)


def _check_tasks(n_tasks: int, at_most: int | None = None) -> None:
    if not isinstance(n_tasks, int) or n_tasks < 1:
        raise ConfigError(f"n_tasks must be a positive integer, got {n_tasks!r}")
    if at_most is not None and n_tasks > at_most:
        raise ConfigError(f"n_tasks={n_tasks} is more than the {at_most} classes available")


def split(
    source: SourceData,
    n_tasks: int = 5,
    protocol: Protocol | str = Protocol.CLASS,
    seed: int = 0,
    class_order: Sequence[int] | None = None,
    name: str | None = None,
) -> Stream:
    """Split a data set into ``n_tasks`` tasks of disjoint classes (Split-MNIST and kin).

    The class order is drawn from ``seed`` unless ``class_order`` is given (it may list a subset
    of the classes). Classes are dealt into tasks in that order, as evenly as possible. Under the
    task- and class-incremental protocols each class keeps its own output unit (its label);
    under domain-incremental, task ``t``'s ``i``-th class answers on unit ``i``.
    """
    if class_order is None:
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(source.num_classes, generator=gen).tolist()
    else:
        order = [int(c) for c in class_order]
        bad = [c for c in order if not 0 <= c < source.num_classes]
        if bad or len(set(order)) != len(order):
            raise ConfigError(
                f"class_order must list distinct classes in 0..{source.num_classes - 1}, got {order}"
            )
    _check_tasks(n_tasks, len(order))
    parts = []
    for chunk in _deal(order, n_tasks):
        classes = torch.tensor(chunk)
        local = torch.full((source.num_classes,), -1, dtype=torch.int64)
        local[classes] = torch.arange(len(chunk))
        sets = []
        for data in (source.train, source.test):
            # Row indices, not a boolean mask: index_select copies the rows 4x faster.
            keep = torch.isin(data.y, classes).nonzero().squeeze(1)
            x, y = data.x.index_select(0, keep), data.y.index_select(0, keep)
            sets.append(ArraySet(x, local[y], data.scale))
        names = tuple(source.class_names[c] for c in chunk)
        parts.append(_Part(f"classes {', '.join(names)}", *sets, names, tuple(chunk)))
    return _assemble(name or f"split-{source.name}", parts, protocol, seed)


def _deal(order: list[int], n_tasks: int) -> list[list[int]]:
    base, extra = divmod(len(order), n_tasks)
    chunks, start = [], 0
    for i in range(n_tasks):
        size = base + (1 if i < extra else 0)
        chunks.append(order[start : start + size])
        start += size
    return chunks


def permuted(
    source: SourceData,
    n_tasks: int = 10,
    protocol: Protocol | str = Protocol.DOMAIN,
    seed: int = 0,
    name: str | None = None,
) -> Stream:
    """One fixed random pixel permutation per task (Permuted-MNIST; Goodfellow et al. 2013).

    Task 0 keeps the original images; task ``t > 0`` applies permutation ``t``, drawn from
    ``seed`` when the stream is built and applied once to the stored images.
    """
    _check_tasks(n_tasks)
    gen = torch.Generator().manual_seed(seed)
    n_pixels = math.prod(source.train.shape)
    parts = []
    for t in range(n_tasks):
        perm = torch.arange(n_pixels) if t == 0 else torch.randperm(n_pixels, generator=gen)
        sets = [_permute(data, perm) for data in (source.train, source.test)]
        label = "original" if t == 0 else f"permutation {t}"
        parts.append(_Part(label, *sets, source.class_names))
    return _assemble(name or f"permuted-{source.name}", parts, protocol, seed)


def permuted_subsets(
    source: SourceData,
    n_tasks: int,
    train_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
) -> Stream:
    """A long permuted stream of small tasks (Dohare et al.'s online permuted MNIST, made
    small): every task draws its own ``train_size`` training and ``test_size`` test images from
    ``source`` (``None``: all of them, shuffled) and applies its own random pixel permutation
    (task 0 too). Domain-incremental: one output shared by all tasks. Only the drawn images are
    stored (uint8), so 100 tasks of 6,000 MNIST images take about 0.5 GB.
    """
    from forgetless.validation import check_positive_int

    n_tasks = check_positive_int("n_tasks", n_tasks)
    train_size = len(source.train) if train_size is None else train_size
    test_size = len(source.test) if test_size is None else test_size
    train_size = check_positive_int("train_size", train_size)
    test_size = check_positive_int("test_size", test_size)
    if train_size > len(source.train) or test_size > len(source.test):
        raise ConfigError(
            f"train_size {train_size} / test_size {test_size} exceed {source.name}'s "
            f"{len(source.train)} / {len(source.test)} examples"
        )
    gen = torch.Generator().manual_seed(seed)
    n_pixels = math.prod(source.train.shape)
    tasks = []
    for t in range(n_tasks):
        perm = torch.randperm(n_pixels, generator=gen)
        sets = []
        for data, size in ((source.train, train_size), (source.test, test_size)):
            rows = torch.randperm(len(data), generator=gen)[:size]
            x = data.x[rows].reshape(size, -1)[:, perm].reshape(size, *data.shape)
            sets.append(ArraySet(x.contiguous(), data.y[rows], data.scale))
        units = tuple(range(source.num_classes))
        tasks.append(Task(f"permutation {t}", *sets, units, tuple(source.class_names)))
    return Stream(f"permuted-{source.name}-long", tuple(tasks), Protocol.DOMAIN, len(units), seed)


#: The seed of :func:`subsampled`'s draw: one draw for every run, so that runs of different
#: seeds see the same examples (the seed varies the weights and the batches, not the data).
SUBSAMPLE_SEED = 0


def subsampled(stream: Stream, train_size: int | None, test_size: int | None) -> Stream:
    """``stream`` with each task keeping ``train_size`` of its training and ``test_size`` of its
    test examples (``None``: all), drawn at random from :data:`SUBSAMPLE_SEED`, afresh for each
    task: tasks of the same size (a rotated or permuted stream) keep the same rows, so task B is
    task A's drawn images rotated, as if the source had been subsampled first."""
    from dataclasses import replace

    from forgetless.validation import check_positive_int

    for name, size in (("train_size", train_size), ("test_size", test_size)):
        if size is not None:
            check_positive_int(name, size)
    tasks = []
    for task in stream.tasks:
        gen = torch.Generator().manual_seed(SUBSAMPLE_SEED)
        sets = []
        for data, size in ((task.train, train_size), (task.test, test_size)):
            rows = torch.randperm(len(data), generator=gen)
            sets.append(data if size is None else data.subset(rows[: min(size, len(data))]))
        tasks.append(replace(task, train=sets[0], test=sets[1]))
    return Stream(stream.name, tuple(tasks), stream.protocol, stream.num_outputs, stream.seed)


def _permute(data: ArraySet, perm: torch.Tensor) -> ArraySet:
    flat = data.x.reshape(len(data), -1)[:, perm]
    return ArraySet(flat.reshape(data.x.shape).contiguous(), data.y, data.scale)


def rotated(
    source: SourceData,
    n_tasks: int = 10,
    protocol: Protocol | str = Protocol.DOMAIN,
    seed: int = 0,
    angles: Sequence[float] | None = None,
    name: str | None = None,
) -> Stream:
    """Each task rotates every image by one angle (Rotated-MNIST).

    By default the angles are evenly spaced, ``t * 180 / n_tasks`` degrees, so neighbouring tasks
    are graded in similarity; pass ``angles`` for others. Images must be ``[N, C, H, W]``.
    Rotation is bilinear with zero padding, done once when the stream is built.
    """
    if len(source.train.shape) != 3:
        raise ConfigError(
            f"rotated needs images [C, H, W], {source.name} has inputs {source.train.shape}"
        )
    if angles is None:
        _check_tasks(n_tasks)
        angles = [t * 180.0 / n_tasks for t in range(n_tasks)]
    parts = []
    for angle in angles:
        sets = [_rotate(data, float(angle)) for data in (source.train, source.test)]
        parts.append(_Part(f"rotation {angle:g}°", *sets, source.class_names))
    return _assemble(name or f"rotated-{source.name}", parts, protocol, seed)


def _rotate(data: ArraySet, degrees: float, chunk: int = 8192) -> ArraySet:
    if degrees % 360 == 0:
        return data
    theta = math.radians(degrees)
    affine = torch.tensor(
        [[math.cos(theta), -math.sin(theta), 0.0], [math.sin(theta), math.cos(theta), 0.0]]
    )
    out = torch.empty_like(data.x)
    for start in range(0, len(data), chunk):
        x = data.x[start : start + chunk].to(torch.float32)
        grid = F.affine_grid(affine.expand(len(x), 2, 3), list(x.shape), align_corners=False)
        rotated_x = F.grid_sample(
            x, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        # Back to the storage dtype: uint8 images are rounded, as image libraries do.
        out[start : start + chunk] = (
            rotated_x.round() if not data.x.is_floating_point() else rotated_x
        )
    return ArraySet(out, data.y, data.scale)


def sequence(
    sources: Sequence[SourceData],
    protocol: Protocol | str = Protocol.DOMAIN,
    seed: int = 0,
    name: str | None = None,
) -> Stream:
    """Whole data sets one after another (e.g. MNIST then Fashion-MNIST).

    Under domain-incremental all sets share one output layer (label ``i`` of every set answers
    on unit ``i``); under task- and class-incremental each set gets units of its own.
    """
    if len(sources) < 1:
        raise ConfigError("sequence needs at least one data set")
    parts = [_Part(s.name, s.train, s.test, tuple(s.class_names)) for s in sources]
    return _assemble(name or "-".join(s.name for s in sources), parts, protocol, seed)


def training_statistics(stream: Stream) -> tuple[float, float]:
    """The mean and standard deviation of every model input value of the stream's training
    sets (all tasks, all pixels: MNIST's are 0.1307 and 0.3081), computed in float64."""
    n = total = squares = 0.0
    for task in stream:
        if task.train.scale is None and not task.train.x.is_floating_point():
            raise ConfigError(f"{stream.name}: token ids have no mean and std to standardise by")
        count, task_total, task_squares = task.train.moments()
        n, total, squares = n + count, total + task_total, squares + task_squares
    mean = total / n
    return mean, math.sqrt(max(squares / n - mean * mean, 0.0))


def standardized(stream: Stream, mean: float, std: float) -> Stream:
    """The stream with every task's inputs, training and test, mapped to ``(x - mean) / std``
    (the stored arrays are shared: only each set's scale and shift change)."""
    tasks = tuple(
        Task(
            t.name,
            t.train.standardized(mean, std),
            t.test.standardized(mean, std),
            t.units,
            t.class_names,
        )
        for t in stream
    )
    return Stream(stream.name, tasks, stream.protocol, stream.num_outputs, stream.seed)
