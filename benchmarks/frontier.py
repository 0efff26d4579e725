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

``--task-il``: the same stream with the task given (``--protocol task``: one 10-way head per
data set, the answer read off the task's head), where the methods that grow or mask can run:
``pnn`` once at its settings (``--range none``: it has no strength), ``packnet`` over its
pruned fraction, ``hat`` over its regulariser ``c``, beside EWC, SI and replay swept again
under the same protocol (``--points`` values each, on their ranges above). Written to
``--out`` (default ``benchmarks/results/frontier_task``).

Runs go into a run store (``--store``), so a stopped benchmark restarts where it was and a
finished one reprints without training. Writes ``frontier.json``, ``frontier.png`` and
``frontier.svg`` into ``--out`` and prints the JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from forgetless.experiment import RunConfig
from forgetless.provenance import provenance
from forgetless.report.figures import frontier_plot, save
from forgetless.studies.frontier import format_frontiers, parse_range, run_frontiers
from grid import log

RANGES = (("ewc", "lambda=1e0:1e6"), ("replay", "buffer=50:5000"), ("si", "c=1e-2:1e2"))
#: Task-IL: the methods that need the task id, with fixed value lists (not ``--points``).
ISOLATION = (("pnn", "none"), ("packnet", "prune=0.25,0.5,0.75"), ("hat", "reg=0.1,0.75,2.5"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--points", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--store", type=Path, default=Path("benchmarks/results/runs"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--task-il", action="store_true", help="task given; isolation methods too")
    parser.add_argument("--no-weights", action="store_true", help="keep no weights of runs")
    args = parser.parse_args()
    default_out = "frontier_task" if args.task_il else "frontier"
    args.out = args.out or Path("benchmarks/results") / default_out
    base = RunConfig(
        scenario="mnist-fashion",
        protocol="task" if args.task_il else None,
        data_dir=args.data_dir,
        model="mlp",
        epochs=1,
        batch_size=128,
        optimizer="adam",
        lr=1e-3,
    )
    ranges = [(s, *parse_range(text, args.points)) for s, text in RANGES]
    if args.task_il:
        ranges += [(s, *parse_range(text)) for s, text in ISOLATION]

    def progress(done: int, total: int, left: float) -> None:
        log(f"[{done}/{total}] about {left / 60:.1f} min left")

    start = time.perf_counter()
    frontiers = run_frontiers(
        base,
        ranges,
        list(range(args.seeds)),
        args.store,
        args.workers,
        progress=progress,
        keep_weights=not args.no_weights,
    )
    log(format_frontiers(frontiers))
    args.out.mkdir(parents=True, exist_ok=True)
    title = "MNIST -> Fashion-MNIST, MLP 400-400" + (", task-IL" if args.task_il else "")
    save(frontier_plot(frontiers, title), args.out / "frontier")
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
