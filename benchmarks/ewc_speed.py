"""EWC on the hand-written step: its training time and wall against autograd's and fine-tuning's.

Usage::

    python benchmarks/ewc_speed.py --data-dir DATA [--repeats 3] [--threads 2] \\
        [--baseline-src OTHER/src] [--out benchmarks/results/ewc_speed.json]

The protocol of ``avalanche_compare.py`` (Split-MNIST class-IL, MLP 784-400-400-10, SGD lr 0.05,
batch 128, 1 epoch per task, the whole test set after each task), EWC as it compares it with
Avalanche's (``--strategy ewc --fisher batched --lam 2000``). Arms, each a fresh ``forgetless
run`` process timed from before its start to its exit (what a user waits for), alternating, the
order flipped at each repeat:

- ``ewc``: the default ``--fast-path auto``: the hand-written step, the penalty's gradient added
  in closed form (``forgetless.mlp_step``);
- ``ewc-off``: ``--fast-path off``: autograd's step and penalty;
- ``finetune``: the same run without the penalty and the Fisher;
- ``ewc-baseline`` (with ``--baseline-src``): the ``ewc`` command run on another checkout's
  ``src`` (``PYTHONPATH``), e.g. the commit before a change.

The accuracy matrices of every EWC arm must be identical (the step is bit for bit autograd's);
the script says so. Then, in this process, the batched Fisher of each task's training set on the
initial MLP, without autograd (``forgetless.fisher``'s plain-MLP forms) and with it (a no-op
forward hook sends the model to the autograd forms), alternating; CPU seconds (one thread:
steadier than wall time on a shared machine) and whether the two agree bit for bit. Prints one
JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import avalanche_compare
from grid import publish

EWC = ["--strategy", "ewc", "--fisher", "batched", "--lam", "2000"]
ARMS: dict[str, list[str]] = {
    "ewc": EWC,
    "ewc-off": [*EWC, "--fast-path", "off"],
    "finetune": ["--strategy", "finetune"],
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def runs(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONWARNINGS": "ignore"}
    arms = {name: (options, env) for name, options in ARMS.items()}
    if args.baseline_src:
        baseline = {**env, "PYTHONPATH": str(args.baseline_src.resolve())}
        arms["ewc-baseline"] = (EWC, baseline)
    avalanche_compare._ours(ARMS["finetune"], args, env)  # warm-up: caches, page cache
    measured: dict[str, list[dict[str, Any]]] = {name: [] for name in arms}
    for repeat in range(args.repeats):
        order = list(arms) if repeat % 2 == 0 else list(reversed(arms))
        for name in order:
            options, arm_env = arms[name]
            result = avalanche_compare._ours(options, args, arm_env)
            result["load_average_1min"] = round(os.getloadavg()[0], 2)
            measured[name].append(result)
            log(f"[{repeat + 1}/{args.repeats}] {name}: wall {result['wall']:.2f} s, "
                f"train {result['seconds']['train']:.2f} s")  # fmt: skip
    return measured


def fisher_times(data_dir: Path, repeats: int) -> dict[str, Any]:
    import torch

    from forgetless.fisher import diagonal_fisher
    from forgetless.models import build_model
    from forgetless.scenarios import make_stream

    torch.set_num_threads(1)
    stream = make_stream("split-mnist", seed=0, data_dir=str(data_dir))
    model = build_model("mlp", stream.input_shape, stream.num_outputs, [400, 400], seed=0)
    seconds: dict[str, list[float]] = {"without autograd": [], "autograd": []}
    identical = True
    for repeat in range(repeats):
        order = list(seconds) if repeat % 2 == 0 else list(reversed(seconds))
        results = {}
        for name in order:
            handle = None
            if name == "autograd":
                handle = model[1].register_forward_hook(lambda *args: None)
            start = time.process_time()
            results[name] = [
                diagonal_fisher(
                    model,
                    task.train.lazy_inputs,
                    task.train.y,
                    kind="batched",
                    generator=torch.Generator().manual_seed(i),
                )
                for i, task in enumerate(stream.tasks)
            ]
            seconds[name].append(round(time.process_time() - start, 3))
            if handle is not None:
                handle.remove()
        identical &= all(
            torch.equal(a, b)
            for one, other in zip(results["without autograd"], results["autograd"], strict=True)
            for a, b in zip(one, other, strict=True)
        )
    ratios = [a / b for a, b in zip(seconds["autograd"], seconds["without autograd"], strict=True)]
    return {
        "what": "batched Fisher of the 5 tasks' training sets, CPU seconds, 1 thread",
        "seconds": seconds,
        "autograd_over_without": [round(r, 3) for r in ratios],
        "median": round(statistics.median(ratios), 3),
        "identical": identical,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--baseline-src", type=Path, help="another checkout's src folder")
    parser.add_argument("--fisher-repeats", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ewc_speed.json"))
    args = parser.parse_args(argv)
    load_at_start = os.getloadavg()
    measured = runs(args)
    matrices = {name: [r["matrix"] for r in results] for name, results in measured.items()}
    ewc_matrices = [m for name, ms in matrices.items() if name != "finetune" for m in ms]
    summary: dict[str, Any] = {
        "ewc_matrices_identical": all(m == ewc_matrices[0] for m in ewc_matrices),
    }
    for measure in ("wall", "train"):

        def value(result, measure=measure):
            return result["wall"] if measure == "wall" else result["seconds"]["train"]

        ewc = measured["ewc"]
        for other in [name for name in measured if name != "ewc"]:
            ratios = [value(o) / value(e) for o, e in zip(measured[other], ewc, strict=True)]
            summary[f"{measure}: {other} / ewc"] = {
                "median": round(statistics.median(ratios), 3),
                "per_repeat": [round(r, 3) for r in ratios],
            }
        summary[f"{measure} medians (s)"] = {
            name: round(statistics.median(value(r) for r in results), 2)
            for name, results in measured.items()
        }
    log(json.dumps(summary))
    report = {
        "protocol": "split-mnist class-IL, MLP 784-400-400-10, SGD lr 0.05, batch 128, 1 epoch "
        "per task; ewc --fisher batched --lam 2000; one fresh process per measurement",
        "threads": args.threads,
        "repeats": args.repeats,
        "summary": summary,
        "fisher": fisher_times(args.data_dir, args.fisher_repeats),
        "runs": measured,
        "load_average_at_start": load_at_start,
        "load_average": os.getloadavg(),
    }
    publish(report, args.out)  # with the forgetless version and commit (provenance)
    return 0


if __name__ == "__main__":
    sys.exit(main())
