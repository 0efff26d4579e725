"""The memory buffer: reservoir sampling is uniform and sequential, memory is exact, misuse is clear."""

import numpy as np
import pytest
import torch
from scipy import stats

from forgetless import ConfigError
from forgetless.buffer import MemoryBuffer, buffer_nbytes

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
        with pytest.raises(ConfigError, match="already active"), timing():
            pass
    buf.sample(2)
    assert spent.calls == 3
    with timing() as spent:
        result = run(RunConfig(strategy="replay", hidden=[16], iterations=20, progress=False))
    steps = 5 * 20  # split-digits: 5 tasks; replay offers every step's batch to the buffer
    assert spent.calls >= steps and 0 < spent.seconds < result.timings["train"]
