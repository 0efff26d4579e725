"""The production story end to end, on real data (issue 14, must-show 1).

A model trained on MNIST is deployed (v1). New data arrives: Fashion-MNIST, answered on the
same 10-way output. The team keeps 1% of the MNIST training images (600). Each candidate
update is compared with v1 by the forgetting gate on ten old slices (the MNIST test images of
each digit, about 1,000 each) and on the new data (the Fashion-MNIST test set):

- plain fine-tuning on the new data;
- replay of the retained 1%, as it is (``store_new=False``) and through the reservoir;
- EWC, the Fisher measured on the same 600 retained images at v1's weights;
- both at once (replay + EWC);
- LwF (no old data at all);
- weight interpolation (WiSE-FT) between v1 and the fine-tuned model, alpha chosen on
  validation data (5,000 MNIST and 5,000 Fashion-MNIST training images the updates never
  saw), then gated on the test slices.

Every decision is recorded in a run store and read back by the monitor. One JSON file, the
gate's tables as text, and figures::

    python benchmarks/production_story.py --data-dir DATA
    #   -> benchmarks/results/production_story.json, benchmarks/results/production/*.png
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from forgetless import data as sources
from forgetless import train, update
from forgetless.data.arrays import ArraySet
from forgetless.models import build_model
from forgetless.production import gate, merge_sweep, merged_model, monitor, record
from forgetless.provenance import provenance
from forgetless.report.figures import save
from forgetless.report.production import gate_figure, merge_figure, monitor_figure
from forgetless.scenarios.stream import Protocol, Stream, Task

PNG = ("png",)  # the repository keeps PNGs of benchmark figures


def _stream(name: str, train_set: ArraySet, test_set: ArraySet, seed: int) -> Stream:
    units = tuple(range(10))
    return Stream(name, (Task(name, train_set, test_set, units, tuple(map(str, units))),),
                  Protocol.DOMAIN, 10, seed)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--retain", type=float, default=0.01, help="share of MNIST kept")
    parser.add_argument("--lams", default="1e2,1e3,1e4", help="EWC strengths")
    parser.add_argument("--max-drop", type=float, default=1.0)
    parser.add_argument("--out", default="benchmarks/results/production_story.json")
    parser.add_argument("--figures", default="benchmarks/results/production")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    mnist = sources.load("mnist", args.data_dir)
    fashion = sources.load("fashion-mnist", args.data_dir)
    g = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(mnist.train), generator=g)
    n_keep = round(args.retain * len(mnist.train))
    retained = mnist.train.subset(order[:n_keep])
    old_validation = mnist.train.subset(order[-5000:])
    new_order = torch.randperm(len(fashion.train), generator=g)
    new_validation = fashion.train.subset(new_order[-5000:])
    new_train = fashion.train.subset(new_order[:-5000])
    slices = {
        f"digit {k}": mnist.test.subset((mnist.test.y == k).nonzero().squeeze(1)) for k in range(10)
    }
    fit = dict(batch_size=128, optimizer="adam", lr=1e-3, progress=False, threads=args.threads)

    # v1: the deployed model, 2 epochs on all of MNIST's training set.
    v1 = build_model("mlp", (1, 28, 28), 10, hidden=[400, 400], seed=args.seed)
    t0 = time.perf_counter()
    train(_stream("mnist", mnist.train, mnist.test, args.seed), v1, seed=args.seed, epochs=2, **fit)
    v1.eval()
    report = {
        "setup": {
            "model": "MLP 784-400-400-10, Adam lr 1e-3, batch 128",
            "v1": "2 epochs on MNIST's 60,000 training images",
            "updates": f"1 epoch on {len(new_train)} Fashion-MNIST training images",
            "retained": f"{n_keep} MNIST training images ({100 * args.retain:g}%)",
            "slices": {k: len(v) for k, v in slices.items()},
            "new data": "Fashion-MNIST test set (10,000)",
            "max_drop_points": args.max_drop,
            "seed": args.seed,
            "threads": args.threads,
        },
        "v1_train_seconds": time.perf_counter() - t0,
        "updates": {},
    }
    plans = [
        ("fine-tuning", "finetune", {}, None),
        ("replay of the retained 1%", "replay", {}, retained),
        ("replay, reservoir (store_new)", "replay", {"store_new": True}, retained),
        *[
            (f"EWC lambda {lam:g}", "ewc", {"lam": lam}, retained)
            for lam in map(float, args.lams.split(","))
        ],
        ("replay 1% + EWC lambda 1000", "replay+ewc", {"lam": 1e3}, retained),
        ("LwF", "lwf", {}, None),
    ]
    store = Path(tempfile.mkdtemp(prefix="forgetless-story-"))
    figures = Path(args.figures)
    candidates = {}
    for i, (label, strategy, params, old) in enumerate(plans):
        t0 = time.perf_counter()
        outcome = update(v1, new_train, old, strategy, slices=slices, new_test=fashion.test,
                         params=params, seed=args.seed, max_drop=args.max_drop, epochs=1,
                         **fit)  # fmt: skip
        seconds = time.perf_counter() - t0
        candidates[label] = outcome.model
        table = outcome.table()
        print(f"\n== {label} ({seconds:.0f} s)\n{table}", file=sys.stderr)
        report["updates"][label] = {
            "strategy": outcome.strategy,
            "params": outcome.params,
            "seconds": seconds,
            "verdict": outcome.comparison.verdict,
            "table": table,
            "comparison": outcome.comparison.to_dict(),
        }
        record(store, "update", outcome.comparison, f"v2.{i} {label}", "v1", "fashion",
               {"strategy": outcome.strategy, "params": outcome.params})  # fmt: skip
        slug = label.split(" ")[0].lower().replace(",", "")
        save(gate_figure(outcome.comparison, f"{label}: {outcome.comparison.verdict}"),
             figures / f"gate_{i}_{slug}", PNG)  # fmt: skip

    # Weight interpolation between v1 and the fine-tuned model: the sweep on the test slices
    # (the figure), alpha chosen on validation data, then gated on the test slices.
    tuned = candidates["fine-tuning"]
    alphas = [i / 10 for i in range(11)]
    sweep = merge_sweep(v1, v1.state_dict(), tuned.state_dict(), slices, fashion.test, alphas,
                        new_slice="new data")  # fmt: skip
    validation = merge_sweep(v1, v1.state_dict(), tuned.state_dict(), {"mnist": old_validation},
                             new_validation, alphas, new_slice="new data")  # fmt: skip
    chosen = validation.choose(args.max_drop)
    merged = merged_model(v1, v1.state_dict(), tuned.state_dict(), chosen)
    merged_gate = gate(v1, merged, {**slices}, max_drop=args.max_drop, seed=args.seed)
    new_row = gate(v1, merged, {"new data": fashion.test}, max_drop=args.max_drop)["new data"]
    merged_table = merged_gate.table("v1", f"alpha {chosen:g}")
    print(f"\n== merge at alpha {chosen:g}\n{merged_table}", file=sys.stderr)
    print(f"new data: {100 * new_row.baseline_accuracy:.1f} -> "
          f"{100 * new_row.candidate_accuracy:.1f}", file=sys.stderr)  # fmt: skip
    record(store, "gate", merged_gate, f"v2.m merge alpha {chosen:g}", "v1", "fashion")
    save(merge_figure(sweep), figures / "merge_tradeoff", PNG)
    save(gate_figure(merged_gate, f"merge at alpha {chosen:g}: {merged_gate.verdict}"),
         figures / "gate_merge", PNG)  # fmt: skip
    report["merge"] = {
        "test_sweep": sweep.to_dict(),
        "validation_sweep": validation.to_dict(),
        "chosen_alpha": chosen,
        "rule": f"largest alpha with MNIST validation within {args.max_drop:g} points of v1",
        "gate": merged_gate.to_dict(),
        "table": merged_table,
        "new_data": {"v1": new_row.baseline_accuracy, "merged": new_row.candidate_accuracy},
    }
    state = monitor(store, args.max_drop)
    save(monitor_figure(state), figures / "monitor", PNG)
    report["monitor"] = {"table": state.table(), **state.to_dict()}
    report["total_seconds"] = time.perf_counter() - t_start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report["provenance"] = provenance()  # the forgetless version and git commit
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out} and {figures}/*.png in {report['total_seconds']:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
