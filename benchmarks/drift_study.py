"""Does the drift test flag drift, and only drift? (issue 14, must-show 3)

Reference: 1,000 MNIST test images. Each repeat draws a batch of 500 images:

- held-out MNIST (the other 9,000 test images, the reference's distribution): the test should
  flag about ``alpha`` of them, and its p-values should spread uniformly over [0, 1] (a KS
  test of the MMD p-values against the uniform law, and their histogram);
- rotated MNIST (5, 15, 30 and 45 degrees) and Fashion-MNIST: it should flag them all;
- MNIST's training images, written by other people than the test set's: a small real shift.

Both on the inputs (784 pixels) and on the features of the first hidden layer of an MLP
trained on MNIST (784-100-10, one epoch).

    python benchmarks/drift_study.py --data-dir DATA
    #   -> benchmarks/results/drift_study.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from forgetless import data as sources
from forgetless import train
from forgetless.models import build_model
from forgetless.production.drift import drift
from forgetless.provenance import provenance
from forgetless.scenarios.builders import _rotate
from forgetless.scenarios.stream import Protocol, Stream, Task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=100, help="held-out batches")
    parser.add_argument("--shifted-repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--permutations", type=int, default=500)
    parser.add_argument("--out", default="benchmarks/results/drift_study.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    mnist = sources.load("mnist", args.data_dir)
    fashion = sources.load("fashion-mnist", args.data_dir)
    g = torch.Generator().manual_seed(0)
    # Reference and held-out batches both from the test set: MNIST's training and test images
    # come from different writers, a real (small) shift that a 1,000-image MMD test can see.
    order = torch.randperm(len(mnist.test), generator=g)
    reference, held_out = mnist.test.subset(order[:1000]), mnist.test.subset(order[1000:])
    units = tuple(range(10))
    stream = Stream("mnist", (Task("mnist", mnist.train, mnist.test, units, tuple(map(str, units))),),
                    Protocol.DOMAIN, 10, 0)  # fmt: skip
    model = build_model("mlp", (1, 28, 28), 10, hidden=[100], seed=0)
    train(stream, model, epochs=1, optimizer="adam", lr=1e-3, progress=False)
    model.eval()
    sources_by_name = {"held-out MNIST": held_out, "Fashion-MNIST": fashion.test}
    for angle in (5, 15, 30, 45):
        sources_by_name[f"MNIST rotated {angle} deg"] = _rotate(held_out, angle)
    sources_by_name["MNIST training set (other writers)"] = mnist.train
    report = {
        "reference": "1,000 MNIST test images",
        "batch": args.batch,
        "permutations": args.permutations,
        "alpha": 0.05,
        "spaces": {},
    }
    for space, layer in (("inputs", None), ("hidden layer 2 (ReLU of 100 units)", "2")):
        rows = {}
        for name, pool in sources_by_name.items():
            repeats = args.repeats if name == "held-out MNIST" else args.shifted_repeats
            results, seconds = [], []
            for r in range(repeats):
                pick = torch.randperm(len(pool), generator=g)[: args.batch]
                t0 = time.perf_counter()
                results.append(drift(reference, pool.subset(pick), permutations=args.permutations,
                                     seed=r, model=model if layer else None, layer=layer))  # fmt: skip
                seconds.append(time.perf_counter() - t0)
            mmd_p = np.array([x.mmd_p for x in results])
            ks_p = np.array([x.ks_p for x in results])
            rows[name] = {
                "repeats": repeats,
                "flagged": float(np.mean([x.verdict == "drift" for x in results])),
                "mmd_flagged": float(np.mean(mmd_p < 0.025)),
                "ks_flagged": float(np.mean(ks_p < 0.025)),
                "mmd_p_median": float(np.median(mmd_p)),
                "mmd_p_uniformity_ks_p": float(stats.kstest(mmd_p, "uniform").pvalue),
                "mmd_p_histogram_10_bins": np.histogram(mmd_p, bins=10, range=(0, 1))[0].tolist(),
                "seconds_per_test_median": float(np.median(seconds)),
            }
            print(f"{space:>10} {name:>24}: flagged {rows[name]['flagged']:.2f} "
                  f"(MMD {rows[name]['mmd_flagged']:.2f}, KS {rows[name]['ks_flagged']:.2f}), "
                  f"{rows[name]['seconds_per_test_median']:.2f} s/test", file=sys.stderr)  # fmt: skip
        report["spaces"][space] = rows
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report["provenance"] = provenance()  # the forgetless version and git commit
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
