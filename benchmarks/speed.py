"""Training and evaluation speed of the forgetless engine against a bare PyTorch loop.

Everything runs in one process on Split-MNIST (5 tasks, class-incremental) with an MLP
784-400-400-10, batch 128, plain SGD (lr 0.01), one epoch per task:

1. training samples/s of :func:`forgetless.engine.train` (``finetune``; the time is
   ``result.timings["train"]``, which excludes evaluation) against a hand-written loop over the
   same uint8 tensors, with the same model, optimiser and batch order (one ``torch.randperm`` per
   epoch from a generator seeded the same way), alternating the two several times;
2. achieved GFLOP/s of training (analytic FLOP count) against a float32 ``torch.mm`` peak
   measured in the same run;
3. evaluation time (every task after every task, plus the untrained baseline) as a share of
   training time, and against a bare evaluation loop doing the same work;
4. the cost of the tqdm progress bar: off, on but disabled (stderr is no terminal), and on and
   drawing (stderr claims to be a terminal; the text is thrown away).

Each run also records the share of the machine's CPU time that other processes used meanwhile
(from ``/proc/stat``), since a busy machine makes every number here meaningless.

Progress lines go to stderr; one JSON object goes to stdout at the end::

    python benchmarks/speed.py --data-dir /work/shared/data [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import math
import os
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

import forgetless
from forgetless.engine import FitConfig, train
from forgetless.models import build_model
from forgetless.provenance import provenance
from forgetless.scenarios import Stream, make_stream

SCENARIO = "split-mnist"
HIDDEN = (400, 400)
BATCH_SIZE = 128
LR = 0.01
EPOCHS = 1
SEED = 0
EVAL_BATCH_SIZE = FitConfig.eval_batch_size
# The engine's FitConfig.fast_path (--fast-path): "auto", the hand-written MLP step (the
# default), or "off", autograd's step.
FAST_PATH = ["auto"]
RATIO_GOAL = 0.9
EVAL_GOAL_PCT = 10.0
BUSY_SHARE = 0.1  # other processes above this share of all cores: the machine was busy
BAR_MODES = ("bar_on_not_a_tty", "bar_on_drawing")


def log(message: str) -> None:
    """Write one human-readable progress line to the real stderr."""
    print(f"[speed] {message}", file=sys.__stderr__, flush=True)


# --- the machine -------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (or what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, or ``None`` where the OS has none."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _cpu_seconds() -> tuple[float, float] | None:
    """Busy CPU seconds of the whole machine and of this process so far (Linux only)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        with open("/proc/self/stat", encoding="ascii") as stat:
            own = stat.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal ...: all but idle and iowait are busy.
    busy = sum(fields[:8]) - fields[3] - fields[4]
    return busy / tick, (int(own[11]) + int(own[12])) / tick  # utime + stime


@contextlib.contextmanager
def others_cpu_share() -> Iterator[dict[str, float | None]]:
    """Measure the share of all cores that other processes kept busy during the block.

    Yields a dict whose ``"share"`` is filled on exit: 0 on an idle machine, about 0.5 when
    another process kept one of two cores busy; ``None`` where ``/proc`` is missing.
    """
    out: dict[str, float | None] = {"share": None}
    before, start = _cpu_seconds(), time.perf_counter()
    try:
        yield out
    finally:
        after, wall = _cpu_seconds(), time.perf_counter() - start
        if before is not None and after is not None and wall > 0:
            others = (after[0] - before[0]) - (after[1] - before[1])
            out["share"] = round(max(0.0, others) / (wall * (os.cpu_count() or 1)), 3)


# --- the workload ------------------------------------------------------------------------------


def linear_sizes(model: nn.Module) -> list[tuple[int, int]]:
    """``(in_features, out_features)`` of each linear layer, in order."""
    return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]


def flop_counts(sizes: list[tuple[int, int]]) -> dict[str, Any]:
    """Analytic FLOPs per example of the MLP (a multiply-add counts as two FLOPs).

    The convention used for every GFLOP/s in the report: forward ``2*in*out`` per linear layer,
    backward twice the forward (gradients with respect to the weights and to the inputs). The
    first layer needs no gradient with respect to its inputs (the data), so the backward pass
    really does a little less; that exact count is given too. Biases, ReLU, the loss and the SGD
    update are left out (well under 1%).
    """
    forward = sum(2 * i * o for i, o in sizes)
    exact_backward = sum(2 * i * o * (1 if k == 0 else 2) for k, (i, o) in enumerate(sizes))
    return {
        "convention": (
            "forward = 2*in*out per linear layer per example; backward = 2 x forward; "
            "train = 3 x forward; bias, ReLU, loss and SGD update not counted"
        ),
        "forward_per_example": forward,
        "backward_per_example": 2 * forward,
        "train_per_example": 3 * forward,
        "exact_backward_per_example": exact_backward,
        "exact_train_per_example": forward + exact_backward,
    }


def new_model(stream: Stream, hidden: tuple[int, ...] = HIDDEN) -> nn.Module:
    """The benchmark's MLP (or one with other hidden sizes), with the same initial weights
    every time."""
    return build_model("mlp", stream.input_shape, stream.num_outputs, hidden, seed=SEED)


def steps_per_run(stream: Stream) -> int:
    """Optimiser steps in one run: every task's batches, every epoch."""
    return EPOCHS * sum(-(-len(task.train) // BATCH_SIZE) for task in stream.tasks)


@dataclass
class Run:
    """One timed training run.

    Attributes:
        kind: ``"engine"`` (no bar), ``"bare"``, or one of :data:`BAR_MODES`.
        train_s: training seconds (for the engine, ``result.timings["train"]``).
        samples: training examples processed.
        eval_s: evaluation seconds: the engine's ``result.timings["eval"]`` (the evaluations
            after each task; the untrained baseline is not in it); for a bare run, a bare
            evaluation of the same work (:func:`bare_eval_s`), timed apart, right after training.
        other_s: the engine's ``timings["total"] - timings["train"] - timings["eval"]``: the
            baseline evaluation and the loop's own bookkeeping.
        bar_writes: writes the progress bar made to the (fake) stderr.
        others_cpu_share: share of all cores that other processes used during the run.
        model: the trained model.
    """

    kind: str
    train_s: float
    samples: int
    eval_s: float | None = None
    other_s: float | None = None
    bar_writes: int = 0
    others_cpu_share: float | None = None
    model: nn.Module | None = field(default=None, repr=False)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.train_s


class _FakeStderr(io.TextIOBase):
    """A stderr stand-in that throws away what is written; ``tty`` says what it claims to be."""

    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty
        self.writes = 0

    @property
    def encoding(self) -> str:
        return "utf-8"

    def isatty(self) -> bool:
        return self.tty

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.writes += 1
        return len(text)


@contextlib.contextmanager
def stderr_replaced(stream: io.TextIOBase) -> Iterator[io.TextIOBase]:
    """Point ``sys.stderr`` (which the engine hands to tqdm) at ``stream`` for a while."""
    saved = sys.stderr
    sys.stderr = stream
    try:
        yield stream
    finally:
        sys.stderr = saved


def run_engine(stream: Stream, kind: str = "engine", hidden: tuple[int, ...] = HIDDEN) -> Run:
    """Train with :func:`forgetless.engine.train` (finetune).

    Args:
        stream: the Split-MNIST stream.
        kind: ``"engine"`` (``progress=False``), ``"bar_on_not_a_tty"`` (``progress=True`` and a
            stderr that is no terminal, so tqdm disables itself) or ``"bar_on_drawing"``
            (``progress=True`` and a stderr that claims to be a terminal, so the bar draws).
        hidden: the MLP's hidden sizes.
    """
    model = new_model(stream, hidden)
    fit = FitConfig(
        epochs=EPOCHS, batch_size=BATCH_SIZE, optimizer="sgd", lr=LR, progress=kind != "engine",
        fast_path=FAST_PATH[0],
    )  # fmt: skip
    fake = _FakeStderr(tty=kind == "bar_on_drawing")
    with others_cpu_share() as busy, stderr_replaced(fake):
        result = train(stream, model, "finetune", fit=fit, seed=SEED)
    samples = EPOCHS * sum(len(task.train) for task in stream.tasks)
    timings = result.timings
    return Run(
        kind,
        timings["train"],
        samples,
        timings["eval"],
        timings["total"] - timings["train"] - timings["eval"],
        fake.writes,
        busy["share"],
        model,
    )


def run_bare(stream: Stream, hidden: tuple[int, ...] = HIDDEN) -> Run:
    """The training of :func:`run_engine` as a plain PyTorch loop, with no evaluation in between.

    Same tensors (uint8 inputs scaled a batch at a time), same initial weights, a fresh SGD per
    task, and the same batch order: one ``torch.randperm`` per epoch from a generator seeded with
    :data:`SEED`, split into batches of :data:`BATCH_SIZE`. The timed span per task matches the
    engine's: optimiser creation, shuffling and the steps. Once training is done and timed,
    :func:`bare_eval_s` times a bare evaluation of the engine's evaluation work separately.
    """
    model = new_model(stream, hidden)
    generator = torch.Generator().manual_seed(SEED)
    elapsed = 0.0
    samples = 0
    with others_cpu_share() as busy:
        for task in stream.tasks:
            x_all, y_all, scale = task.train.x, task.train.y, task.train.scale or 1.0
            start = time.perf_counter()
            optimizer = torch.optim.SGD(model.parameters(), lr=LR)
            model.train()
            for _ in range(EPOCHS):
                order = torch.randperm(len(x_all), generator=generator)
                for idx in order.split(BATCH_SIZE):
                    x = x_all[idx].float().mul_(scale)
                    loss = F.cross_entropy(model(x), y_all[idx])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
            elapsed += time.perf_counter() - start
            samples += EPOCHS * len(x_all)
        eval_s = bare_eval_s(stream, model)
    return Run("bare", elapsed, samples, eval_s, others_cpu_share=busy["share"], model=model)


@torch.no_grad()
def bare_eval_s(stream: Stream, model: nn.Module) -> float:
    """Seconds a bare loop takes for the work in the engine's ``timings["eval"]``: every task's
    test set, ``len(stream)`` times (after each task; the baseline is timed elsewhere)."""
    model.eval()
    start = time.perf_counter()
    for _ in range(len(stream)):
        for task in stream.tasks:
            correct = 0
            for first in range(0, len(task.test), EVAL_BATCH_SIZE):
                rows = slice(first, first + EVAL_BATCH_SIZE)
                scores = model(task.test.inputs(rows))
                correct += int((scores.argmax(dim=1) == task.test.y[rows]).sum())
    return time.perf_counter() - start


@torch.no_grad()
def max_weight_difference(a: nn.Module, b: nn.Module) -> float:
    """Largest absolute difference between the parameters of two same-shaped models."""
    pairs = zip(a.parameters(), b.parameters(), strict=True)
    return max(float((p - q).abs().max()) for p, q in pairs)


def matmul_gflops(m: int, k: int, n: int, min_time: float = 0.05, rounds: int = 5) -> float:
    """Best-of-``rounds`` GFLOP/s of ``torch.mm`` of float32 ``[m, k] @ [k, n]``."""
    a, b, out = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
    torch.mm(a, b, out=out)  # warm up (allocation, kernel selection)
    calls = 1
    while True:  # enough calls per round to last ``min_time`` seconds
        start = time.perf_counter()
        for _ in range(calls):
            torch.mm(a, b, out=out)
        if time.perf_counter() - start >= min_time:
            break
        calls *= 2
    best = math.inf
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            torch.mm(a, b, out=out)
        best = min(best, (time.perf_counter() - start) / calls)
    return 2 * m * k * n / best / 1e9


MATMUL_SHAPES = {
    "128x784@784x400 (layer 1 forward)": (128, 784, 400),
    "400x128@128x784 (layer 1 weight grad)": (400, 128, 784),
    "128x400@400x400 (layer 2 forward)": (128, 400, 400),
    "4096x784@784x400 (eval batch, layer 1)": (4096, 784, 400),
    "2048x2048@2048x2048": (2048, 2048, 2048),
}


def matmul_peak() -> dict[str, float]:
    """GFLOP/s of float32 matrix products shaped like the workload, and of a large square one."""
    return {name: round(matmul_gflops(*shape), 2) for name, shape in MATMUL_SHAPES.items()}


def best_matmul_peak(measurements: list[dict[str, float]]) -> dict[str, float]:
    """Per shape, the best of several :func:`matmul_peak` measurements (taken at different
    times of the run, so that one busy moment does not lower the peak)."""
    return {name: max(m[name] for m in measurements) for name in measurements[0]}


def bar_update_us(tty: bool, updates: int = 200_000) -> float:
    """Microseconds per ``tqdm.update(1)`` of a bar made the way the engine makes it
    (``disable=None``) on a stderr that is, or is not, a terminal."""
    fake = _FakeStderr(tty)
    with tqdm(total=updates, disable=None, leave=False, file=fake) as bar:
        start = time.perf_counter()
        for _ in range(updates):
            bar.update(1)
        elapsed = time.perf_counter() - start
    return elapsed / updates * 1e6


def per_step_overhead(stream: Stream, repeats: int) -> dict[str, Any]:
    """The engine's fixed cost per step: engine and bare loop with a tiny MLP (784-16-10), where
    the arithmetic is small and loop overheads show. One torch thread: a tiny model gains
    nothing from more, and one thread is far less disturbed by other processes."""
    hidden = (16,)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_engine(stream, hidden=hidden)  # warm-up
        run_bare(stream, hidden=hidden)
        steps = steps_per_run(stream)
        engine, bare = [], []
        for _ in range(repeats + 2):
            engine.append(run_engine(stream, hidden=hidden).train_s / steps * 1e6)
            bare.append(run_bare(stream, hidden=hidden).train_s / steps * 1e6)
    finally:
        torch.set_num_threads(threads)
    return {
        "model": "MLP 784-16-10 (tiny, so per-step overheads dominate), 1 torch thread",
        "engine_us_per_step": [round(v, 1) for v in engine],
        "bare_us_per_step": [round(v, 1) for v in bare],
        "engine_minus_bare_us_per_step_median": round(
            statistics.median(engine) - statistics.median(bare), 1
        ),
        "engine_minus_bare_us_per_step_min": round(min(engine) - min(bare), 1),
    }


def profile_engine(stream: Stream, top: int = 15) -> list[str]:
    """cProfile one engine run (no bar) and return the ``top`` lines by internal time."""
    profiler = cProfile.Profile()
    profiler.enable()
    run_engine(stream)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    lines = [line.rstrip() for line in text.getvalue().splitlines()]
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return [line for line in lines[start:] if line.strip()]


# --- the measurements --------------------------------------------------------------------------


def timed_runs(stream: Stream, repeats: int) -> dict[str, list[Run]]:
    """Alternate engine and bare runs ``repeats`` times (flipping which goes first each time),
    with one engine run per progress-bar mode in every repeat, after an untimed warm-up.

    Returns:
        The runs by kind: ``"engine"``, ``"bare"`` and each of :data:`BAR_MODES`.
    """
    log("warm-up: one engine run and one bare run (not reported)")
    warm = [run_engine(stream), run_bare(stream)]
    busy = max((r.others_cpu_share or 0.0) for r in warm)
    if busy > BUSY_SHARE:
        advice = (
            "timings may be unreliable"
            if torch.get_num_threads() == 1
            else "with as many torch threads as cores every run slows down many times over "
            "(try --threads 1)"
        )
        log(f"WARNING: other processes are using {busy:.0%} of the CPU; {advice}")
    makers: dict[str, Callable[[], Run]] = {
        "engine": lambda: run_engine(stream),
        "bare": lambda: run_bare(stream),
    }
    makers.update({mode: lambda m=mode: run_engine(stream, m) for mode in BAR_MODES})
    runs: dict[str, list[Run]] = {kind: [] for kind in makers}
    for r in range(repeats):
        pair = ["engine", "bare"] if r % 2 == 0 else ["bare", "engine"]
        for kind in [*pair, *BAR_MODES]:
            run = makers[kind]()
            runs[kind].append(run)
            evaluation = "" if run.eval_s is None else f", eval {run.eval_s:.3f} s"
            log(
                f"repeat {r + 1}/{repeats} {kind:>16}: train {run.train_s:.3f} s, "
                f"{run.samples_per_s:,.0f} samples/s{evaluation}; "
                f"other processes used {run.others_cpu_share} of the CPU"
            )
    return runs


def _median(values: list[float], digits: int = 4) -> float:
    return round(statistics.median(values), digits)


def training_section(engine: list[Run], bare: list[Run]) -> dict[str, Any]:
    """Engine against bare loop: samples/s per run, medians and per-pair ratios.

    The headline ``ratio`` is the median over clean pairs, those where other processes used at
    most :data:`BUSY_SHARE` of the CPU during both runs (all pairs if none was clean).
    """
    engine_sps = [r.samples_per_s for r in engine]
    bare_sps = [r.samples_per_s for r in bare]
    ratios = [e / b for e, b in zip(engine_sps, bare_sps, strict=True)]
    clean = [
        ratio
        for ratio, e, b in zip(ratios, engine, bare, strict=True)
        if max(e.others_cpu_share or 0.0, b.others_cpu_share or 0.0) <= BUSY_SHARE
    ]
    headline = statistics.median(clean or ratios)
    assert engine[-1].model is not None and bare[-1].model is not None
    return {
        "engine_samples_per_s": [round(v, 1) for v in engine_sps],
        "bare_samples_per_s": [round(v, 1) for v in bare_sps],
        "engine_train_s": [round(r.train_s, 4) for r in engine],
        "bare_train_s": [round(r.train_s, 4) for r in bare],
        "engine_others_cpu_share": [r.others_cpu_share for r in engine],
        "bare_others_cpu_share": [r.others_cpu_share for r in bare],
        "engine_samples_per_s_median": _median(engine_sps, 1),
        "bare_samples_per_s_median": _median(bare_sps, 1),
        "pair_ratios_engine_over_bare": [round(v, 4) for v in ratios],
        "ratio_median_of_pairs": _median(ratios),
        "ratio_of_medians": round(statistics.median(engine_sps) / statistics.median(bare_sps), 4),
        "clean_pair_ratios": [round(v, 4) for v in clean],
        "ratio": round(headline, 4),
        "ratio_is_from": "clean pairs" if clean else "all pairs (none was clean)",
        "goal_ratio_at_least": RATIO_GOAL,
        "meets_goal": headline >= RATIO_GOAL,
        "final_weights_max_abs_diff_engine_vs_bare": max_weight_difference(
            engine[-1].model, bare[-1].model
        ),
    }


def gflops_section(
    engine: list[Run], bare: list[Run], flops: dict[str, Any], peak: dict[str, float]
) -> dict[str, Any]:
    """Achieved training GFLOP/s (by the stated convention) against the measured matmul peak."""
    per_example = flops["train_per_example"]
    engine_gflops = statistics.median(r.samples_per_s for r in engine) * per_example / 1e9
    bare_gflops = statistics.median(r.samples_per_s for r in bare) * per_example / 1e9
    best = max(peak.values())
    return {
        "engine_train_gflops": round(engine_gflops, 2),
        "bare_train_gflops": round(bare_gflops, 2),
        "matmul_gflops_best": peak,
        "matmul_peak_gflops": best,
        "engine_over_peak": round(engine_gflops / best, 4),
        "bare_over_peak": round(bare_gflops / best, 4),
    }


def evaluation_section(
    stream: Stream, engine: list[Run], bare: list[Run], flops: dict[str, Any]
) -> dict[str, Any]:
    """Evaluation time against training time, against a bare evaluation loop, and in FLOPs.

    ``result.timings["eval"]`` holds the evaluations after each task only; the untrained
    baseline's evaluation falls in ``total - train - eval``, reported as ``other``.
    """
    test_examples = sum(len(t.test) for t in stream.tasks)
    passes = len(stream) * test_examples
    eval_s = [r.eval_s or 0.0 for r in engine]
    other_s = [r.other_s or 0.0 for r in engine]
    bare_eval = [r.eval_s or 0.0 for r in bare]
    pct = [100 * e / r.train_s for e, r in zip(eval_s, engine, strict=True)]
    with_baseline = [
        100 * (e + o) / r.train_s for e, o, r in zip(eval_s, other_s, engine, strict=True)
    ]
    per_example = flops["forward_per_example"]
    train_flop = engine[0].samples * flops["train_per_example"]
    return {
        "what": (
            f'timings["eval"]: every task\'s test set ({test_examples} examples) after each of '
            f"the {len(stream)} tasks, {passes} forward passes in batches of {EVAL_BATCH_SIZE}; "
            "the untrained baseline (one more such evaluation) is not in it but in "
            'timings["total"] - timings["train"] - timings["eval"] ("other")'
        ),
        "engine_eval_s": [round(v, 4) for v in eval_s],
        "engine_other_s": [round(v, 4) for v in other_s],
        "eval_over_train_pct": [round(v, 2) for v in pct],
        "eval_over_train_pct_median": _median(pct, 2),
        "eval_and_baseline_over_train_pct_median": _median(with_baseline, 2),
        "goal_pct_below": EVAL_GOAL_PCT,
        "meets_goal": statistics.median(pct) < EVAL_GOAL_PCT,
        "bare_eval_s": [round(v, 4) for v in bare_eval],
        "engine_eval_over_bare_eval": round(
            statistics.median(eval_s) / statistics.median(bare_eval), 4
        ),
        "eval_flop_over_train_flop_pct": round(100 * passes * per_example / train_flop, 2),
        "eval_and_baseline_flop_over_train_flop_pct": round(
            100 * (passes + test_examples) * per_example / train_flop, 2
        ),
        "engine_eval_gflops": round(passes * per_example / statistics.median(eval_s) / 1e9, 2),
    }


def progress_section(runs: dict[str, list[Run]], steps: int) -> dict[str, Any]:
    """Training samples/s with the bar off, on but disabled, and on and drawing; and the cost of
    one ``update`` call against the time of one training step."""
    off = statistics.median(r.samples_per_s for r in runs["engine"])
    step_us = statistics.median(r.train_s for r in runs["engine"]) / steps * 1e6
    disabled_us, drawing_us = bar_update_us(tty=False), bar_update_us(tty=True)
    section: dict[str, Any] = {
        "engine_step_us_median": round(step_us, 1),
        "update_us_disabled": round(disabled_us, 3),
        "update_us_drawing": round(drawing_us, 3),
        "update_drawing_over_step_pct": round(100 * drawing_us / step_us, 4),
        "bar_off_samples_per_s_median": round(off, 1),
    }
    for mode in BAR_MODES:
        sps = [r.samples_per_s for r in runs[mode]]
        section[f"{mode}_samples_per_s"] = [round(v, 1) for v in sps]
        section[f"{mode}_over_off_median"] = round(statistics.median(sps) / off, 4)
        section[f"{mode}_writes_per_run"] = runs[mode][-1].bar_writes
        section[f"{mode}_others_cpu_share"] = [r.others_cpu_share for r in runs[mode]]
    return section


def benchmark(data_dir: str, repeats: int, profile: bool) -> dict[str, Any]:
    """Run every measurement and return the report."""
    wall_start = time.perf_counter()
    load_before = load_average()
    threads = torch.get_num_threads()
    log(f"load average before: {load_before}; torch {torch.__version__}, {threads} threads")
    stream = make_stream(SCENARIO, seed=SEED, data_dir=data_dir)
    flops = flop_counts(linear_sizes(new_model(stream)))
    log("matmul peak (1 of 2)")
    peaks = [matmul_peak()]
    runs = timed_runs(stream, repeats)
    engine, bare = runs["engine"], runs["bare"]
    log("per-step overhead with a tiny MLP")
    overhead = per_step_overhead(stream, repeats)
    log("matmul peak (2 of 2)")
    peaks.append(matmul_peak())
    peak = best_matmul_peak(peaks)
    training = training_section(engine, bare)
    report: dict[str, Any] = {
        "benchmark": (
            f"{SCENARIO} class-incremental, MLP 784-{'-'.join(map(str, HIDDEN))}-10, batch "
            f"{BATCH_SIZE}, SGD lr {LR}, {EPOCHS} epoch per task, finetune"
        ),
        "environment": {
            "forgetless": forgetless.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "torch_threads": threads,
            "torch_interop_threads": torch.get_num_interop_threads(),
            "load_average_before": load_before,
        },
        "config": {
            "scenario": SCENARIO,
            "tasks": len(stream),
            "train_examples": engine[0].samples,
            "test_examples": sum(len(t.test) for t in stream.tasks),
            "batch_size": BATCH_SIZE,
            "optimizer": "sgd",
            "lr": LR,
            "epochs_per_task": EPOCHS,
            "seed": SEED,
            "repeats": repeats,
        },
        "flops": flops,
        "training": training,
        "gflops": gflops_section(engine, bare, flops, peak),
        "evaluation": evaluation_section(stream, engine, bare, flops),
        "progress_bar": progress_section(runs, steps_per_run(stream)),
        "per_step_overhead": overhead,
    }
    if profile or not training["meets_goal"]:
        log("profiling one engine run with cProfile")
        report["profile_top_tottime"] = profile_engine(stream)
    load_after = load_average()
    report["environment"]["load_average_after"] = load_after
    shares = [r.others_cpu_share for kind in runs.values() for r in kind]
    known = [v for v in shares if v is not None]
    report["environment"]["others_cpu_share_max"] = max(known) if known else None
    report["environment"]["machine_busy"] = bool(known) and max(known) > BUSY_SHARE
    if report["environment"]["machine_busy"]:
        log(
            f"WARNING: other processes used up to {max(known):.0%} of the CPU during the runs; "
            "timings are unreliable (try --threads 1, or rerun on an idle machine)"
        )
    report["wall_s"] = round(time.perf_counter() - wall_start, 1)
    log(f"done in {report['wall_s']} s; load average after: {load_after}")
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="folder holding mnist/ (the IDX files)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="engine/bare pairs to alternate (default 3)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="cProfile one engine run even if it is fast enough"
    )
    parser.add_argument(
        "--fast-path", choices=("auto", "off"), default="auto",
        help="the engine's step: auto (hand-written, the default) or off (autograd's)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the JSON report on stdout."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    FAST_PATH[0] = args.fast_path
    report = benchmark(args.data_dir, args.repeats, args.profile)
    report["fast_path"] = args.fast_path
    report["provenance"] = provenance()  # the forgetless version and git commit
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
