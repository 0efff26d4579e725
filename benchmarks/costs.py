"""What the strategies cost in time: the exact Fisher, a whole EWC run, replay's samples/s and
its buffer bookkeeping, each against its alternative measured in the same process.

Usage::

    python benchmarks/costs.py --data-dir /work/shared/data [--only fisher ewc-run replay] \\
        [--threads 1] [--repeats 2] [--out benchmarks/results/costs.json]

``fisher``: the diagonal exact Fisher of the MLP 784-400-400-10 of van de Ven's protocol, trained
briefly on the first Split-MNIST task (task-IL: probabilities over the task's two units), over
12,000 MNIST training images: ``diagonal_fisher`` as used by EWC (closed form for linear layers,
``method="auto"``), the plain ``torch.func`` path (``method="vmap"``: per-example gradients of
every parameter), and a per-example, per-class autograd loop (the obvious implementation), all
three checked to agree. The loop and plain vmap are timed on ``--loop-samples`` images and scaled
to 12,000 (both are linear in the number of examples).

``ewc-run``: van de Ven's protocol (Split-MNIST task-IL, MLP 400-400, Adam 1e-3, 2000 iterations
of 128 per task) with fine-tuning and with online EWC over the exact Fisher of all 12,000 images
of each task, alternating ``--repeats`` times in this process; the ratio of training times
(``timings["train"]``, which includes computing the Fisher) is the cost of EWC. The published
figures (van de Ven 2025) were 121 s against 53 s, 2.3x.

``logging``: the same Split-MNIST run without events, with events written at the default
frequency (a loss every 50 steps, each task's row), and in a run store (events, a checkpoint
after each task, the SQLite index), alternating; overheads in percent of the plain run's wall
time.

``replay``: Split-MNIST class-IL, MLP 400-400, SGD lr 0.01, batch 128, 1 epoch per task: fine-tuning
against replay (500 examples, 128 replayed per step, so twice the examples per step), DER and
A-GEM, alternating. Reports samples/s of incoming data, and the share of training time spent in
the buffer's own operations (reservoir insertion, sampling, gathering), timed by
``forgetless.buffer.timing``, with each operation's microseconds a call.

Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

import fisher_variants
from forgetless.buffer import timing as buffer_timing
from forgetless.engine import train
from forgetless.experiment import RunConfig, run
from forgetless.fisher import diagonal_fisher
from forgetless.models import build_model
from forgetless.provenance import provenance
from forgetless.scenarios import make_stream

SECTIONS = ("fisher", "ewc-run", "replay", "logging")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fisher_section(data_dir: str, loop_samples: int) -> dict[str, Any]:
    stream = make_stream(
        "split-mnist", seed=0, protocol="task", data_dir=data_dir, class_order=list(range(10))
    )
    task = stream.tasks[0]
    torch.manual_seed(0)
    model = build_model("mlp", stream.input_shape, stream.num_outputs, [400, 400])
    train(stream[:1], model, "finetune", iterations=200, optimizer="adam", lr=1e-3, progress=False)
    x, units = task.train.inputs(), list(task.units)
    n = len(x)
    log(f"fisher: {n} images, {sum(p.numel() for p in model.parameters())} weights")

    start = time.perf_counter()
    diagonal_fisher(model, x, units=units, kind="exact")
    auto_s = time.perf_counter() - start

    sub = x[:loop_samples]
    start = time.perf_counter()
    vmapped = diagonal_fisher(model, sub, units=units, kind="exact", method="vmap")
    vmap_s = time.perf_counter() - start

    params = list(model.parameters())
    start = time.perf_counter()
    total = [torch.zeros_like(p) for p in params]
    for i in range(len(sub)):
        log_p = torch.log_softmax(model(sub[i : i + 1])[0, units], -1)
        probs = log_p.detach().exp()
        for k in range(len(units)):
            grads = torch.autograd.grad(log_p[k], params, retain_graph=True)
            for t, g in zip(total, grads, strict=True):
                t += probs[k] * g**2
    looped = [t / len(sub) for t in total]
    loop_s = time.perf_counter() - start

    on_sub = diagonal_fisher(model, sub, units=units, kind="exact")
    agree = max(
        float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
        for a, b in zip(on_sub + vmapped, looped + looped, strict=True)
    )
    scale = n / len(sub)
    cnn = _cnn_fisher(x[:loop_samples])
    return {
        "cnn_10_classes": cnn,
        "images": n,
        "auto_seconds": round(auto_s, 3),
        "vmap_seconds_scaled": round(vmap_s * scale, 2),
        "loop_seconds_scaled": round(loop_s * scale, 2),
        "timed_on_images_for_vmap_and_loop": len(sub),
        "speedup_auto_over_loop": round(loop_s * scale / auto_s, 1),
        "speedup_vmap_over_loop": round(loop_s / vmap_s, 2),
        "max_relative_difference_vs_loop": agree,
    }


def _cnn_fisher(x: torch.Tensor) -> dict[str, Any]:
    """The same comparison for the CNN over all ten classes (seed article 2's model), where
    convolutions have no closed form and go through ``torch.func``."""
    torch.manual_seed(0)
    model = build_model("cnn", (1, 28, 28), 10, None)
    x = x.reshape(len(x), 1, 28, 28)
    timings = {}
    for method in ("auto", "vmap"):
        start = time.perf_counter()
        diagonal_fisher(model, x, kind="exact", method=method)
        timings[method] = time.perf_counter() - start
    params = list(model.parameters())
    start = time.perf_counter()
    for i in range(len(x)):
        log_p = torch.log_softmax(model(x[i : i + 1])[0], -1)
        probs = log_p.detach().exp()
        for k in range(10):
            grads = torch.autograd.grad(log_p[k], params, retain_graph=True)
            for g in grads:
                _ = probs[k] * g**2
    loop = time.perf_counter() - start
    return {
        "images": len(x),
        "auto_seconds": round(timings["auto"], 2),
        "vmap_seconds": round(timings["vmap"], 2),
        "loop_seconds": round(loop, 2),
        "speedup_auto_over_loop": round(loop / timings["auto"], 2),
        "speedup_vmap_over_loop": round(loop / timings["vmap"], 2),
    }


def ewc_config(data_dir: str, variant: str | None, lam: float = 0.0) -> RunConfig:
    """van de Ven's protocol, as ``fisher_variants.py`` runs it (``None``: fine-tuning)."""
    config = fisher_variants.config(0, data_dir, variant, lam)
    config.progress = False
    return config


def alternate(
    configs: dict[str, RunConfig], repeats: int, timed_buffer: bool = False
) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {name: [] for name in configs}
    for r in range(repeats):
        order = list(configs) if r % 2 == 0 else list(reversed(configs))
        for name in order:
            with buffer_timing() if timed_buffer else contextlib.nullcontext() as spent:
                result = run(configs[name])
            record = {"train_seconds": result.timings["train"], "acc": result.metrics["acc"]}
            if timed_buffer:
                record["buffer_seconds"] = spent.seconds
                # Microseconds a call and calls per operation: what the share is made of.
                record["buffer_us_per_call"] = {
                    op: [round(1e6 * seconds / calls, 1), calls]
                    for op, (seconds, calls) in sorted(spent.by_operation.items())
                }
            runs[name].append(record)
            log(f"{name}: {record}")
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--loop-samples", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/costs.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = _load()
    report: dict[str, Any] = {"threads": args.threads, "torch": torch.__version__}
    if "fisher" in args.only:
        report["fisher"] = fisher_section(args.data_dir, args.loop_samples)
        log(json.dumps(report["fisher"]))
    if "ewc-run" in args.only:
        configs = {
            "finetune": ewc_config(args.data_dir, None),
            "online-ewc exact": ewc_config(args.data_dir, "exact", 1e4),
        }
        runs = alternate(configs, args.repeats)
        ratios = [
            e["train_seconds"] / f["train_seconds"]
            for e, f in zip(runs["online-ewc exact"], runs["finetune"], strict=True)
        ]
        report["ewc_run"] = {
            "runs": runs,
            "ratio_per_pair": [round(r, 3) for r in ratios],
            "ratio": round(statistics.median(ratios), 3),
        }
    if "replay" in args.only:
        base = dict(
            scenario="split-mnist",
            class_order=list(range(10)),
            data_dir=args.data_dir,
            model="mlp",
            hidden=[400, 400],
            epochs=1,
            batch_size=128,
            lr=0.01,
            progress=False,
        )
        configs = {
            "finetune": RunConfig(strategy="finetune", **base),
            "replay": RunConfig(
                strategy="replay",
                strategy_params={"buffer_size": 500, "replay_batch_size": 128},
                **base,
            ),
            "der": RunConfig(
                strategy="der",
                strategy_params={"buffer_size": 500, "replay_batch_size": 128},
                **base,
            ),
            "agem": RunConfig(
                strategy="agem",
                strategy_params={"buffer_size": 500, "replay_batch_size": 128},
                **base,
            ),
        }
        runs = alternate(configs, args.repeats, timed_buffer=True)
        samples = 60000
        out = {}
        for name, rs in runs.items():
            out[name] = {
                "samples_per_second": round(
                    statistics.median(samples / r["train_seconds"] for r in rs)
                ),
                "buffer_share_of_training_pct": round(
                    100 * statistics.median(r["buffer_seconds"] / r["train_seconds"] for r in rs), 2
                ),
                "acc": round(100 * statistics.fmean(r["acc"] for r in rs), 2),
            }
            if rs[0]["buffer_us_per_call"]:
                out[name]["buffer_us_per_call_median"] = {
                    op: round(statistics.median(r["buffer_us_per_call"][op][0] for r in rs), 1)
                    for op in rs[0]["buffer_us_per_call"]
                }
        for name in ("replay", "der", "agem"):
            pairs = [
                f["train_seconds"] / r["train_seconds"]
                for r, f in zip(runs[name], runs["finetune"], strict=True)
            ]
            out[name]["speed_vs_finetune"] = round(statistics.median(pairs), 3)
        report["replay"] = out
    if "logging" in args.only:
        report["logging"] = logging_section(args.data_dir, args.repeats)
    report["load_average_before_after"] = [load_before, _load()]
    report["provenance"] = provenance()  # the forgetless version and git commit
    text = json.dumps(report, indent=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)
    return 0


def logging_section(data_dir: str, repeats: int) -> dict[str, Any]:
    """Wall time of one run without events, with events written to a JSON-lines file at the
    default frequency, and in a run store (events, a checkpoint after each task, the index)."""
    import tempfile

    from forgetless.runs import RunStore

    config = RunConfig(
        scenario="split-mnist",
        class_order=list(range(10)),
        data_dir=data_dir,
        model="mlp",
        hidden=[400, 400],
        epochs=1,
        batch_size=128,
        lr=0.01,
        progress=False,
    )
    seconds: dict[str, list[float]] = {"plain": [], "events": [], "store": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats + 1):  # the first round warms up and is dropped
            for name in ("plain", "events", "store") if r % 2 else ("store", "events", "plain"):
                start = time.perf_counter()
                if name == "plain":
                    run(config)
                elif name == "events":
                    with open(Path(tmp) / f"events{r}.jsonl", "w", buffering=1) as sink:
                        run(config, on_event=lambda e, f=sink: f.write(json.dumps(e) + "\n"))
                else:
                    RunStore(Path(tmp) / f"store{r}").execute(config)
                if r > 0:
                    seconds[name].append(time.perf_counter() - start)
                log(f"logging {name}: {time.perf_counter() - start:.2f} s")
    plain = statistics.median(seconds["plain"])
    return {
        "config": "split-mnist, MLP 400-400, batch 128, 1 epoch per task, log_every 50",
        "seconds": {k: [round(v, 3) for v in vs] for k, vs in seconds.items()},
        "events_overhead_pct": round(100 * (statistics.median(seconds["events"]) / plain - 1), 2),
        "store_overhead_pct": round(100 * (statistics.median(seconds["store"]) / plain - 1), 2),
    }


def _load() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


if __name__ == "__main__":
    sys.exit(main())
