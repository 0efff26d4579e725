"""The seed pair with adapters: MNIST -> Fashion-MNIST from a trained MLP, LoRA and CURLoRA on
its layers beside fine-tuning, the frozen backbone, EWC and replay (issue 15).

``mnist-fashion`` on one shared 10-way output, the MLP 784-400-400-10 (the frontier
benchmark's; the CNN costs about 200 s a run here), Adam lr 1e-3, batch 128, 1 epoch per task.
The MLP is trained on MNIST once per seed; every method then starts from those weights
(``train(trained_tasks=1)``: EWC's Fisher and replay's buffer are built from MNIST at the given
weights) and trains one epoch of Fashion-MNIST. The adapters wrap all three linear layers
(the default for an MLP); every other weight is frozen. Per method: MNIST accuracy after
Fashion-MNIST (kept), Fashion-MNIST accuracy (learnt), the trainable parameters. One JSON
object goes to stdout (and to ``--out``)::

    python benchmarks/adapters_mnist_fashion.py --data-dir DATA --threads 1 --seeds 1 \\
        --out benchmarks/results/adapters_mnist_fashion.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
import warnings
from typing import Any

import torch

import forgetless
from forgetless.engine import train
from forgetless.models import build_model
from forgetless.scenarios import make_stream
from forgetless.strategies import make_strategies
from grid import log

HIDDEN = [400, 400]
LOOP = dict(epochs=1, batch_size=128, optimizer="adam", lr=1e-3, progress=False)
#: (label, strategy, parameters)
METHODS = (
    ("finetune", "finetune", {}),
    ("head", "head", {}),
    ("lora-r8", "lora", {"rank": 8}),
    ("lora-r16", "lora", {"rank": 16}),
    ("curlora-r8", "curlora", {"rank": 8}),
    ("curlora-r16", "curlora", {"rank": 16}),
    ("ewc-1e2", "ewc", {"lam": 100.0}),
    ("ewc-1e3", "ewc", {"lam": 1000.0}),
    ("replay-100", "replay", {"buffer_size": 100}),
    ("replay-1000", "replay", {"buffer_size": 1000}),
)


def run_seed(stream, seed: int) -> dict[str, Any]:
    model = build_model("mlp", stream.input_shape, stream.num_outputs, hidden=HIDDEN, seed=seed)
    pre = train(stream[:1], model, "finetune", seed=seed, **LOOP)
    log(f"seed {seed}: MNIST {100 * pre.accuracy_matrix[0][0]:.2f}%")
    out = {"mnist_after_mnist": pre.accuracy_matrix[0][0], "methods": {}}
    for label, name, params in METHODS:
        start = time.perf_counter()
        result = train(
            stream,
            copy.deepcopy(model),
            make_strategies(name, params),
            seed=seed,
            trained_tasks=1,
            **LOOP,
        )
        R = result.accuracy_matrix
        row = {
            "mnist_kept": R[1][0],
            "fashion_learnt": R[1][1],
            "trainable_parameters": result.model_size[-1]["trainable"],
            "seconds": round(time.perf_counter() - start, 1),
        }
        out["methods"][label] = row
        log(
            f"seed {seed}: {label:<12} MNIST kept {100 * R[1][0]:.2f}%, Fashion learnt "
            f"{100 * R[1][1]:.2f}%, {row['trainable_parameters']:,} trainable, {row['seconds']} s"
        )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seeds", type=int, default=1, help="how many seeds (1)")
    parser.add_argument("--first-seed", type=int, default=0, help="the first seed (0)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", RuntimeWarning)
    stream = make_stream("mnist-fashion", data_dir=args.data_dir)
    start = time.perf_counter()
    seeds = [run_seed(stream, args.first_seed + k) for k in range(args.seeds)]
    summary = {}
    for label, _, _ in METHODS:
        rows = [s["methods"][label] for s in seeds]
        summary[label] = {
            key: round(100 * statistics.fmean(r[key] for r in rows), 2)
            for key in ("mnist_kept", "fashion_learnt")
        }
        summary[label]["trainable_parameters"] = rows[0]["trainable_parameters"]
    result = {
        "benchmark": "adapters_mnist_fashion",
        "forgetless": forgetless.__version__,
        "torch": torch.__version__,
        "threads": args.threads,
        "settings": {
            "model": "mlp",
            "hidden": HIDDEN,
            **LOOP,
            "seeds": list(range(args.first_seed, args.first_seed + args.seeds)),
        },
        "mnist_after_mnist": round(
            100 * statistics.fmean(s["mnist_after_mnist"] for s in seeds), 2
        ),
        "summary": summary,
        "per_seed": seeds,
        "seconds": round(time.perf_counter() - start, 1),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return result


if __name__ == "__main__":
    main()
