"""Avalanche 0.6.0 against forgetless on one protocol: accuracy, and the wall time a user waits.

Usage::

    python benchmarks/avalanche_compare.py --data-dir DATA --avalanche-python AVL/bin/python \\
        [--repeats 3] [--seed 0] [--threads 1] [--strategies naive ewc replay] \\
        [--out benchmarks/results/avalanche_compare.json]

Avalanche is never a dependency of forgetless and nothing in the package imports it: it lives in
an environment of its own (``--avalanche-python``, a virtual environment with
``avalanche-lib==0.6.0`` and the same torch), and this script only starts that interpreter on
itself (``--worker avalanche``). Without it the script says so and skips (exit 0).

The protocol of issue 17: Split-MNIST class-IL (5 tasks of 2 classes, the class order
``torch.randperm(10)`` from the seed, as ``forgetless``'s split draws it, given to Avalanche as
``fixed_class_order``), MLP 784-400-400-10 (the same initial weights: ``torch.manual_seed`` then
the same layers), plain SGD lr 0.05, batch 128, 1 epoch per task, the whole test set after each
task. Strategies:

- ``naive``: Avalanche's ``Naive``; ours ``finetune``.
- ``ewc``: Avalanche's ``EWC(ewc_lambda=1000, mode="separate")``, whose Fisher is the mean of
  squared mini-batch gradients and whose penalty has no 1/2; ours ``ewc --fisher batched --lam
  2000``, the same penalty.
- ``replay``: Avalanche's ``Replay(mem_size=500)`` (an experience-balanced buffer updated at
  each task's end, a full memory batch beside each batch); ours ``replay --buffer-size 500`` with
  the defaults (``replay``) and with Avalanche's settings (``replay-avalanche-settings``:
  ``--standardize dataset --buffer-policy task-balanced --buffer-update task --replay-draw
  passes``).

Avalanche's MNIST inputs are standardised (its ``SplitMNIST`` normalises with 0.1307 / 0.3081):
here it gets the same IDX files, read with NumPy, as float tensors standardised once (faster
than its per-example torchvision transforms, so its times are, if anything, flattered), through
``nc_benchmark`` over ``TensorDataset``s. It reads them uncompressed, decompressed once before
the first measurement into a temporary folder, as torchvision keeps MNIST after its download
(ours reads its decoded cache, ``forgetless.data.decoded``, warmed by the same first pass). Evaluation: its ``EvaluationPlugin`` with the stream
accuracy only and no logger.

Each measurement is a fresh process, timed from before its start to its exit: the import of
torch and of the library, reading the data, training and every evaluation (ours is the
``forgetless run`` command line, ``--json``). Runs alternate (Avalanche first, then ours, the
order flipped at each repeat); ``ratio`` is the median over repeats of Avalanche's wall over
ours, per strategy, measured in the same run. Each worker also reports its own split of the time
(imports, data, training with evaluation). Prints one JSON object on stdout.

The bound, measured in the same run: the fastest any torch program could run the protocol on
this machine, ``python -c 'import torch'`` (a fresh process, timed in turn with the runs, its
median) plus the protocol's matrix products at the machine's float32 matmul rate with the run's
threads (``--worker bound``, a fresh process): training's forward and backward products (the
eight of a step, as ``step_speed.py`` times them at batch 128: its ``step_products``), each
evaluation's forward products (timed at Avalanche's evaluation batch, 1024), and what the
strategy adds by its definition (Avalanche's EWC: a forward and backward pass over each task's
data for the Fisher; its replay: a memory batch as large as the new one beside each batch after
the first task). Everything else (data, losses, updates, the library) is taken to cost nothing,
so no program is faster; ``avalanche / bound`` above 5 is what would let a 5x ratio be reached at
all. The summary gives each side's wall over the bound beside the ratio.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STRATEGIES = ("naive", "ewc", "replay")
#: forgetless's side of each comparison: the strategy and its options on the command line.
OURS: dict[str, list[tuple[str, list[str]]]] = {
    "naive": [("finetune", ["--strategy", "finetune"])],
    "ewc": [("ewc", ["--strategy", "ewc", "--fisher", "batched", "--lam", "2000"])],
    "replay": [
        ("replay", ["--strategy", "replay", "--buffer-size", "500"]),
        (
            "replay-avalanche-settings",
            [
                "--strategy",
                "replay",
                "--buffer-size",
                "500",
                "--standardize",
                "dataset",
                "--buffer-policy",
                "task-balanced",
                "--buffer-update",
                "task",
                "--replay-draw",
                "passes",
            ],
        ),
    ],
}
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
LAYERS = [(784, 400), (400, 400), (400, 10)]
TRAIN_BATCH, EVAL_BATCH = 128, 1024


# --- the Avalanche worker (runs under --avalanche-python) --------------------------------------


def _read_idx(path: Path):
    import numpy as np

    with gzip.open(path) if path.suffix == ".gz" else path.open("rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _mnist_file(data_dir: Path, name: str) -> Path:
    for candidate in (data_dir / "mnist" / name, data_dir / name):
        for path in (candidate, candidate.with_name(candidate.name + ".gz")):
            if path.exists():
                return path
    raise SystemExit(f"avalanche_compare: no MNIST file {name} under {data_dir}")


def avalanche_worker(strategy: str, data_dir: Path, seed: int, threads: int) -> dict[str, Any]:
    """Train one Avalanche strategy on the protocol; accuracy matrix and time split."""
    started = time.perf_counter()
    import torch

    torch.set_num_threads(threads)
    # torchvision's published wheels for torch 2.13 are CUDA builds whose compiled ops do not
    # load beside the CPU torch; it then registers fake kernels for two of them and fails.
    # Declaring the two schemas lets it import (MNIST tensors need none of its ops).
    library = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import warnings

    warnings.filterwarnings("ignore")
    from avalanche.benchmarks.scenarios.deprecated.generators import nc_benchmark
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.supervised import EWC, Naive, Replay
    from torch import nn
    from torch.utils.data import TensorDataset

    imported = time.perf_counter()
    sets = []
    for prefix in ("train", "t10k"):
        images = _read_idx(_mnist_file(data_dir, f"{prefix}-images-idx3-ubyte"))
        labels = _read_idx(_mnist_file(data_dir, f"{prefix}-labels-idx1-ubyte"))
        x = torch.from_numpy(images.copy()).float().div_(255).sub_(MNIST_MEAN).div_(MNIST_STD)
        sets.append(TensorDataset(x[:, None], torch.from_numpy(labels.astype("int64"))))
    order = torch.randperm(10, generator=torch.Generator().manual_seed(seed)).tolist()
    benchmark = nc_benchmark(
        sets[0], sets[1], n_experiences=5, task_labels=False, fixed_class_order=order
    )
    loaded = time.perf_counter()

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 400),
        nn.ReLU(),
        nn.Linear(400, 400),
        nn.ReLU(),
        nn.Linear(400, 10),
    )
    common = dict(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
        criterion=nn.CrossEntropyLoss(),
        train_mb_size=128,
        train_epochs=1,
        eval_mb_size=1024,
        device="cpu",
        evaluator=EvaluationPlugin(accuracy_metrics(experience=True, stream=True), loggers=[]),
    )
    if strategy == "naive":
        cl = Naive(**common)
    elif strategy == "ewc":
        cl = EWC(ewc_lambda=1000.0, mode="separate", **common)
    else:
        cl = Replay(mem_size=500, **common)
    matrix = []
    for experience in benchmark.train_stream:
        cl.train(experience)
        metrics = cl.eval(benchmark.test_stream)
        matrix.append(
            [
                float(metrics[f"Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp{j:03d}"])
                for j in range(5)
            ]
        )
    final = float(metrics["Top1_Acc_Stream/eval_phase/test_stream/Task000"])
    done = time.perf_counter()
    return {
        "acc": final,
        "matrix": matrix,
        "class_order": order,
        "seconds": {
            "imports": imported - started,
            "data": loaded - imported,
            "train_and_eval": done - loaded,
        },
    }


# --- the bound (runs under this environment's python, as a fresh process) --------------------


def protocol_flop(train_sizes: list[int], tests: int) -> dict[str, tuple[float, float]]:
    """Each strategy's (training, evaluation) FLOPs of matrix products on the protocol: tasks
    of ``train_sizes`` examples, the ``tests`` test examples evaluated after each task."""
    step = sum(2 * i * o * (2 if k == 0 else 3) for k, (i, o) in enumerate(LAYERS))
    forward = sum(2 * i * o for i, o in LAYERS)
    trained = sum(train_sizes)
    # What each strategy's definition adds to plain training, in training examples: EWC's
    # Fisher, a forward and backward pass over each task's data; replay's memory batch.
    extra = {"naive": 0, "ewc": trained, "replay": sum(train_sizes[1:])}
    evaluated = len(train_sizes) * tests
    return {name: ((trained + more) * step, evaluated * forward) for name, more in extra.items()}


def bound_worker(data_dir: Path, seed: int, threads: int) -> dict[str, Any]:
    """The protocol's matrix products and this machine's float32 rate for them."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from forgetless.scenarios import make_stream
    from step_speed import best_time, step_products

    torch.set_num_threads(threads)
    stream = make_stream("split-mnist", seed=seed, data_dir=str(data_dir))
    train_sizes = [len(task.train) for task in stream.tasks]
    tests = sum(len(task.test) for task in stream.tasks)  # the whole test set
    step, step_flop = step_products(LAYERS, TRAIN_BATCH, torch.float32)
    step_wall, _ = best_time(step)
    weights = [torch.randn(o, i) for i, o in LAYERS]
    biases = [torch.randn(o) for _, o in LAYERS]
    inputs = [torch.randn(EVAL_BATCH, i) for i, _ in LAYERS]

    def forward() -> None:
        for w, b, x in zip(weights, biases, inputs, strict=True):
            torch.addmm(b, x, w.t())

    forward_wall, _ = best_time(forward)
    forward_flop = sum(2 * EVAL_BATCH * i * o for i, o in LAYERS)
    step_rate, forward_rate = step_flop / step_wall, forward_flop / forward_wall
    seconds = {}
    for strategy, (train_flop, eval_flop) in protocol_flop(train_sizes, tests).items():
        seconds[strategy] = {
            "train_flop": train_flop,
            "eval_flop": eval_flop,
            "products_s": train_flop / step_rate + eval_flop / forward_rate,
        }
    return {
        "threads": threads,
        "train_step_gflops": round(step_rate / 1e9, 1),
        "eval_forward_gflops": round(forward_rate / 1e9, 1),
        "train_examples": train_sizes,
        "test_examples": tests,
        "strategies": seconds,
    }


def _bound(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "bound",
               "--data-dir", str(args.data_dir), "--seed", str(args.seed),
               "--threads", str(args.threads)]  # fmt: skip
    _, out = _timed(command, env)
    return json.loads(out.strip().splitlines()[-1])


# --- the parent: alternate runs, time whole processes -------------------------------------------


def _timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"avalanche_compare: {command[:3]}... failed:\n{done.stderr[-3000:]}")
    return wall, done.stdout


def _ours(options: list[str], args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    command = [
        sys.executable,
        "-c",
        "import sys; from forgetless.cli import main; sys.exit(main())",
        "run",
        "--scenario",
        "split-mnist",
        "--protocol",
        "class",
        "--data-dir",
        str(args.data_dir),
        "--model",
        "mlp",
        "--lr",
        "0.05",
        "--batch-size",
        "128",
        "--epochs",
        "1",
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
        "--no-progress",
        "--json",
        *options,
    ]
    wall, out = _timed(command, env)
    result = json.loads(out)
    timings = result["timings"]
    return {
        "wall": wall,
        "acc": result["metrics"]["acc"],
        "matrix": result["accuracy_matrix"],
        "seconds": {
            "train": timings["train"],
            "eval": timings["eval"] + timings.get("baseline_eval", 0.0),
            "outside_train_and_eval": wall - timings["total"],
        },
    }


def _avalanche(
    strategy: str, args: argparse.Namespace, env: dict[str, str], data_dir: Path
) -> dict[str, Any]:
    command = [
        str(args.avalanche_python),
        str(Path(__file__).resolve()),
        "--worker",
        strategy,
        "--data-dir",
        str(data_dir),
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
    ]
    wall, out = _timed(command, env)
    return {"wall": wall, **json.loads(out.strip().splitlines()[-1])}


def _has_avalanche(python: Path | None) -> str | None:
    """Why Avalanche cannot be run, or None."""
    if python is None:
        return "no --avalanche-python given"
    if not python.exists():
        return f"{python} does not exist"
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('avalanche') is None)"
    if subprocess.run([str(python), "-c", probe], capture_output=True, check=False).returncode:
        return f"{python} has no avalanche package (pip install avalanche-lib==0.6.0 there)"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder holding mnist/")
    parser.add_argument("--avalanche-python", type=Path, help="an interpreter with avalanche")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/avalanche_compare.json")
    )
    parser.add_argument("--worker", choices=[*STRATEGIES, "bound"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "bound":
        print(json.dumps(bound_worker(args.data_dir, args.seed, args.threads)))
        return 0
    if args.worker:
        report = avalanche_worker(args.worker, args.data_dir, args.seed, args.threads)
        print(json.dumps(report))
        return 0

    missing = _has_avalanche(args.avalanche_python)
    if missing:
        print(f"avalanche_compare: skipped: {missing}", file=sys.stderr)
        print(json.dumps({"skipped": missing}))
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryDirectory() as raw_dir:
        return _measure(args, env, _decompressed(args.data_dir, Path(raw_dir)))


def _decompressed(data_dir: Path, folder: Path) -> Path:
    """The four MNIST files of ``data_dir``, uncompressed into ``folder``: what torchvision
    keeps after its download."""
    for prefix in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            name = f"{prefix}-{kind}-ubyte"
            source = _mnist_file(data_dir, name)
            opener = gzip.open if source.suffix == ".gz" else open
            with opener(source, "rb") as f:
                (folder / name).write_bytes(f.read())
    return folder


def _measure(args: argparse.Namespace, env: dict[str, str], raw_dir: Path) -> int:
    # Warm-up, not measured: our decoded cache written, both sides' files in the page cache.
    _ours(OURS["naive"][0][1], args, env)
    load_at_start = os.getloadavg()
    runs: dict[str, list[dict[str, Any]]] = {}
    import_torch: list[float] = []
    bounds: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        import_torch.append(_timed([sys.executable, "-c", "import torch"], env)[0])
        bounds.append(_bound(args, env))
        for strategy in args.strategies:
            sides = [("avalanche", strategy, None)] + [
                (name, strategy, options) for name, options in OURS[strategy]
            ]
            if repeat % 2:
                sides.reverse()
            for name, of, options in sides:
                key = f"avalanche-{of}" if options is None else name
                measured = (
                    _avalanche(of, args, env, raw_dir)
                    if options is None
                    else _ours(options, args, env)
                )
                measured["load_average_1min"] = round(os.getloadavg()[0], 2)
                runs.setdefault(key, []).append(measured)
                print(
                    f"[{repeat + 1}/{args.repeats}] {key}: ACC {100 * measured['acc']:.2f}, "
                    f"wall {measured['wall']:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )

    torch_s = statistics.median(import_torch)
    # The fastest rates seen: the bound is a floor, so it takes the machine at its best.
    products = {
        strategy: min(b["strategies"][strategy]["products_s"] for b in bounds)
        for strategy in STRATEGIES
    }
    summary = {}
    for strategy in args.strategies:
        theirs = runs[f"avalanche-{strategy}"]
        bound_s = torch_s + products[strategy]
        avalanche_wall = statistics.median(a["wall"] for a in theirs)
        for name, _ in OURS[strategy]:
            ours = runs[name]
            ratios = [a["wall"] / b["wall"] for a, b in zip(theirs, ours, strict=True)]
            summary[f"{strategy}: avalanche / {name}"] = {
                "wall_ratio_median": round(statistics.median(ratios), 2),
                "wall_ratios": [round(r, 2) for r in ratios],
                "bound_s": round(bound_s, 2),
                "avalanche_over_bound": round(avalanche_wall / bound_s, 2),
                "forgetless_over_bound": round(
                    statistics.median(b["wall"] for b in ours) / bound_s, 2
                ),
                "avalanche_acc": round(100 * theirs[0]["acc"], 2),
                "forgetless_acc": round(100 * ours[0]["acc"], 2),
            }
    report = {
        "protocol": "split-mnist class-IL, MLP 784-400-400-10, SGD lr 0.05, batch 128, 1 epoch "
        "per task, whole test set after each task; one fresh process per measurement",
        "seed": args.seed,
        "threads": args.threads,
        "repeats": args.repeats,
        "summary": summary,
        "bound": {
            "import_torch_s": [round(t, 3) for t in import_torch],
            "import_torch_median_s": round(torch_s, 3),
            "products_s": {k: round(v, 3) for k, v in products.items()},
            "measurements": bounds,
        },
        "runs": runs,
        "load_average_at_start": load_at_start,
        "load_average": os.getloadavg(),
    }
    from grid import publish  # here: the worker mode runs in Avalanche's environment

    publish(report, args.out)  # with the forgetless version and commit (provenance)
    return 0


if __name__ == "__main__":
    sys.exit(main())
