"""The CNN of seed article 2 (``--model cnn``): engine against a bare loop and the conv bound.

Issue 17, goal 4. The article's run (MNIST then Fashion-MNIST, Adam lr 1e-3, batch 32, 2
epochs per task, 1 thread) trains 7,500 steps of this CNN. Here, in one process, alternating
for ``--repeats`` rounds, ``--steps`` steps on MNIST:

- ``bare``: a hand-written loop, Adam lr 1e-3, batch 32, over the model as ``build_model``
  makes it (NCHW, each ReLU applied after its max-pool: the same numbers as the other order);
- ``bare-relu-then-pool``: the same computing ReLU, then max-pool, as the modules are listed
  (the CNN's forward pass before it pooled first);
- ``bare-channels-last``: the model and each batch in ``channels_last`` (and
  ``bare-channels-last-relu-then-pool``);
- ``bare-channels-last-adam-foreach`` / ``-adam-fused``: the same with ``torch.optim.Adam(
  foreach=True)`` / ``(fused=True)`` (other arithmetic than the default for-loop Adam);
- ``engine``: ``train`` with ``iterations=steps`` (fine-tuning, one task);
- ``engine-channels-last``: the same with ``memory_format="channels_last"``;
- ``engine-bf16``, ``engine-channels-last-bf16``: with ``precision="bfloat16"``;
- ``bare-channels-last-2-threads``, ``engine-channels-last-2-threads``: on 2 threads
  (unless ``--threads`` is 2 already; their ratio to ``bare`` is on the wall clock);
- the **conv bound**: the two convolutions alone, forward and backward (conv1's weight
  gradient; conv2's input and weight gradients) on tensors of the step's shapes, in NCHW and
  in channels_last (oneDNN), best of 5 rounds, with the fully connected products beside them.

Times are on the wall and CPU (``process_time``) clocks; the report gives each variant's
time per step, the bound's share of it and its speed against ``bare`` (medians of the
per-round ratios), and which runs end with the same weights.

    python benchmarks/cnn_speed.py --data-dir DATA [--threads 1] [--steps 200] [--repeats 3]
        [--out benchmarks/results/cnn_speed.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from forgetless.engine import FitConfig, train
from forgetless.models import build_model
from forgetless.provenance import provenance
from forgetless.scenarios import make_stream
from speed import cpu_model, load_average, max_weight_difference, others_cpu_share
from step_speed import Clock, best_time, training_only

BATCH = 32
LR = 1e-3
SEED = 0


def log(message: str) -> None:
    print(f"[cnn_speed] {message}", file=sys.stderr, flush=True)


def conv_bound(channels_last: bool) -> dict[str, float]:
    """Seconds per step of the CNN's two convolutions, forward and backward, alone; and of its
    two fully connected layers' products (forward and backward), for comparison."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    conv1, conv2 = nn.Conv2d(1, 32, 3, padding=1), nn.Conv2d(32, 64, 3, padding=1)
    conv1, conv2 = conv1.to(memory_format=fmt), conv2.to(memory_format=fmt)
    x1 = torch.randn(BATCH, 1, 28, 28).contiguous(memory_format=fmt)
    x2 = torch.randn(BATCH, 32, 14, 14).contiguous(memory_format=fmt).requires_grad_()
    g1 = torch.randn(BATCH, 32, 28, 28).contiguous(memory_format=fmt)
    g2 = torch.randn(BATCH, 64, 14, 14).contiguous(memory_format=fmt)

    def convs() -> None:
        torch.autograd.backward([conv1(x1), conv2(x2)], [g1, g2])

    wall, cpu = best_time(convs)
    fc1, fc2 = nn.Linear(3136, 128), nn.Linear(128, 10)
    h = torch.randn(BATCH, 3136)
    hr = torch.randn(BATCH, 128, requires_grad=True)
    gf1, gf2 = torch.randn(BATCH, 128), torch.randn(BATCH, 10)

    def fcs() -> None:
        torch.autograd.backward([fc1(h), fc2(hr)], [gf1, gf2])

    fc_wall, fc_cpu = best_time(fcs)
    return {"conv_wall_s": wall, "conv_cpu_s": cpu, "fc_wall_s": fc_wall, "fc_cpu_s": fc_cpu}


def bare(
    stream,
    steps: int,
    channels_last: bool = False,
    relu_then_pool: bool = False,
    adam: dict[str, Any] | None = None,
):
    task = stream.tasks[0]
    model = build_model("cnn", stream.input_shape, stream.num_outputs, seed=SEED)
    if relu_then_pool:
        model.forward = lambda x: nn.Sequential.forward(model, x)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    generator = torch.Generator().manual_seed(SEED)
    x_all, y_all, scale = task.train.x, task.train.y, task.train.scale
    with Clock() as c:
        optimizer = torch.optim.Adam(model.parameters(), lr=LR, **(adam or {}))
        done = 0
        while done < steps:
            for idx in torch.randperm(len(x_all), generator=generator).split(BATCH):
                if done == steps:
                    break
                x = x_all[idx].float().mul_(scale).contiguous(memory_format=fmt)
                loss = F.cross_entropy(model(x), y_all[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                done += 1
    return c, model


def engine(
    stream,
    steps: int,
    precision: str = "float32",
    memory_format: str = "contiguous",
    adam: dict[str, Any] | None = None,
):
    model = build_model("cnn", stream.input_shape, stream.num_outputs, seed=SEED)
    fit = FitConfig(
        iterations=steps, batch_size=BATCH, optimizer="adam", lr=LR, progress=False,
        precision=precision, memory_format=memory_format, optimizer_options=adam,
    )  # fmt: skip
    one = dataclasses.replace(stream, tasks=stream.tasks[:1])
    with Clock() as c:
        train(one, model, "finetune", fit=fit, seed=SEED)
    return c, model


def on_threads(threads: int, make):
    """``make`` run with ``threads`` torch threads, then the previous count back."""

    def run(steps: int):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return make(steps)
        finally:
            torch.set_num_threads(before)

    return run


#: Pairs of variants whose final weights the report compares (the same arithmetic: 0).
SAME_WEIGHTS = (
    ("engine", "bare"),
    ("bare-relu-then-pool", "bare"),
    ("bare-channels-last-relu-then-pool", "bare-channels-last"),
    ("engine-channels-last", "bare-channels-last"),
    ("engine-channels-last", "engine"),
    ("bare-channels-last-adam-foreach", "bare-channels-last"),
    ("bare-channels-last-adam-fused", "bare-channels-last"),
    ("engine-channels-last-adam-foreach", "bare-channels-last-adam-foreach"),
    ("engine-channels-last-adam-fused", "bare-channels-last-adam-fused"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--skip",
        type=lambda text: text.split(","),
        default=[],
        help="variants left out, a comma list (engine-bf16: slow on CPUs without bfloat16 units)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cnn_speed.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    stream = training_only(make_stream("mnist-fashion", seed=SEED, data_dir=args.data_dir))
    cl = dict(channels_last=True)
    makers = {
        "bare": lambda n: bare(stream, n),
        "bare-relu-then-pool": lambda n: bare(stream, n, relu_then_pool=True),
        "bare-channels-last": lambda n: bare(stream, n, **cl),
        "bare-channels-last-relu-then-pool": lambda n: bare(stream, n, **cl, relu_then_pool=True),
        "bare-channels-last-adam-foreach": lambda n: bare(stream, n, **cl, adam={"foreach": True}),
        "bare-channels-last-adam-fused": lambda n: bare(stream, n, **cl, adam={"fused": True}),
        "engine": lambda n: engine(stream, n),
        "engine-channels-last": lambda n: engine(stream, n, memory_format="channels_last"),
        "engine-channels-last-adam-foreach": lambda n: engine(
            stream, n, memory_format="channels_last", adam={"foreach": True}
        ),
        "engine-channels-last-adam-fused": lambda n: engine(
            stream, n, memory_format="channels_last", adam={"fused": True}
        ),
        "engine-bf16": lambda n: engine(stream, n, "bfloat16"),
        "engine-channels-last-bf16": lambda n: engine(
            stream, n, "bfloat16", memory_format="channels_last"
        ),
    }
    if args.threads != 2:
        makers["bare-channels-last-2-threads"] = on_threads(2, makers["bare-channels-last"])
        makers["engine-channels-last-2-threads"] = on_threads(2, makers["engine-channels-last"])
    unknown = set(args.skip) - set(makers) | {"bare"} & set(args.skip)
    if unknown:
        parser.error(f"--skip: no variant {', '.join(sorted(unknown))} (bare is the reference)")
    makers = {name: make for name, make in makers.items() if name not in args.skip}
    load_before = load_average()
    log(f"threads {args.threads}, load {load_before}")
    for make in makers.values():  # warm-up: allocations, oneDNN's kernels for these shapes
        make(min(args.steps, 20))
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in makers}
    bounds: dict[str, list[dict[str, float]]] = {"nchw": [], "channels_last": []}
    models: dict[str, nn.Module] = {}
    with others_cpu_share() as busy:
        for r in range(args.repeats):
            bounds["nchw"].append(conv_bound(False))
            bounds["channels_last"].append(conv_bound(True))
            for name in makers if r % 2 == 0 else list(makers)[::-1]:
                clock, models[name] = makers[name](args.steps)
                runs[name].append({"wall": clock.wall, "cpu": clock.cpu})
                log(f"round {r + 1} {name}: {clock.wall:.2f} s wall, {clock.cpu:.2f} s CPU")
    best = {fmt: {k: min(b[k] for b in rows) for k in rows[0]} for fmt, rows in bounds.items()}
    conv_floor = {k: min(best[f][f"conv_{k}_s"] for f in best) for k in ("wall", "cpu")}
    fc = {k: best["nchw"][f"fc_{k}_s"] for k in ("wall", "cpu")}
    summary: dict[str, Any] = {}
    for name, rows in runs.items():
        row: dict[str, Any] = {}
        for k in ("wall", "cpu"):
            step = statistics.median(r[k] for r in rows) / args.steps
            row[f"step_{k}_ms"] = round(step * 1e3, 3)
            row[f"conv_bound_share_{k}"] = round(conv_floor[k] / step, 4)
            row[f"conv_and_fc_bound_share_{k}"] = round((conv_floor[k] + fc[k]) / step, 4)
        for k in ("wall", "cpu"):
            pairs = [b[k] / e[k] for b, e in zip(runs["bare"], rows, strict=True)]
            row[f"bare_over_this_{k}_median"] = round(statistics.median(pairs), 4)
        summary[name] = row
    same_weights = {
        f"{a} vs {b}": max_weight_difference(models[a], models[b])
        for a, b in SAME_WEIGHTS
        if a in models and b in models
    }
    report = {
        "benchmark": f"CNN (conv 32, conv 64, fc 128, 10) on MNIST, Adam lr {LR}, batch {BATCH}, "
        f"{args.steps} steps a run",
        "threads": args.threads,
        "repeats": args.repeats,
        "bound_ms_per_step": {
            fmt: {k: round(v * 1e3, 3) for k, v in values.items()} for fmt, values in best.items()
        },
        "summary": summary,
        "final_weights_max_abs_diff": same_weights,
        "runs": runs,
        "environment": {
            "cpu_model": cpu_model(),
            "torch": torch.__version__,
            "mkldnn": torch.backends.mkldnn.is_available(),
            "load_average_before": load_before,
            "load_average_after": load_average(),
            "others_cpu_share": busy["share"],
        },
        "provenance": provenance(),
    }
    text = json.dumps(report, indent=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
