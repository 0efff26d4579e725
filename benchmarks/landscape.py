"""Loss landscapes: how fast a 2-D grid is, and the seed's claim about skip connections.

Usage::

    python benchmarks/landscape.py --data-dir /work/shared/data [--only timing skip] \\
        [--seeds 0 1 2] [--workers 2] [--threads 2] \\
        [--store benchmarks/results/landscape.jsonl] [--json benchmarks/results/landscape.json] \\
        [--out benchmarks/results/landscape]

``timing`` (issue 6: "a 2-D landscape of 41x41 points for the Split-MNIST MLP on 10,000 test
images takes under 60 s"). The MLP is trained on Split-MNIST (class-IL, 5 tasks, Adam lr 1e-3,
batch 128, 1 epoch per task), for both MLPs the repository's benchmarks use: 784-400-400-10
(``fisher_variants.py``) and 784-100-100-10 (``der_table.py``). Then, in one process with
``--threads`` torch threads: the 41 x 41 plane over two filter-normalised random directions on
the 10,000 MNIST test images with :func:`forgetless.analysis.landscape.loss_plane` (after a
small untimed warm-up), and a naive loop on a 7 x 7 grid of the same plane (for each point: set
the weights of a copy, evaluate the 10,000 images in batches of 2,000 under ``no_grad``, inputs
converted to floats once beforehand), whose time per point, times 1,681, against the batched
time is the speed-up. The 49 naive values are compared with the batched ones at the same points.
The bound: the matrix products alone that the plane cannot avoid (every Linear layer after the
first, 1,681 times over 10,000 inputs in batches of 2,000, into preallocated outputs).
Wall and CPU seconds are both recorded (with one thread, CPU seconds are what the wall time
would be on an idle core; on a shared machine the wall time is not), with the load average
before and after.

``skip`` (seed article 2 and Li et al. 2018: "skip connections give flatter minima; flatter
minima forget less"). ``mnist-fashion`` (MNIST, then Fashion-MNIST on one 10-way output, domain
protocol) with the CNN of ``forgetless.models`` (``cnn``) and the same CNN with parameter-free
skip connections (``cnn-skip``: the same layers and weights, each conv block adding its
zero-padded input before the ReLU); Adam lr 1e-3, batch 128, 1 epoch per task as in
``mnist_fashion.py``; ``--seeds`` seeds (the same seed gives both networks the same initial
weights and batches). At the end of task A (MNIST), on 1,000 MNIST test images drawn from the
seed: the top Hessian eigenvalue (power iteration, relative tolerance 1e-3, at most 50
Hessian-vector products), and three 1-D curves along filter-normalised random directions
(alpha in [-1, 1], 21 points) with the basin width (the interval around 0 where the loss stays
within 0.1 nats of the solution's) and the mean loss at ``|alpha| = 0.5``; then the forgetting
of MNIST after Fashion-MNIST (accuracy after task 1 minus after task 2, on the full test set)
and the loss of both tasks along the straight line from the A solution to the B solution. For
the first seed, a 15 x 15 plane too. The training runs of both parts go through
:func:`forgetless.studies.landscape.solve_tasks` into the run store ``--store`` (default
``benchmarks/results/runs``), ``--workers`` at once through the one sweep runner, and are not
trained again once there; the measures are taken in this process from the stored weights.

Prints one JSON object on stdout (also written to ``--json``); figures (PNG and SVG) go to
``--out``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from forgetless.analysis.landscape import (
    loss_plane,
    parameters_of,
    random_direction,
    set_parameters,
)
from forgetless.analysis.landscape_study import landscape_study
from forgetless.analysis.trajectory import task_subset
from forgetless.data.arrays import ArraySet
from forgetless.experiment import RunConfig
from forgetless.studies.landscape import TaskSolutions, solve_tasks
from grid import log, mean_std, publish

MODELS = ("cnn", "cnn-skip")


def _load() -> tuple[float, float, float]:
    return os.getloadavg()


def timing(data_dir: str, hidden: list[int], threads: int, store: Path) -> dict[str, Any]:
    """The 41 x 41 plane on 10,000 MNIST test images, batched, against a naive loop."""
    config = RunConfig(
        scenario="split-mnist",
        data_dir=data_dir,
        model="mlp",
        hidden=hidden,
        epochs=1,
        batch_size=128,
        optimizer="adam",
        lr=1e-3,
        seed=0,
        progress=False,
    )
    (solved,) = solve_tasks([config], store, tasks=None)
    train_seconds = solved.result.timings["total"]
    torch.set_num_threads(threads)
    model = solved.models[-1]
    test = ArraySet.concat([task.test for task in solved.stream.tasks])
    d1, d2 = random_direction(model, 1), random_direction(model, 2)
    grid = torch.linspace(-1, 1, 41, dtype=torch.float64)
    loss_plane(model, test.subset(torch.arange(500)), d1, d2, grid[:3], grid[:3])  # warm-up
    load_before = _load()
    cpu = time.process_time()
    plane = loss_plane(model, test, d1, d2, grid, grid)
    plane_cpu = time.process_time() - cpu
    load_after = _load()
    # The naive loop: one weight set at a time, the usual way (Li et al.'s code does this).
    small = torch.linspace(-1, 1, 7, dtype=torch.float64)
    x, y = test.inputs(), test.y
    base = parameters_of(model)
    copy_ = copy.deepcopy(model).eval()
    naive = torch.zeros(7, 7, dtype=torch.float64)
    start, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for i, a in enumerate(small):
            for j, b in enumerate(small):
                set_parameters(copy_, {k: base[k] + a * d1[k] + b * d2[k] for k in base})
                total = 0.0
                for s in range(0, len(y), 2000):
                    logits = copy_(x[s : s + 2000])
                    total += float(F.cross_entropy(logits, y[s : s + 2000], reduction="sum"))
                naive[i, j] = total / len(y)
    naive_seconds = time.perf_counter() - start
    naive_cpu = time.process_time() - cpu
    batched_small = loss_plane(model, test, d1, d2, small, small)
    per_point = naive_seconds / 49
    floor = product_floor(model, len(y), 1681)
    return {
        "hidden": hidden,
        "threads": threads,
        "examples": len(y),
        "grid": [41, 41],
        "seconds": round(plane.seconds, 2),
        "cpu_seconds": round(plane_cpu, 2),
        "meets_goal_60s": plane.seconds < 60,
        "product_floor_seconds": round(floor, 2),
        "plane_vs_floor": round(plane.seconds / floor, 2),
        "naive_grid": [7, 7],
        "naive_seconds": round(naive_seconds, 2),
        "naive_cpu_seconds": round(naive_cpu, 2),
        "speedup_cpu": round(naive_cpu / 49 * 1681 / plane_cpu, 2),
        "naive_seconds_per_point": round(per_point, 4),
        "batched_seconds_per_point": round(plane.seconds / 1681, 4),
        "speedup": round(per_point * 1681 / plane.seconds, 2),
        "naive_vs_batched_max_abs_diff": float((naive - batched_small.loss).abs().max()),
        "loss_at_solution": float(plane.loss[20, 20]),
        "loss_range": [float(plane.loss.min()), float(plane.loss.max())],
        "final_accuracy": solved.result.accuracy_matrix[-1],
        "train_seconds": round(train_seconds, 1),
        "load_before_after": [load_before[0], load_after[0]],
        "plane": plane,
    }


def product_floor(model: torch.nn.Module, examples: int, points: int, rows: int = 2000) -> float:
    """Seconds for the matrix products a plane cannot avoid: every Linear layer after the
    first (the first is mixed from three products), once per point, on ``examples`` inputs in
    batches of ``rows``, written into preallocated outputs. The bound for the plane."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][1:]
    inputs = [torch.rand(rows, layer.in_features) for layer in layers]
    outputs = [torch.empty(rows, layer.out_features) for layer in layers]
    weights = [layer.weight.detach().t() for layer in layers]
    batches = -(-examples // rows)
    start = time.perf_counter()
    for _ in range(points * batches):
        for h, w, out in zip(inputs, weights, outputs, strict=True):
            torch.mm(h, w, out=out)
    return time.perf_counter() - start


def skip_config(model: str, seed: int, data_dir: str) -> RunConfig:
    """One (model, seed) of the skip-connection comparison."""
    return RunConfig(
        scenario="mnist-fashion",
        data_dir=data_dir,
        model=model,
        epochs=1,
        batch_size=128,
        optimizer="adam",
        lr=1e-3,
        seed=seed,
        progress=False,
    )


def skip_record(solved: TaskSolutions) -> dict[str, Any]:
    """The measures of one (model, seed) of the skip-connection comparison."""
    model, seed = solved.config.model, solved.config.seed
    train_seconds = solved.result.timings["total"]
    mnist, fashion = (task_subset(t.test, 1000, seed) for t in solved.stream.tasks)
    start = time.perf_counter()
    study = landscape_study(
        solved.models[0],
        mnist,
        solved.models[1],
        fashion,
        directions=3,
        span=1.0,
        resolution=21,
        plane=seed == 0,
        plane_resolution=15,
        hessian=True,
        hessian_examples=1000,
        seed=seed,
    )
    analysis_seconds = time.perf_counter() - start
    matrix = solved.result.accuracy_matrix
    lines = study.lines
    half = [int((lines.alphas - v).abs().argmin()) for v in (-0.5, 0.5)]
    at_solution = float(lines.loss[:, len(lines.alphas) // 2].mean())
    return {
        "model": model,
        "seed": seed,
        "parameters": sum(p.numel() for p in solved.models[0].parameters()),
        "accuracy_matrix": matrix,
        "mnist_after_1": 100 * matrix[0][0],
        "mnist_after_2": 100 * matrix[1][0],
        "fashion_after_2": 100 * matrix[1][1],
        "forgetting": 100 * (matrix[0][0] - matrix[1][0]),
        "sharpness": study.sharpness.value,
        "sharpness_iterations": study.sharpness.iterations,
        "sharpness_converged": study.sharpness.converged,
        "widths": study.widths,
        "mean_width": statistics.fmean(study.widths),
        "loss_at_solution": at_solution,
        "loss_at_half": float(lines.loss[:, half].mean()),
        "study": study.to_dict(),
        "train_seconds": round(train_seconds, 1),
        "analysis_seconds": round(analysis_seconds, 1),
    }


def _skip(args) -> dict[str, Any]:
    torch.set_num_threads(1)
    configs = [skip_config(m, s, args.data_dir) for s in args.seeds for m in MODELS]
    log(f"skip: {len(configs)} runs into {args.store} on {args.workers} workers")
    done = {}
    for solved in solve_tasks(configs, args.store, 2, args.workers):
        record = skip_record(solved)
        done[(record["model"], record["seed"])] = record
        log(
            f"{record['model']} seed {record['seed']}: sharpness {record['sharpness']:.3g}, "
            f"width {record['mean_width']:.3f}, forgetting {record['forgetting']:.1f} "
            f"({record['train_seconds']:.0f} + {record['analysis_seconds']:.0f} s)"
        )
    runs = {m: [done[(m, s)] for s in args.seeds] for m in MODELS}
    keys = (
        "sharpness",
        "mean_width",
        "loss_at_solution",
        "loss_at_half",
        "forgetting",
        "mnist_after_1",
        "mnist_after_2",
        "fashion_after_2",
    )
    summary = {m: {k: mean_std([r[k] for r in rs]) for k in keys} for m, rs in runs.items()}
    for m, rs in runs.items():
        summary[m]["parameters"] = rs[0]["parameters"]
        summary[m]["per_seed"] = {
            k: [round(r[k], 4) for r in rs] for k in ("sharpness", "mean_width", "forgetting")
        }
    paired = {
        k: [round(b[k] - a[k], 4) for a, b in zip(runs["cnn"], runs["cnn-skip"], strict=True)]
        for k in ("sharpness", "mean_width", "forgetting")
    }
    _skip_figures(runs, args.out)
    return {"summary": summary, "skip_minus_plain_per_seed": paired}


def _skip_figures(runs: dict[str, list[dict]], out: Path) -> None:
    from forgetless.analysis.landscape import LossLine, LossPlane
    from forgetless.report.analysis_figures import interpolation_plot, loss_contour, loss_curves
    from forgetless.report.figures import save

    def line(d):
        return LossLine(*(torch.tensor(d[k]) for k in ("alphas", "loss", "accuracy")))

    first = {m: rs[0]["study"] for m, rs in runs.items()}
    seed = runs["cnn"][0]["seed"]
    lines = {m: line(s["lines"]) for m, s in first.items()}
    save(
        loss_curves(lines, f"MNIST loss around the task-A solution (seed {seed})"), out / "skip_1d"
    )
    for m, s in first.items():
        if s["plane"] is not None:
            p = s["plane"]
            plane = LossPlane(
                *(torch.tensor(p[k]) for k in ("alphas", "betas", "loss", "accuracy"))
            )
            save(
                loss_contour(plane, f"{m}: MNIST loss around the task-A solution"),
                out / f"skip_2d_{m}",
            )
        inter = {k: line(v) for k, v in s["interpolation"].items()}
        save(interpolation_plot(inter, f"{m}: from the MNIST solution to the Fashion solution"),
             out / f"skip_interpolation_{m}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--only", nargs="+", choices=("timing", "skip"), default=["timing", "skip"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the timing")
    parser.add_argument("--store", type=Path, default=Path("benchmarks/results/runs"))
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/landscape.json"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/landscape"))
    args = parser.parse_args(argv)
    report: dict[str, Any] = {}
    if args.json.exists():
        report = json.loads(args.json.read_text())
    if "timing" in args.only:
        from forgetless.report.analysis_figures import loss_contour
        from forgetless.report.figures import save

        report["timing"] = []
        for hidden in ([400, 400], [100, 100]):
            record = timing(args.data_dir, hidden, args.threads, args.store)
            plane = record.pop("plane")
            name = "x".join(map(str, hidden))
            title = f"MLP {name} on Split-MNIST: loss on 10,000 MNIST test images"
            save(loss_contour(plane, title), args.out / f"plane_41x41_mlp{name}")
            log(
                f"timing MLP {name}: {record['seconds']} s, speed-up {record['speedup']}x, "
                f"{record['plane_vs_floor']}x the matrix products alone"
            )
            report["timing"].append(record)
    if "skip" in args.only:
        report["skip"] = _skip(args)
    publish(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
