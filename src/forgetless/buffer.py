"""The memory buffer of rehearsal methods: preallocated tensors, filled without Python loops.

Replay, A-GEM, DER, GSS and iCaRL all keep a few past examples. :class:`MemoryBuffer` holds them
in tensors allocated once at full capacity, so its memory is known before training starts and
never grows. Three ways to fill it:

- :meth:`MemoryBuffer.reservoir_add`: reservoir sampling (Vitter 1985, algorithm R), a uniform
  sample of everything offered so far;
- :meth:`MemoryBuffer.balanced_add`: as many examples of each class (or of each task) as
  possible, evicting from the largest groups (Chaudhry et al. 2019; Prabhu et al. 2020, GDumb);
- :meth:`MemoryBuffer.write`: the caller picks the slots (score-based selection such as GSS,
  herding for iCaRL, a per-task quota for A-GEM).

What the buffer's own operations cost inside a run is measured with :func:`timing`.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

import numpy as np
import torch

from forgetless.errors import ConfigError
from forgetless.state import restorable
from forgetless.validation import check_positive_int

if TYPE_CHECKING:
    from forgetless.scenarios.stream import Stream

#: What :meth:`MemoryBuffer.balanced_add` can balance a memory by: targets or task ids.
BALANCE_GROUPS = ("class", "task")
#: Why a memory of sequences cannot be balanced by class.
CLASS_BALANCE_NEEDS_LABELS = (
    "a class-balanced memory needs one label per example, but these targets are sequences "
    "(a target per position: a language model's next tokens); balance by task "
    "(buffer_policy='task-balanced') or keep a uniform sample (buffer_policy='reservoir')"
)
#: Up to this many rows stored at once are copied one by one (a full reservoir's step), more
#: with one gather.
ROWS_COPIED_ONE_BY_ONE = 32


class LazyRows(Protocol):
    """Inputs read a few rows at a time: ``rows[index]`` is a tensor of those rows
    (:class:`~forgetless.data.arrays.LazyInputs`)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor: ...


class Stored(NamedTuple):
    """Examples taken from a :class:`MemoryBuffer`, row ``k`` from the ``k``-th slot asked."""

    x: torch.Tensor
    y: torch.Tensor
    t: torch.Tensor
    logits: torch.Tensor | None


def available_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on ``device``: free GPU memory, or on the CPU the
    kernel's estimate of memory available without swapping (``MemAvailable``; else the
    physical memory). ``None`` where the platform does not say."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except RuntimeError:
            return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def check_memory(nbytes: int, device: torch.device, what: str) -> None:
    """Refuse, before allocating, ``nbytes`` for ``what`` that ``device`` cannot hold: a
    ConfigError with both figures (a buffer of 10^12 examples would otherwise ask the
    allocator for hundreds of terabytes and fail with its own message, or swap the machine)."""
    available = available_memory(device)
    if available is not None and nbytes > available:
        raise ConfigError(
            f"{what} needs {_bytes_text(nbytes)} on {device}, more than the "
            f"{_bytes_text(available)} available; choose a smaller size"
        )


def _bytes_text(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError  # unreachable


class Timing:
    """Wall time spent inside :class:`MemoryBuffer`'s insertion, sampling and gathering
    (``reservoir_add``, ``balanced_add``, ``class_balanced_add``, ``write``, ``sample``,
    ``get``) while :func:`timing` is active: ``seconds`` in all, and ``calls`` (an operation
    that calls another counts once), and both per operation in ``by_operation`` (name ->
    ``[seconds, calls]``, under the name of the outermost one)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self.by_operation: dict[str, list[float]] = {}
        self._depth = 0


#: The active :class:`Timing`, if any (one at a time: the benchmarks time one run at once).
_timing: Timing | None = None


@contextlib.contextmanager
def timing() -> Iterator[Timing]:
    """Time every buffer operation of the runs inside the ``with`` block::

        with timing() as spent:
            result = run(config)
        share = spent.seconds / result.timings["train"]

    Outside it an operation costs one function call more than it would untimed."""
    global _timing
    if _timing is not None:
        raise ConfigError("buffer timing is already active; nest no timing() blocks")
    _timing = Timing()
    try:
        yield _timing
    finally:
        _timing = None


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _timed(method: _Method) -> _Method:
    name = method.__name__

    @functools.wraps(method)
    def timed(*args: Any, **kwargs: Any) -> Any:
        spent = _timing
        if spent is None:
            return method(*args, **kwargs)
        spent._depth += 1
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            spent._depth -= 1
            if spent._depth == 0:  # the outermost operation counts the time of those it calls
                seconds = time.perf_counter() - start
                spent.seconds += seconds
                spent.calls += 1
                operation = spent.by_operation.setdefault(name, [0.0, 0])
                operation[0] += seconds
                operation[1] += 1

    return timed  # type: ignore[return-value]


@restorable("MemoryBuffer")
class MemoryBuffer:
    """A fixed number of stored examples: inputs, targets, task ids and optionally logits.

    Slots ``0 .. len(buffer) - 1`` are filled; the tensors are allocated at full capacity once.

    Args:
        capacity: the number of examples it can hold (>= 1).
        input_shape: shape of one model input, e.g. ``(1, 28, 28)``; ``(T,)`` for token ids.
        num_logits: if given, also store ``[capacity, *target_shape, num_logits]`` float32
            logits (DER).
        device: where the tensors live (the training device, so sampling needs no copies).
        input_dtype: the model inputs' dtype: float32 for images, int64 for token ids.
        target_shape: one example's targets: ``()`` for a label, ``(T,)`` for a sequence's
            next tokens. :meth:`for_stream` reads both from a stream.

    Attributes:
        x: ``[capacity, *input_shape]`` model inputs (``input_dtype``).
        y: ``[capacity, *target_shape]`` int64 targets (output-unit indices).
        t: ``[capacity]`` int64 task ids (stream positions; select the output mask under
            task-incremental learning).
        logits: ``[capacity, *target_shape, num_logits]`` float32, or ``None``.
        seen: examples offered to :meth:`reservoir_add` or :meth:`balanced_add` so far.
            :meth:`write` leaves it alone: a caller that selects examples itself adds to it if
            it wants the count.
    """

    def __init__(
        self,
        capacity: int,
        input_shape: Sequence[int],
        num_logits: int | None = None,
        device: str | torch.device = "cpu",
        input_dtype: torch.dtype = torch.float32,
        target_shape: Sequence[int] = (),
    ):
        self.capacity = check_positive_int("capacity", capacity)
        shape = tuple(int(s) for s in input_shape)
        targets = tuple(int(s) for s in target_shape)
        device = torch.device(device)
        if num_logits is not None:
            num_logits = check_positive_int("num_logits", num_logits)
        nbytes = buffer_nbytes(self.capacity, shape, num_logits, input_dtype, targets)
        check_memory(nbytes, device, f"a memory of {self.capacity} examples")
        # Only tensors and counts are attributes (the dtypes and shapes are the tensors'), so a
        # checkpoint written before buffers held token ids or sequence targets loads as it is.
        self.x = torch.zeros((self.capacity, *shape), dtype=input_dtype, device=device)
        self.y = torch.zeros((self.capacity, *targets), dtype=torch.int64, device=device)
        self.t = torch.zeros(self.capacity, dtype=torch.int64, device=device)
        self.logits = None
        if num_logits is not None:
            self.logits = torch.zeros(
                (self.capacity, *targets, num_logits), dtype=torch.float32, device=device
            )
        self.seen = 0
        self._size = 0

    @classmethod
    def for_stream(
        cls,
        capacity: int,
        stream: Stream,
        num_logits: int | None = None,
        device: str | torch.device = "cpu",
    ) -> MemoryBuffer:
        """An empty buffer for ``stream``'s examples: its model inputs' shape and dtype
        (float32 images, int64 token ids) and its targets' shape (``()`` for labels, ``(T,)``
        for next-token targets), with ``num_logits`` logits per target if given (DER: a
        language model's logits at every position)."""
        return cls(
            capacity,
            stream.input_shape,
            num_logits,
            device,
            input_dtype=stream.input_dtype,
            target_shape=stream.target_shape,
        )

    def __len__(self) -> int:
        return self._size

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def nbytes(self) -> int:
        """Exact bytes of the preallocated tensors (:func:`buffer_nbytes`)."""
        return sum(a.element_size() * a.numel() for a in self._arrays())

    def memory_report(self) -> dict[str, int]:
        """``examples`` stored, ``capacity``, ``seen``, ``bytes`` held, ``bytes_per_example``."""
        return {
            "examples": len(self),
            "capacity": self.capacity,
            "seen": self.seen,
            "bytes": self.nbytes,
            "bytes_per_example": self.nbytes // self.capacity,
        }

    @_timed
    def reservoir_add(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor,
        logits: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        report: bool = True,
    ) -> torch.Tensor | None:
        """Offer a batch to the buffer by reservoir sampling (Vitter 1985, algorithm R).

        The ``i``-th example offered since creation (0-based) takes slot ``i`` while the buffer
        fills; afterwards it draws ``j ~ U{0, ..., i}`` and replaces slot ``j`` if
        ``j < capacity``, so it is kept with probability ``capacity / (i + 1)`` and every
        example offered so far is in the buffer with the same probability. The batch is drawn
        at once with the semantics of offering its examples one by one: if several pick the
        same slot, the later one wins.

        Returns:
            The distinct slots written, ascending (on the buffer's device); ``None`` if not
            ``report`` (a caller that does not read them saves making the tensor, tens of
            microseconds a step once the forward and backward passes have evicted the caches).
        """
        n = self._check_batch(x, y, t, logits)
        start, capacity = self.seen, self.capacity
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=_device_of(generator))
        # floor(u * (i + 1)) is uniform on 0..i: with u < 1 the exactly rounded float64 product
        # stays below i + 1 (i < 2**52).
        if start >= capacity:
            # A full buffer keeps about n * capacity / seen of the batch, often 0 or 1. The test
            # runs in plain Python: every library call here pays for caches that the forward and
            # backward passes evicted, and Python's float product and int() are NumPy's float64
            # product and truncation, so the draws decide exactly as below.
            self.seen = start + n
            draws = u.tolist()
            # Only a draw below capacity / (start + 1) can be kept (the bound is widened past
            # any rounding of it or of the products); the loop over them runs in C.
            bound = capacity / (start + 1) * (1 + 2**-40)
            kept: dict[int, int] = {}
            for j in itertools.compress(range(n), map(bound.__gt__, draws)):
                if (product := draws[j] * (start + 1 + j)) < capacity:
                    kept[int(product)] = j  # a later example overwrites an earlier one
            if not kept:
                return _no_slots(self.x.device) if report else None
            order = sorted(kept)
            return self._put_rows(order, [kept[s] for s in order], x, y, t, logits, report)
        # Filling: the index arithmetic in NumPy (a batch may be much larger than the buffer).
        slots = (u.cpu().numpy() * np.arange(start + 1, start + n + 1, dtype=np.float64)).astype(
            np.int64
        )
        fill = max(0, min(n, capacity - start))
        slots[:fill] = np.arange(start, start + fill)
        positions = np.flatnonzero(slots < capacity)
        if len(positions) > 1:  # a full buffer takes about n * capacity / seen: often 0 or 1
            slots, positions = _last_wins(slots[positions], positions)
        else:
            slots = slots[positions]
        self.seen += n
        self._size = min(capacity, self.seen)
        written = self._put(slots, positions, x, y, t, logits)
        return written if report else None

    @_timed
    def class_balanced_add(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor,
        logits: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Offer a batch, keeping the classes as balanced as the capacity allows:
        :meth:`balanced_add` by ``"class"``."""
        return self.balanced_add(x, y, t, "class", logits, generator)

    @_timed
    def balanced_add(
        self,
        x: torch.Tensor | LazyRows,
        y: torch.Tensor,
        t: torch.Tensor,
        by: str = "class",
        logits: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Offer a batch, keeping the groups (classes, or tasks) as balanced as the capacity
        allows.

        A group is a target value (``by="class"``) or a task id (``by="task"``). While there
        is room every example is stored. Once stored plus incoming examples exceed the capacity
        ``C``, group ``g`` (with ``n_g`` of them) keeps ``q_g = min(n_g, L)`` examples (plus
        one for a few groups drawn at random, so that ``sum_g q_g = C``), ``L`` being the
        largest level with ``sum_g min(n_g, L) <= C``: only the largest groups lose examples,
        the ones kept drawn uniformly among that group's stored and incoming examples. This is
        the greedy balancing rule (Chaudhry et al. 2019, "On tiny episodic memories", section
        4; Prabhu et al. 2020, GDumb) applied to the whole batch at once, whose result is the
        same balanced allocation. Offered a whole task at once, by task, it gives each task
        seen ``C // tasks`` slots (or one more), as Avalanche's experience-balanced buffer does.

        ``x`` may be a tensor or anything whose ``x[rows]`` gives those rows' inputs (a task's
        :attr:`~forgetless.data.ArraySet.lazy_inputs`): only the examples kept are read, so a
        whole task can be offered without holding its inputs as floats.

        Returns:
            The distinct slots written, ascending (on the buffer's device).
        """
        if by not in BALANCE_GROUPS:
            raise ConfigError(
                f"balanced_add balances by one of {', '.join(BALANCE_GROUPS)}, got {by!r}"
            )
        if by == "class" and self.y.ndim > 1:
            raise ConfigError(CLASS_BALANCE_NEEDS_LABELS)
        if isinstance(x, torch.Tensor):
            n = self._check_batch(x, y, t, logits)
        elif len(x) != y.shape[0] or t.shape[0] != y.shape[0]:
            raise ConfigError(
                f"x, y and t need one row per example, got {len(x)}, {y.shape[0]} and {t.shape[0]}"
            )
        else:
            n = len(x)
        self.seen += n
        size = self._size
        if size + n <= self.capacity:
            free, positions = np.arange(size, size + n), np.arange(n)
        else:
            stored, incoming = (self.y, y) if by == "class" else (self.t, t)
            keys = torch.cat([stored[:size].cpu(), incoming.detach().cpu().long()])
            if int(keys.min()) < 0:
                raise ConfigError(f"balanced_add needs non-negative {by} ids")
            free, positions = _balanced_selection(keys, size, self.capacity, generator)
        if not isinstance(x, torch.Tensor):  # read only the rows kept
            rows = torch.from_numpy(positions)
            x, y, t = x[rows], y[rows], t[rows]
            logits = None if logits is None else logits[rows]
            positions = np.arange(len(rows))
            self._check_batch(x, y, t, logits)
        self._size = size + len(free) if size + n <= self.capacity else self.capacity
        return self._put(free, positions, x, y, t, logits)

    @_timed
    def write(
        self,
        slots: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor,
        logits: torch.Tensor | None = None,
    ) -> None:
        """Put ``x[k], y[k], t[k]`` (and ``logits[k]``) into slot ``slots[k]``.

        Slots may overwrite filled ones or extend the filled part, as long as it stays
        contiguous (slots ``0 .. len - 1``). A slot given twice receives the later example.

        Raises:
            ConfigError: a slot outside ``0 .. capacity - 1``, a gap after the filled part, or
                shapes that do not match the buffer.
        """
        n = self._check_batch(x, y, t, logits)
        slots = torch.as_tensor(slots, dtype=torch.int64).cpu().reshape(-1)
        if len(slots) != n:
            raise ConfigError(f"write needs one slot per example: {len(slots)} slots, {n} examples")
        if n == 0:
            return
        if int(slots.min()) < 0 or int(slots.max()) >= self.capacity:
            raise ConfigError(
                f"slots must lie in 0..{self.capacity - 1}, got {int(slots.min())}..{int(slots.max())}"
            )
        slots, positions = _last_wins(slots.numpy(), np.arange(n))
        new = slots[slots >= self._size]
        if len(new) and int(new.max()) >= self._size + len(new):
            raise ConfigError(
                f"writing slot {int(new.max())} would leave a gap: slots 0..{self._size - 1} are "
                f"filled, so new examples must go to slots {self._size}, {self._size + 1}, ..."
            )
        self._size += len(new)
        self._put(slots, positions, x, y, t, logits)

    def truncate(self, size: int) -> None:
        """Keep slots ``0 .. size - 1`` and mark the rest empty (a memory rewritten smaller, as
        iCaRL's exemplar sets shrink); the tensors stay allocated."""
        if not 0 <= int(size) <= self._size:
            raise ConfigError(f"truncate needs a size in 0..{self._size}, got {size!r}")
        self._size = int(size)

    @_timed
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``min(n, len(buffer))`` distinct slots of the filled part, drawn uniformly without
        replacement, in random order (on the buffer's device)."""
        size = self._size
        n = min(int(n), size)
        device = _device_of(generator)
        if 0 < 4 * n <= size:
            # A small sample of a large buffer, in O(n) rather than a permutation of it all: the
            # first n distinct values of i.i.d. uniform draws are a uniform ordered sample.
            draws = torch.randint(size, (2 * n,), generator=generator, device=device)
            draws = draws.cpu().numpy()
            values, first = np.unique(draws, return_index=True)
            if len(values) >= n:  # 2n draws from >= 4n values: all but always
                return self._on_store_device(torch.from_numpy(draws[np.sort(first)[:n]]))
        return self._on_store_device(torch.randperm(size, generator=generator, device=device)[:n])

    @_timed
    def get(self, slots: torch.Tensor) -> Stored:
        """The stored examples in ``slots``: ``x``, ``y``, ``t`` and ``logits`` (or ``None``)."""
        slots = self._on_store_device(slots)
        x, y, t = (a.index_select(0, slots) for a in (self.x, self.y, self.t))
        logits = None if self.logits is None else self.logits.index_select(0, slots)
        return Stored(x, y, t, logits)

    def _arrays(self) -> list[torch.Tensor]:
        return [a for a in (self.x, self.y, self.t, self.logits) if a is not None]

    def _check_batch(
        self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, logits: torch.Tensor | None
    ) -> int:
        # Shapes rather than len(): Tensor.__len__ is a Python call, and this runs every step.
        n = x.shape[0]
        if x.shape[1:] != self.x.shape[1:]:
            raise ConfigError(
                f"inputs of shape {tuple(x.shape[1:])} do not fit a buffer of inputs "
                f"{tuple(self.x.shape[1:])}"
            )
        if x.dtype is not self.x.dtype and x.is_floating_point() != self.x.is_floating_point():
            # A copy would cast silently: token ids to floats, or real inputs to integers.
            raise ConfigError(f"inputs of dtype {x.dtype} do not fit a buffer of {self.x.dtype}")
        if y.shape[0] != n or t.shape[0] != n:
            raise ConfigError(
                f"x, y and t need one row per example, got {n}, {y.shape[0]} and {t.shape[0]}"
            )
        if y.shape[1:] != self.y.shape[1:]:
            raise ConfigError(
                f"targets of shape {tuple(y.shape[1:])} per example do not fit a buffer of "
                f"targets {tuple(self.y.shape[1:])}"
            )
        if (logits is None) != (self.logits is None):
            have = "stores" if self.logits is not None else "does not store"
            raise ConfigError(f"this buffer {have} logits: pass logits exactly when it does")
        if logits is not None and (
            logits.shape[0] != n or logits.shape[1:] != self.logits.shape[1:]
        ):
            expected = ", ".join(str(d) for d in (n, *self.logits.shape[1:]))
            raise ConfigError(f"logits must be [{expected}], got {tuple(logits.shape)}")
        return n

    def _put(
        self,
        slots: np.ndarray,
        positions: np.ndarray,
        x: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor,
        logits: torch.Tensor | None,
    ) -> torch.Tensor:
        """Copy rows ``positions`` of the batch into ``slots`` (distinct); return the slots."""
        k = len(slots)
        device = self.device
        if k == 0:
            return _no_slots(device)
        pairs = list(zip(self._arrays(), (x, y, t, logits), strict=False))
        # Every torch call costs a few microseconds of dispatch whatever its size, and this runs
        # each step: hence no_grad instead of detach() per tensor, and no no-op .to() calls.
        with torch.no_grad():
            if k == 1 or ((np.diff(slots) == 1).all() and (np.diff(positions) == 1).all()):
                # Both runs (the buffer filling): one slice copy per tensor.
                first, start = int(slots[0]), int(positions[0])
                for store, batch in pairs:
                    store[first : first + k] = batch[start : start + k]
                return torch.arange(first, first + k, device=device)
            # index_copy_, not NumPy's fancy assignment: inside a training run, where the forward
            # and backward passes evict the caches between calls, it took 105 us a call against
            # 156 (five rows), although NumPy wins in a tight loop.
            slot_index = torch.as_tensor(slots, dtype=torch.int64, device=device)
            rows = torch.as_tensor(positions, dtype=torch.int64)
            for store, batch in pairs:
                picked = batch.index_select(0, rows.to(batch.device))
                store.index_copy_(0, slot_index, picked.to(device, store.dtype))
        return slot_index

    def _on_store_device(self, index: torch.Tensor) -> torch.Tensor:
        """``index`` on the stored tensors' device; itself if it is there already (a no-op
        ``.to()`` still costs a library call, and sampling and gathering run every step)."""
        device = self.x.device
        return index if index.device == device else index.to(device)

    def _put_rows(
        self,
        slots: list[int],
        positions: list[int],
        x: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor,
        logits: torch.Tensor | None,
        report: bool,
    ) -> torch.Tensor | None:
        """Copy rows ``positions`` of the batch into ``slots`` (distinct, a few: a full
        reservoir's step); return the slots as a tensor if ``report``."""
        stores = self._arrays()
        batches = (x, y, t) if logits is None else (x, y, t, logits)
        try:
            # NumPy views of the same memory (the buffer's and the batch's tensors, on the CPU,
            # not requiring grad): after the forward and backward passes have evicted the
            # caches, each torch call (index_select, index_copy_) costs tens of microseconds,
            # NumPy's basic indexing a fraction of that. NumPy casts as ``.to(dtype)`` would.
            views = [(a.numpy(), b.numpy()) for a, b in zip(stores, batches, strict=True)]
        except (TypeError, RuntimeError):  # on a GPU, a dtype NumPy lacks, or a grad
            written = self._put(np.array(slots), np.array(positions), x, y, t, logits)
            return written if report else None
        if len(slots) > ROWS_COPIED_ONE_BY_ONE:
            index, picked = np.array(slots), np.array(positions)
            for into, rows in views:
                into[index] = rows[picked]
            return torch.from_numpy(index) if report else None
        pairs = list(zip(slots, positions, strict=True))
        for into, rows in views:
            for slot, row in pairs:
                into[slot] = rows[row]
        return torch.tensor(slots) if report else None

    def __repr__(self) -> str:
        logits = "" if self.logits is None else f", logits={self.logits.shape[-1]}"
        if self.x.dtype != torch.float32:
            logits = f", {str(self.x.dtype).removeprefix('torch.')}{logits}"
        if self.y.ndim > 1:
            logits = f", targets={tuple(self.y.shape[1:])}{logits}"
        return (
            f"MemoryBuffer({len(self)}/{self.capacity}, input={tuple(self.x.shape[1:])}{logits}, "
            f"seen={self.seen}, {self.nbytes / 2**20:.2f} MiB)"
        )


@functools.cache
def _no_slots(device: torch.device) -> torch.Tensor:
    """An empty slot list (shared, never written): most steps of a full buffer store nothing."""
    return torch.zeros(0, dtype=torch.int64, device=device)


def _device_of(generator: torch.Generator | None) -> torch.device:
    return torch.device("cpu") if generator is None else generator.device


def _last_wins(slots: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ``slots`` (ascending), each with the largest of the ``positions`` (ascending)
    that targeted it.

    Index assignment with repeated indices has no defined winner in PyTorch, so duplicates are
    resolved here, as a sequential pass would: the later example overwrites the earlier one.
    """
    distinct, first_from_end = np.unique(slots[::-1], return_index=True)
    return distinct, positions[::-1][first_from_end]


def _balanced_selection(
    keys: torch.Tensor, size: int, capacity: int, generator: torch.Generator | None
) -> tuple[np.ndarray, np.ndarray]:
    """Which stored and incoming examples a balanced memory keeps: ``keys`` holds the group of
    the ``size`` stored examples, then of the incoming ones (``len(keys) > capacity``).
    Returns the slots freed for incoming examples (evicted ones, then the empty tail,
    ascending) and the incoming positions kept (ascending), as many of each."""
    counts = torch.bincount(keys)
    quota = _balanced_quota(counts, capacity, generator)
    # A random order within each group: sort by group + U[0, 1).
    key = (
        keys.double()
        + torch.rand(
            len(keys), generator=generator, dtype=torch.float64, device=_device_of(generator)
        ).cpu()
    )
    order = key.argsort()
    first_of_group = counts.cumsum(0) - counts
    rank = torch.arange(len(keys)) - first_of_group[keys[order]]
    keep = torch.empty(len(keys), dtype=torch.bool)
    keep[order] = rank < quota[keys[order]]
    free = torch.cat([(~keep[:size]).nonzero().squeeze(1), torch.arange(size, capacity)])
    positions = keep[size:].nonzero().squeeze(1)
    # Both parts of ``free`` are ascending, so the slots written are too.
    return free[: len(positions)].numpy(), positions.numpy()


def _balanced_quota(
    counts: torch.Tensor, capacity: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Per-group quotas ``q_c = min(n_c, L)`` plus one for ``r`` random groups above ``L``,
    with ``sum q = capacity`` (water filling; ``counts.sum() > capacity``)."""
    k = len(counts)
    ascending = counts.sort().values
    below = ascending.cumsum(0) - ascending
    # Level ascending[i] keeps classes 0..i whole and caps the rest: it fits if
    # below[i] + ascending[i] * (k - i) <= capacity. The first m levels fit.
    fits = below + ascending * torch.arange(k, 0, -1) <= capacity
    m = int(fits.sum())
    whole = int(ascending[:m].sum())
    level = (capacity - whole) // (k - m)
    remainder = capacity - whole - level * (k - m)
    quota = torch.minimum(counts, torch.tensor(level))
    above = (counts > level).nonzero().squeeze(1)
    lucky = torch.randperm(len(above), generator=generator, device=_device_of(generator)).cpu()
    quota[above[lucky[:remainder]]] += 1
    return quota


def buffer_nbytes(
    capacity: int,
    input_shape: Sequence[int],
    num_logits: int | None = None,
    input_dtype: torch.dtype = torch.float32,
    target_shape: Sequence[int] = (),
) -> int:
    """Bytes a :class:`MemoryBuffer` of these dimensions holds, known before allocating it:
    ``capacity * (s * prod(input_shape) + 8 * prod(target_shape) + 8 + 4 * prod(target_shape)
    * num_logits)``, with ``s`` the input dtype's size (4 for float32 images, 8 for int64
    token ids), int64 targets and task ids, float32 logits."""
    targets = math.prod(target_shape)
    per_example = (
        input_dtype.itemsize * math.prod(input_shape)
        + 8 * targets
        + 8
        + 4 * targets * (num_logits or 0)
    )
    return capacity * per_example
