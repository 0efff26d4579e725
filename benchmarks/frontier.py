"""The stability-plasticity frontier on MNIST -> Fashion-MNIST (seed Figure 4): EWC's lambda and
replay's buffer swept on a log scale over seeds, each strategy's Pareto front and hypervolume.

Usage::

    python benchmarks/frontier.py --data-dir /work/shared/data [--seeds 3] [--points 7] \\
        [--workers 2] [--store benchmarks/results/runs] [--out benchmarks/results/frontier]

This is ``forgetless frontier --scenario mnist-fashion --strategy ewc --range lambda=1e0:1e6
--strategy replay --range buffer=50:5000 --seeds 3`` with the settings below, plus SI's c over
1e-2:1e2 as a third curve. Settings: the MLP 784-400-400-10 on one shared 10-way output (the
CNN costs about 200 s a run here, 40 minutes for this grid on two cores even before the
Fisher), Adam lr 1e-3, batch 128, 1 epoch per task. EWC uses the exact Fisher over all MNIST
training images. Stability is MNIST accuracy after Fashion-MNIST, plasticity Fashion-MNIST's.

Runs go into a run store (``--store``), so a stopped benchmark restarts where it was and a
finished one reprints without training. Writes ``frontier.json``, ``frontier.png`` and
``frontier.svg`` into ``--out`` and prints the JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from forgetless.analysis.frontier import format_frontiers, parse_range, run_frontiers
from forgetless.experiment import RunConfig
from forgetless.provenance import provenance
from forgetless.report.figures import frontier_plot, save
from grid import log

RANGES = (("ewc", "lambda=1e0:1e6"), ("replay", "buffer=50:5000"), ("si", "c=1e-2:1e2"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--points", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--store", type=Path, default=Path("benchmarks/results/runs"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/frontier"))
    args = parser.parse_args()
    base = RunConfig(
        scenario="mnist-fashion",
        data_dir=args.data_dir,
        model="mlp",
        epochs=1,
        batch_size=128,
        optimizer="adam",
        lr=1e-3,
    )
    ranges = [(s, *parse_range(text, args.points)) for s, text in RANGES]

    def progress(done: int, total: int, left: float) -> None:
        log(f"[{done}/{total}] about {left / 60:.1f} min left")

    start = time.perf_counter()
    frontiers = run_frontiers(
        base, ranges, list(range(args.seeds)), args.store, args.workers, progress=progress
    )
    log(format_frontiers(frontiers))
    args.out.mkdir(parents=True, exist_ok=True)
    save(frontier_plot(frontiers, "MNIST -> Fashion-MNIST, MLP 400-400"), args.out / "frontier")
    report = {
        "base": base.to_dict(),
        "seeds": list(range(args.seeds)),
        "wall_seconds_this_call": round(time.perf_counter() - start, 1),
        "frontiers": [f.to_dict() for f in frontiers],
    }
    report["provenance"] = provenance()  # the forgetless version and git commit
    text = json.dumps(report, indent=1)
    (args.out / "frontier.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
