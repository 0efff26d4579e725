"""The memory buffer: reservoir sampling is uniform and sequential, memory is exact, misuse is clear."""

import numpy as np
import pytest
import torch
from scipy import stats

from forgetless import ConfigError
from forgetless.buffer import ROWS_COPIED_ONE_BY_ONE, MemoryBuffer, buffer_nbytes

N, CAPACITY, BATCH, TRIALS = 10_000, 500, 250, 60
# Far in the tail of chi-square with 9 degrees of freedom: a correct sampler fails 1 time in 10^4.
THRESHOLD = stats.chi2.ppf(1 - 1e-4, df=9)


def decile_chi2(kept: list[np.ndarray], n: int = N) -> float:
    """Chi-square of the kept arrival indices, pooled over trials, against uniform deciles."""
    counts = np.bincount(np.concatenate(kept) * 10 // n, minlength=10)
    return float(stats.chisquare(counts).statistic)


def stream_through(capacity: int, batch: int, n: int, generator: torch.Generator) -> MemoryBuffer:
    """Offer items labelled by their arrival index to a buffer, ``batch`` at a time."""
    buffer = MemoryBuffer(capacity, (1,))
    for start in range(0, n, batch):
        arrival = torch.arange(start, min(start + batch, n))
        buffer.reservoir_add(
            arrival[:, None].float(), arrival, torch.zeros_like(arrival), None, generator
        )
    return buffer


def test_reservoir_sampling_keeps_a_uniform_sample_of_the_stream():
    generator = torch.Generator().manual_seed(0)
    kept = []
    for _ in range(TRIALS):
        buffer = stream_through(CAPACITY, BATCH, N, generator)
        assert len(buffer) == CAPACITY and buffer.seen == N
        kept.append(buffer.y.numpy().copy())
        assert len(np.unique(kept[-1])) == CAPACITY  # each arrival stored once
    assert decile_chi2(kept) < THRESHOLD


def test_the_uniformity_check_catches_biased_buffers():
    rng = np.random.default_rng(0)
    keep_first = [np.arange(CAPACITY) for _ in range(TRIALS)]
    replace_a_random_slot = []  # after filling, every new item replaces a random slot
    for _ in range(TRIALS):
        slots = np.arange(CAPACITY)
        slots[rng.integers(0, CAPACITY, N - CAPACITY)] = np.arange(CAPACITY, N)
        replace_a_random_slot.append(slots)
    # Items kept with probability capacity / i instead of capacity / (i + 1) after the first
    # half of the stream (a mild bias towards recent items).
    mild = []
    for _ in range(TRIALS):
        i = np.arange(N)
        p = np.where(i < N // 2, CAPACITY / N, 1.3 * CAPACITY / N)
        mild.append(i[rng.random(N) < p / p.mean() * CAPACITY / N])
    for biased in (keep_first, replace_a_random_slot, mild):
        assert decile_chi2(biased) > THRESHOLD


def sequential_algorithm_r(items: np.ndarray, capacity: int, u: np.ndarray) -> np.ndarray:
    """Algorithm R one item at a time, with the given uniform draws ``u[i]``."""
    buffer = np.full(capacity, -1)
    for i, (item, draw) in enumerate(zip(items, u, strict=True)):
        if i < capacity:
            buffer[i] = item
        elif (j := int(draw * (i + 1))) < capacity:
            buffer[j] = item
    return buffer


@pytest.mark.parametrize(("capacity", "batch"), [(10, 1000), (50, 64), (7, 3)])
def test_vectorised_reservoir_matches_the_sequential_algorithm(capacity, batch):
    # Batches much larger than the buffer: many examples of one batch pick the same slot, and
    # the later one must win, as when they are offered one by one.
    n = 3 * batch + 5
    generator = torch.Generator().manual_seed(1)
    buffer = stream_through(capacity, batch, n, generator)
    replay = torch.Generator().manual_seed(1)  # the same draws, one torch.rand per batch
    u = torch.cat(
        [
            torch.rand(len(range(s, min(s + batch, n))), generator=replay, dtype=torch.float64)
            for s in range(0, n, batch)
        ]
    ).numpy()
    expected = sequential_algorithm_r(np.arange(n), capacity, u)
    assert buffer.y.tolist() == expected.tolist()
    assert buffer.x[:, 0].long().tolist() == expected.tolist()


def test_reservoir_fills_in_order_and_reports_written_slots():
    buffer = MemoryBuffer(5, (2, 3), num_logits=4)
    x, logits = torch.randn(3, 2, 3), torch.randn(3, 4)
    slots = buffer.reservoir_add(x, torch.tensor([1, 2, 3]), torch.tensor([0, 0, 1]), logits)
    assert slots.tolist() == [0, 1, 2] and len(buffer) == 3 and buffer.seen == 3
    assert torch.equal(buffer.x[:3], x) and torch.equal(buffer.logits[:3], logits)
    assert buffer.t[:3].tolist() == [0, 0, 1]
    # Two fill the last free slots; the third is kept with probability 5/6, in a random slot.
    slots = buffer.reservoir_add(x, torch.tensor([4, 5, 6]), torch.tensor([2, 2, 2]), logits)
    assert {3, 4} <= set(slots.tolist()) and len(slots) in (2, 3)
    assert len(buffer) == 5 and buffer.seen == 6 and buffer.y.tolist().count(6) <= 1


def test_sample_draws_distinct_filled_slots_and_caps_at_the_size():
    generator = torch.Generator().manual_seed(0)
    buffer = stream_through(1000, 100, 300, generator)
    for n in (8, 200, 299, 300, 5000):  # the O(n) path for small samples, a permutation else
        slots = buffer.sample(n, generator)
        assert len(slots) == min(n, 300) and len(slots.unique()) == len(slots)
        assert int(slots.min()) >= 0 and int(slots.max()) < 300
    counts = torch.zeros(300)
    for _ in range(600):
        counts[buffer.sample(10, generator)] += 1
    # Each slot is drawn 20 times on average; a non-uniform sampler would be far off.
    assert stats.chisquare(counts.numpy()).pvalue > 1e-4
    assert len(MemoryBuffer(4, (1,)).sample(3, generator)) == 0


def test_write_puts_examples_in_given_slots_later_wins_and_no_gaps():
    buffer = MemoryBuffer(6, (1,))
    x = torch.arange(4.0)[:, None]
    buffer.write(
        torch.tensor([0, 1, 1, 2]),
        x,
        torch.tensor([10, 11, 12, 13]),
        torch.zeros(4, dtype=torch.long),
    )
    assert len(buffer) == 3 and buffer.y[:3].tolist() == [10, 12, 13] and buffer.seen == 0
    buffer.write(torch.tensor([1]), x[:1], torch.tensor([20]), torch.ones(1, dtype=torch.long))
    assert buffer.y[:3].tolist() == [10, 20, 13] and buffer.t[:3].tolist() == [0, 1, 0]
    buffer.truncate(2)
    assert len(buffer) == 2 and int(buffer.sample(5).max()) < 2
    with pytest.raises(ConfigError, match="would leave a gap"):
        buffer.write(torch.tensor([4]), x[:1], torch.tensor([1]), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ConfigError, match=r"slots must lie in 0\.\.5"):
        buffer.write(torch.tensor([6]), x[:1], torch.tensor([1]), torch.zeros(1, dtype=torch.long))


def test_class_balanced_filling_evicts_from_the_largest_classes():
    generator = torch.Generator().manual_seed(0)
    buffer = MemoryBuffer(30, (1,))
    # A long run of class 0, then a few of classes 1 and 2, in batches.
    labels = torch.cat([torch.zeros(100), torch.ones(12), torch.full((5,), 2.0)]).long()
    for batch in labels.split(16):
        buffer.class_balanced_add(
            batch[:, None].float(), batch, torch.zeros_like(batch), None, generator
        )
    counts = torch.bincount(buffer.y, minlength=3).tolist()
    assert len(buffer) == 30 and counts == [13, 12, 5]  # classes 1 and 2 whole, class 0 the rest
    assert torch.equal(buffer.x[:, 0].long(), buffer.y)  # rows stay together
    # An equal stream of 6 classes ends with 5 examples each.
    buffer = MemoryBuffer(30, (1,))
    labels = torch.arange(6).repeat_interleave(40)
    for batch in labels.split(32):
        buffer.class_balanced_add(
            batch[:, None].float(), batch, torch.zeros_like(batch), None, generator
        )
    assert torch.bincount(buffer.y).tolist() == [5] * 6


def test_task_balanced_filling_gives_each_task_an_equal_share_reading_only_kept_rows():
    generator = torch.Generator().manual_seed(0)
    buffer = MemoryBuffer(10, (1,))
    reads = []

    class Rows:  # a task's inputs, read a few rows at a time
        def __init__(self, x):
            self.x = x

        def __len__(self):
            return len(self.x)

        def __getitem__(self, rows):
            reads.append(len(rows))
            return self.x[rows]

    for task, size in enumerate([100, 100, 7]):
        x = torch.arange(100 * task, 100 * task + size)[:, None].float()
        t = torch.full((size,), task)
        buffer.balanced_add(
            Rows(x), torch.zeros(size, dtype=torch.long), t, "task", None, generator
        )
        # Only the examples kept were read: all of them while the buffer had room.
        assert reads[-1] == (10 if task == 0 else int((buffer.t == task).sum()))
    assert sorted(buffer.t.bincount().tolist()) == [3, 3, 4]  # 10 slots over 3 tasks
    assert torch.equal(buffer.x[:, 0].long() // 100, buffer.t)  # rows stay together
    assert buffer.seen == 207
    with pytest.raises(ConfigError, match="balances by one of class, task"):
        buffer.balanced_add(x, t, t, "label")


def test_memory_accounting_is_exact_and_known_in_advance():
    for shape, logits in [((1, 28, 28), None), ((3, 32, 32), 100), ((64,), 10)]:
        buffer = MemoryBuffer(200, shape, num_logits=logits)
        tensors = [buffer.x, buffer.y, buffer.t] + ([buffer.logits] if logits else [])
        assert buffer.nbytes == sum(a.element_size() * a.numel() for a in tensors)
        assert buffer.nbytes == buffer_nbytes(200, shape, logits)
        assert buffer.x.dtype == torch.float32 and buffer.y.dtype == buffer.t.dtype == torch.int64
    buffer = MemoryBuffer(200, (1, 28, 28))
    assert buffer.nbytes == 200 * (784 * 4 + 8 + 8)  # 630,400 bytes for 200 MNIST images
    report = buffer.memory_report()
    assert report == {
        "examples": 0,
        "capacity": 200,
        "seen": 0,
        "bytes": 630_400,
        "bytes_per_example": 3152,
    }


def test_misuse_is_a_clear_error():
    with pytest.raises(ConfigError, match="capacity must be a positive integer"):
        MemoryBuffer(0, (1,))
    buffer = MemoryBuffer(4, (2,), num_logits=3)
    y = t = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ConfigError, match=r"inputs of shape \(3,\) do not fit"):
        buffer.reservoir_add(torch.zeros(2, 3), y, t, torch.zeros(2, 3))
    with pytest.raises(ConfigError, match="stores logits"):
        buffer.reservoir_add(torch.zeros(2, 2), y, t)
    with pytest.raises(ConfigError, match=r"logits must be \[2, 3\]"):
        buffer.reservoir_add(torch.zeros(2, 2), y, t, torch.zeros(2, 5))
    with pytest.raises(ConfigError, match="one row per example"):
        buffer.reservoir_add(torch.zeros(2, 2), y[:1], t, torch.zeros(2, 3))


def test_timing_counts_each_operation_once_and_only_inside_its_block():
    from forgetless.buffer import timing
    from forgetless.experiment import RunConfig, run

    buf = MemoryBuffer(4, (2,))
    x, y, t = torch.ones(6, 2), torch.tensor([0, 0, 0, 1, 1, 2]), torch.zeros(6, dtype=int)
    buf.reservoir_add(x, y, t)  # not timed: no block is active
    with timing() as spent:
        buf.class_balanced_add(x, y, t)  # calls balanced_add: one operation
        assert spent.calls == 1 and spent.seconds > 0
        buf.get(buf.sample(2))
        assert spent.calls == 3
        assert {k: calls for k, (_, calls) in spent.by_operation.items()} == {
            "class_balanced_add": 1,
            "sample": 1,
            "get": 1,
        }
        assert sum(s for s, _ in spent.by_operation.values()) == pytest.approx(spent.seconds)
        with pytest.raises(ConfigError, match="already active"), timing():
            pass
    buf.sample(2)
    assert spent.calls == 3
    with timing() as spent:
        result = run(RunConfig(strategy="replay", hidden=[16], iterations=20, progress=False))
    steps = 5 * 20  # split-digits: 5 tasks; replay offers every step's batch to the buffer
    assert spent.calls >= steps and 0 < spent.seconds < result.timings["train"]


# --- The per-step path: cheaper, and draw for draw what it was --------------------------------


def reference_reservoir_add(buffer, x, y, t, logits=None, generator=None, report=True):
    """Algorithm R as the buffer did it before its per-step path was made cheaper: every draw
    tested in NumPy, duplicates resolved by the later example, rows copied by ``write``
    (``index_copy_``)."""
    n, start, capacity = x.shape[0], buffer.seen, buffer.capacity
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    slots = (u.numpy() * np.arange(start + 1, start + n + 1, dtype=np.float64)).astype(np.int64)
    fill = max(0, min(n, capacity - start))
    slots[:fill] = np.arange(start, start + fill)
    positions = np.flatnonzero(slots < capacity)
    # The later example wins: the last position per slot.
    last = {int(s): int(p) for s, p in zip(slots[positions], positions, strict=True)}
    order = sorted(last)
    rows = torch.tensor([last[s] for s in order], dtype=torch.int64)
    buffer.seen += n
    buffer.write(
        torch.tensor(order, dtype=torch.int64),
        x[rows],
        y[rows],
        t[rows],
        None if logits is None else logits[rows],
    )
    return torch.tensor(order, dtype=torch.int64) if report else None


def reference_sample(buffer, n, generator=None):
    """The buffer's sample before: the same draws, then a ``.to()`` even where it is a no-op."""
    size, n = len(buffer), min(int(n), len(buffer))
    if 0 < 4 * n <= size:
        draws = torch.randint(size, (2 * n,), generator=generator).numpy()
        values, first = np.unique(draws, return_index=True)
        if len(values) >= n:
            return torch.from_numpy(draws[np.sort(first)[:n]]).to(buffer.device)
    return torch.randperm(size, generator=generator)[:n].to(buffer.device)


def reference_get(buffer, slots):
    from forgetless.buffer import Stored

    slots = slots.to(buffer.device)
    logits = None if buffer.logits is None else buffer.logits.index_select(0, slots)
    return Stored(*(a.index_select(0, slots) for a in (buffer.x, buffer.y, buffer.t)), logits)


def digits_batches(batch: int):
    """The sklearn digits, as float32 inputs with labels and a task id per image, in batches."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16
    y = torch.tensor(digits.target, dtype=torch.int64)
    t = y // 2
    return [(x[i : i + batch], y[i : i + batch], t[i : i + batch]) for i in range(0, len(x), batch)]


def filled_pair(capacity, batch, logits=False, epochs=3):
    """The same digits offered to two buffers, one through the buffer's reservoir_add and one
    through the reference, each with its own generator of the same seed; returns both, their
    generators and, per call, whether the buffer was full and the slots each reported."""
    fast, slow = (MemoryBuffer(capacity, (64,), 10 if logits else None) for _ in range(2))
    gf, gs = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    reported = []
    for epoch in range(epochs):
        for x, y, t in digits_batches(batch):
            z = torch.sin(x[:, :10] * (epoch + 1)) if logits else None
            full = fast.seen >= capacity
            a = fast.reservoir_add(x, y, t, z, gf)
            b = reference_reservoir_add(slow, x, y, t, z, gs)
            reported.append((full, a, b))
    return fast, slow, gf, gs, reported


def assert_same_buffers(a: MemoryBuffer, b: MemoryBuffer):
    assert (len(a), a.seen) == (len(b), b.seen)
    for store_a, store_b in zip(a._arrays(), b._arrays(), strict=True):
        assert torch.equal(store_a[: len(a)], store_b[: len(b)])


@pytest.mark.parametrize(
    ("capacity", "batch", "logits"),
    [(500, 128, False), (500, 128, True), (37, 10, False), (1000, 1797, False), (16, 1, True)],
)
def test_reservoir_steps_give_the_reference_buffer_and_consume_the_same_draws(
    capacity, batch, logits
):
    # A full buffer's step of a few rows (copied one by one), of many (one batch of the whole
    # digits offered to a buffer of 1000: hundreds kept, one gather) and of one-example batches.
    fast, slow, gf, gs, reported = filled_pair(capacity, batch, logits)
    assert_same_buffers(fast, slow)
    assert torch.equal(gf.get_state(), gs.get_state())  # later draws (replay samples) agree too
    for _, a, b in reported:
        assert torch.equal(a, b) and a.dtype == torch.int64
    kept_when_full = [len(a) for full, a, _ in reported if full]
    # Both copies ran: one gather for many rows, row by row for a few, and steps keeping none.
    assert (max(kept_when_full) > ROWS_COPIED_ONE_BY_ONE) == (batch >= 128)
    if batch < 1797:
        assert 0 in kept_when_full and any(0 < k <= ROWS_COPIED_ONE_BY_ONE for k in kept_when_full)


def test_reservoir_without_report_stores_the_same_and_returns_nothing():
    buffers = []
    for report in (True, False):
        buffer, generator = MemoryBuffer(50, (64,)), torch.Generator().manual_seed(2)
        for x, y, t in digits_batches(32):
            returned = buffer.reservoir_add(x, y, t, generator=generator, report=report)
            assert (returned is None) == (not report)
        buffers.append(buffer)
    assert_same_buffers(*buffers)


@pytest.mark.parametrize("side", ["below", "at"])
def test_the_acceptance_bound_keeps_a_draw_at_the_edge(monkeypatch, side):
    # The first example's draw just below (kept) or at (not kept) the smallest value whose
    # product with start + 1 reaches the capacity, the rest far above: a bound that were not
    # widened past rounding could drop the one the sequential algorithm keeps.
    capacity, start, n = 500, 20_001, 8
    edge = np.nextafter(capacity / (start + 1), 2.0)
    while edge * (start + 1) >= capacity:
        edge = np.nextafter(edge, 0.0)
    first = edge if side == "below" else np.nextafter(edge, 2.0)
    draws = torch.tensor([first] + [0.9] * (n - 1), dtype=torch.float64)
    x, y = torch.ones(n, 64), torch.arange(1, n + 1)
    buffers = [MemoryBuffer(capacity, (64,)) for _ in range(2)]
    for buffer in buffers:
        zeros = torch.zeros(capacity, dtype=torch.int64)
        buffer.reservoir_add(torch.zeros(capacity, 64), zeros, zeros)
        buffer.seen = start
    monkeypatch.setattr(torch, "rand", lambda *a, **k: draws.clone())
    kept = buffers[0].reservoir_add(x, y, torch.zeros(n, dtype=torch.int64))
    reference_reservoir_add(buffers[1], x, y, torch.zeros(n, dtype=torch.int64))
    monkeypatch.undo()
    assert_same_buffers(*buffers)
    assert kept.tolist() == ([capacity - 1] if side == "below" else [])
    assert buffers[0].y.max() == (1 if side == "below" else 0)


def test_cast_and_grad_batches_are_stored_as_the_reference_stores_them():
    # Float64 inputs cast into float32 slots, int32 labels, logits that require grad (the
    # torch fallback): the same values either way.
    fast, slow = MemoryBuffer(40, (64,), 10), MemoryBuffer(40, (64,), 10)
    gf, gs = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    for x, y, t in digits_batches(50):
        x64, y32 = x.double() / 3, y.int()
        z = torch.cos(x[:, :10]).requires_grad_()
        fast.reservoir_add(x64, y32, t, z, gf)
        reference_reservoir_add(slow, x64, y32, t, z.detach(), gs)
    assert_same_buffers(fast, slow)


def digits_run(strategy, reference: bool, monkeypatch):
    """Split-digits with ``strategy``, through the buffer's per-step path or the reference
    one; returns the result, the buffer, and every batch the strategy's ``batch`` returned."""
    from forgetless import train
    from forgetless.models import build_model
    from forgetless.scenarios import make_stream

    if reference:
        monkeypatch.setattr(MemoryBuffer, "reservoir_add", reference_reservoir_add)
        monkeypatch.setattr(MemoryBuffer, "sample", reference_sample)
        monkeypatch.setattr(MemoryBuffer, "get", reference_get)
    batches = []
    joined = strategy.batch

    def batch(learner, x, y, t):
        out = joined(learner, x, y, t)
        batches.append([a.clone() for a in out])
        return out

    strategy.batch = batch
    stream = make_stream("split-digits")
    model = build_model("mlp", stream.input_shape, stream.num_outputs, hidden=[32], seed=1)
    result = train(stream, model, strategy, seed=1, epochs=2, batch_size=32, lr=0.1, progress=False)
    monkeypatch.undo()
    return result, strategy.buffer, batches


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(buffer_update="task"),
        dict(replay_draw="passes"),
        dict(buffer_policy="task-balanced"),
        dict(buffer_policy="class-balanced"),
        dict(buffer_policy="task-balanced", buffer_update="task", replay_draw="passes"),
        dict(buffer_policy="class-balanced", buffer_update="task"),
    ],
    ids=lambda o: "-".join(o.values()) or "reservoir-step",
)
def test_replay_runs_are_bit_identical_to_the_reference_buffer(options, monkeypatch):
    from forgetless.strategies.replay import Replay

    runs = [digits_run(Replay(buffer_size=60, **options), ref, monkeypatch) for ref in (0, 1)]
    (fast, fast_buffer, fast_batches), (slow, slow_buffer, slow_batches) = runs
    assert fast.accuracy_matrix == slow.accuracy_matrix
    assert_same_buffers(fast_buffer, slow_buffer)
    assert len(fast_batches) == len(slow_batches) > 50
    for a, b in zip(fast_batches, slow_batches, strict=True):
        assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert any(len(a[0]) > 32 for a in fast_batches)  # stored examples were replayed


@pytest.mark.parametrize("name", ["der", "derpp", "agem"])
def test_der_and_agem_runs_are_bit_identical_to_the_reference_buffer(name, monkeypatch):
    from forgetless.strategies import make_strategies

    runs = [
        digits_run(make_strategies(name, {"buffer_size": 60})[0], ref, monkeypatch)
        for ref in (0, 1)
    ]
    (fast, fast_buffer, _), (slow, slow_buffer, _) = runs
    assert fast.accuracy_matrix == slow.accuracy_matrix
    assert_same_buffers(fast_buffer, slow_buffer)  # DER's logits included
