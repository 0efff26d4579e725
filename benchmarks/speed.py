"""Training and evaluation speed of the forgetless engine against a bare PyTorch loop.

Everything runs in one process on Split-MNIST (5 tasks, class-incremental) with an MLP
784-400-400-10, batch 128, plain SGD (lr 0.01), one epoch per task:

1. training samples/s of :func:`forgetless.engine.train` (``finetune``; the time is
   ``result.timings["train"]``, which excludes evaluation) against a hand-written loop over the
   same uint8 tensors, the same model, optimiser and batch order (``torch.randperm`` per epoch
   from a generator seeded the same way), alternating the two several times;
2. achieved GFLOP/s of training (analytic FLOP count) against a float32 ``torch.mm`` peak
   measured in the same run;
3. evaluation time (every task after every task, plus the untrained baseline) as a share of
   training time;
4. the cost of the tqdm progress bar (off, on but disabled because stderr is no terminal, and on
   and drawing to a fake terminal).

Progress goes to stderr; one JSON object goes to stdout at the end::

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
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import forgetless
from forgetless.engine import FitConfig, train
from forgetless.models import build_model
from forgetless.scenarios import Stream, make_stream

SCENARIO = "split-mnist"
HIDDEN = (400, 400)
BATCH_SIZE = 128
LR = 0.01
EPOCHS = 1
SEED = 0
RATIO_GOAL = 0.9
EVAL_GOAL_PCT = 10.0
PROGRESS_MODES = ("off", "on_not_a_tty", "on_drawing")


def log(message: str) -> None:
    """Write one human-readable progress line to stderr."""
    print(f"[speed] {message}", file=sys.stderr, flush=True)


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


def linear_sizes(model: nn.Module) -> list[tuple[int, int]]:
    """``(in_features, out_features)`` of each linear layer, in order."""
    return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]


def flop_counts(sizes: list[tuple[int, int]]) -> dict[str, Any]:
    """Analytic FLOPs per example of the MLP (multiply and add count as two FLOPs).

    The reported convention is forward ``2*in*out`` per linear layer and backward twice the
    forward (gradient with respect to the weights and to the inputs). The first layer needs no
    gradient with respect to its inputs (the data), so the exact backward is a little smaller;
    it is given too. Biases, ReLU, softmax and the SGD update are left out (under 0.5%).
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


def new_model(stream: Stream) -> nn.Module:
    """The benchmark's MLP with the same initial weights every time."""
    return build_model("mlp", stream.input_shape, stream.num_outputs, HIDDEN, seed=SEED)


class _FakeTerminal(io.TextIOBase):
    """A stderr stand-in that claims to be a terminal and throws away what is written."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    @property
    def encoding(self) -> str:
        return "utf-8"

    def isatty(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.writes += 1
        return len(text)


class _NotATerminal(_FakeTerminal):
    """A stderr stand-in that is not a terminal, so tqdm disables itself."""

    def isatty(self) -> bool:
        return False


@contextlib.contextmanager
def stderr_replaced(stream: io.TextIOBase) -> Iterator[io.TextIOBase]:
    """Point ``sys.stderr`` (which the engine hands to tqdm) at ``stream`` for a while."""
    saved = sys.stderr
    sys.stderr = stream
    try:
        yield stream
    finally:
        sys.stderr = saved


def run_engine(stream: Stream, progress: str = "off") -> dict[str, Any]:
    """Train with :func:`forgetless.engine.train` (finetune) and return its timings.

    Args:
        stream: the Split-MNIST stream.
        progress: ``"off"`` (``progress=False``), ``"on_not_a_tty"`` (``progress=True`` with a
            stderr that is no terminal, so tqdm disables itself) or ``"on_drawing"``
            (``progress=True`` with a stderr that claims to be a terminal, so the bar draws).
    """
    model = new_model(stream)
    fit = FitConfig(
        epochs=EPOCHS, batch_size=BATCH_SIZE, optimizer="sgd", lr=LR, progress=progress != "off"
    )
    target: io.TextIOBase = _NotATerminal() if progress == "on_not_a_tty" else _FakeTerminal()
    with stderr_replaced(target):
        result = train(stream, model, "finetune", fit=fit, seed=SEED)
    samples = EPOCHS * sum(len(task.train) for task in stream.tasks)
    return {
        "train_s": result.timings["train"],
        "eval_s": result.timings["eval"],
        "samples": samples,
        "samples_per_s": samples / result.timings["train"],
        "bar_writes": target.writes,
        "model": model,
    }


def run_bare(stream: Stream) -> dict[str, Any]:
    """The same training as :func:`run_engine`, as a plain PyTorch loop without evaluation.

    Same tensors (uint8 inputs scaled per batch), same initial weights, a fresh SGD per task, and
    the same batch order: one ``torch.randperm`` per epoch from a generator seeded with
    :data:`SEED`, split into batches of :data:`BATCH_SIZE`. The timed span per task matches the
    engine's (optimiser creation, shuffling and the steps).
    """
    model = new_model(stream)
    generator = torch.Generator().manual_seed(SEED)
    elapsed = 0.0
    samples = 0
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
    return {"train_s": elapsed, "samples": samples, "samples_per_s": samples / elapsed, "model": model}


@torch.no_grad()
def bare_eval_s(stream: Stream, model: nn.Module, batch_size: int = 4096) -> float:
    """Seconds a bare loop takes for the engine's evaluation work: every task's test set,
    ``len(stream) + 1`` times (after each task and once before training)."""
    model.eval()
    start = time.perf_counter()
    for _ in range(len(stream) + 1):
        for task in stream.tasks:
            correct = 0
            for first in range(0, len(task.test), batch_size):
                rows = slice(first, first + batch_size)
                scores = model(task.test.inputs(rows))
                correct += int((scores.argmax(dim=1) == task.test.y[rows]).sum())
    return time.perf_counter() - start


def max_weight_difference(a: nn.Module, b: nn.Module) -> float:
    """Largest absolute difference between the parameters of two same-shaped models."""
    return max(
        float((p - q).abs().max()) for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )


def matmul_gflops(m: int, k: int, n: int, min_time: float = 0.05, rounds: int = 5) -> float:
    """Best-of-``rounds`` GFLOP/s of ``torch.mm`` of float32 ``[m, k] @ [k, n]``."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)
    torch.mm(a, b, out=out)  # warm up (allocation, kernel selection)
    calls = 1
    while True:  # enough calls per round for ``min_time`` seconds
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


def matmul_peak() -> dict[str, float]:
    """GFLOP/s of matrix products shaped like the workload, and a large square one."""
    shapes = {
        "128x784@784x400 (layer 1 forward)": (128, 784, 400),
        "400x128@128x784 (layer 1 weight grad)": (400, 128, 784),
        "128x400@400x400 (layer 2 forward)": (128, 400, 400),
        "4096x784@784x400 (eval batch, layer 1)": (4096, 784, 400),
        "2048x2048@2048x2048": (2048, 2048, 2048),
    }
    return {name: round(matmul_gflops(*shape), 2) for name, shape in shapes.items()}


def profile_engine(stream: Stream, top: int = 15) -> list[str]:
    """cProfile one engine run (no bar) and return the ``top`` lines by internal time."""
    profiler = cProfile.Profile()
    profiler.enable()
    run_engine(stream, "off")
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    lines = [line.rstrip() for line in text.getvalue().splitlines()]
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return [line for line in lines[start:] if line.strip()]


def median(values: list[float]) -> float:
    """The median, rounded for the report."""
    return round(statistics.median(values), 4)


def timed_runs(stream: Stream, repeats: int) -> dict[str, list[dict[str, Any]]]:
    """Alternate engine and bare runs ``repeats`` times (flipping which goes first each time),
    with one engine run per progress-bar mode in every repeat, after an untimed warm-up.

    Returns:
        The runs by kind: ``"engine"`` (no bar), ``"bare"``, ``"on_not_a_tty"``, ``"on_drawing"``.
    """
    log("warm-up: one engine run and one bare run (not reported)")
    run_engine(stream, "off")
    run_bare(stream)
    runs: dict[str, list[dict[str, Any]]] = {"engine": [], "bare": []}
    runs.update({mode: [] for mode in PROGRESS_MODES[1:]})
    for r in range(repeats):
        kinds = ["engine", "bare"] if r % 2 == 0 else ["bare", "engine"]
        for kind in [*kinds, *PROGRESS_MODES[1:]]:
            if kind == "bare":
                out = run_bare(stream)
            else:
                out = run_engine(stream, "off" if kind == "engine" else kind)
            runs[kind].append(out)
            extra = f", eval {out['eval_s']:.3f} s" if "eval_s" in out else ""
            log(
                f"repeat {r + 1}/{repeats} {kind:>12}: train {out['train_s']:.3f} s, "
                f"{out['samples_per_s']:,.0f} samples/s{extra}"
            )
    return runs


def benchmark(data_dir: str, repeats: int, profile: bool) -> dict[str, Any]:
    """Run every measurement and return the report."""
    wall_start = time.perf_counter()
    load_before = load_average()
    log(f"load average before: {load_before}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {cpu_model()}")
    stream = make_stream(SCENARIO, seed=SEED, data_dir=data_dir)
    train_samples = EPOCHS * sum(len(t.train) for t in stream.tasks)
    test_samples = sum(len(t.test) for t in stream.tasks)
    flops = flop_counts(linear_sizes(new_model(stream)))
    log(f"{SCENARIO}: {len(stream)} tasks, {train_samples} training and {test_samples} test examples")

    runs = timed_runs(stream, repeats)
    engine, bare = runs["engine"], runs["bare"]
    weights_diff = max_weight_difference(engine[-1]["model"], bare[-1]["model"])
    pair_ratios = [e["samples_per_s"] / b["samples_per_s"] for e, b in zip(engine, bare, strict=True)]
    engine_sps = [e["samples_per_s"] for e in engine]
    bare_sps = [b["samples_per_s"] for b in bare]
    ratio_of_medians = statistics.median(engine_sps) / statistics.median(bare_sps)

    log("matmul peak")
    peak = matmul_peak()
    best_peak = max(peak.values())
    train_flop = flops["train_per_example"]
    engine_gflops = statistics.median(engine_sps) * train_flop / 1e9
    bare_gflops = statistics.median(bare_sps) * train_flop / 1e9

    log("bare evaluation of the same work")
    bare_eval = [bare_eval_s(stream, engine[-1]["model"]) for _ in range(repeats)]
    eval_pct = [100 * e["eval_s"] / e["train_s"] for e in engine]
    evals = (len(stream) + 1) * test_samples
    eval_flop = evals * flops["forward_per_example"]
    engine_eval_gflops = eval_flop / statistics.median(e["eval_s"] for e in engine) / 1e9

    bar_report: dict[str, Any] = {
        "off_samples_per_s_median": round(statistics.median(engine_sps), 1)
    }
    for mode in PROGRESS_MODES[1:]:
        sps = [run["samples_per_s"] for run in runs[mode]]
        bar_report[f"{mode}_samples_per_s_median"] = round(statistics.median(sps), 1)
        bar_report[f"{mode}_over_off"] = round(statistics.median(sps) / statistics.median(engine_sps), 4)
        bar_report[f"{mode}_writes_per_run"] = runs[mode][-1]["bar_writes"]

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
            "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            "load_average_before": load_before,
        },
        "config": {
            "scenario": SCENARIO,
            "tasks": len(stream),
            "train_examples": train_samples,
            "test_examples": test_samples,
            "batch_size": BATCH_SIZE,
            "lr": LR,
            "epochs": EPOCHS,
            "seed": SEED,
            "repeats": repeats,
        },
        "flops": flops,
        "training": {
            "engine_samples_per_s": [round(v, 1) for v in engine_sps],
            "bare_samples_per_s": [round(v, 1) for v in bare_sps],
            "engine_train_s": [round(e["train_s"], 4) for e in engine],
            "bare_train_s": [round(b["train_s"], 4) for b in bare],
            "engine_samples_per_s_median": round(statistics.median(engine_sps), 1),
            "bare_samples_per_s_median": round(statistics.median(bare_sps), 1),
            "pair_ratios_engine_over_bare": [round(v, 4) for v in pair_ratios],
            "ratio_median_of_pairs": median(pair_ratios),
            "ratio_of_medians": round(ratio_of_medians, 4),
            "goal_ratio": RATIO_GOAL,
            "meets_goal": statistics.median(pair_ratios) >= RATIO_GOAL,
            "same_final_weights_max_abs_diff": weights_diff,
        },
        "gflops": {
            "engine_train_gflops": round(engine_gflops, 2),
            "bare_train_gflops": round(bare_gflops, 2),
            "matmul_gflops": peak,
            "matmul_peak_gflops": best_peak,
            "engine_over_peak": round(engine_gflops / best_peak, 4),
            "bare_over_peak": round(bare_gflops / best_peak, 4),
            "engine_over_layer1_forward_matmul": round(
                engine_gflops / peak["128x784@784x400 (layer 1 forward)"], 4
            ),
        },
        "evaluation": {
            "what": (
                f"every task's test set ({test_samples} examples) after each of the "
                f"{len(stream)} tasks and once before training: {evals} forward passes"
            ),
            "engine_eval_s": [round(e["eval_s"], 4) for e in engine],
            "eval_over_train_pct": [round(v, 2) for v in eval_pct],
            "eval_over_train_pct_median": round(statistics.median(eval_pct), 2),
            "goal_pct": EVAL_GOAL_PCT,
            "meets_goal": statistics.median(eval_pct) < EVAL_GOAL_PCT,
            "bare_eval_s_median": median(bare_eval),
            "engine_eval_over_bare_eval": round(
                statistics.median(e["eval_s"] for e in engine) / statistics.median(bare_eval), 4
            ),
            "eval_flops_over_train_flops_pct": round(100 * eval_flop / (train_samples * train_flop), 2),
            "engine_eval_gflops": round(engine_eval_gflops, 2),
        },
        "progress_bar": bar_report,
    }
    if profile or statistics.median(pair_ratios) < RATIO_GOAL:
        log("profiling one engine run with cProfile")
        report["profile_top_tottime"] = profile_engine(stream)
    report["environment"]["load_average_after"] = load_average()
    report["wall_s"] = round(time.perf_counter() - wall_start, 1)
    log(f"done in {report['wall_s']} s; load average after: {report['environment']['load_average_after']}")
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="folder holding mnist/ (the IDX files)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="engine/bare pairs to alternate (default 3)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="cProfile one engine run even when it is fast enough"
    )
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
    report = benchmark(args.data_dir, args.repeats, args.profile)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
