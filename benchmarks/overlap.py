"""Representation overlap against forgetting on rotated MNIST; the seed article's claim tested.

Usage::

    python benchmarks/overlap.py --data-dir /work/shared/data [--seeds 0 1 2]
        [--angles 0 15 30 45 60 75 90 105 120 150 180] [--rates 0.5]
        [--out benchmarks/results/overlap] [--replot]

Task A is MNIST (10,000 training and 2,000 test images drawn once), task B the same images
rotated by an angle; for every angle an MLP 784-256-256-10 starts from the same initial weights
(per seed), learns A then B with plain SGD (lr 0.05, batch 64, 5 epochs per task, one shared
10-way output: domain-incremental), and per hidden layer we measure (on 1,000 test images of
each task):

- overlap: of the units active for A or for B on the network after A, the share active for
  both; a unit is active for a task when it fires on at least a fraction ``rate`` of the task's
  images (``--rates``: each rate is a separate pass, same seeds, so same training); and the
  weighted overlap of the units' firing rates, which needs no cut-off;
- linear CKA between the layer's representation of A's images before and after learning B
  (Ramasesh et al. 2021);
- forgetting of A: accuracy on A after A minus after B.

The seed article says "70% overlap forgets 45% more than 30% overlap". We fit forgetting =
a + b * overlap (mean over the two layers) by least squares over all (angle, seed) pairs and read
the line at 30% and 70% (:func:`forgetless.analysis.overlap_study.overlap_claim`); the JSON says
whether 30% and 70% lie inside the overlaps measured. The runs are
:mod:`forgetless.studies.overlap`'s, in the run store ``--store`` (default
``benchmarks/results/runs``), ``--workers`` at once through the one sweep runner: another rate,
or a rerun, trains nothing that is there. About 5 minutes for 11 angles and 3 seeds on two idle
cores. Prints one JSON object, writes it
to ``benchmarks/results/overlap.json`` and the figures to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from forgetless.analysis.overlap_study import overlap_claim
from forgetless.studies.overlap import OverlapSettings, overlap_study
from grid import log, publish

SETTINGS = {
    "train_size": 10000,
    "test_size": 2000,
    "hidden": (256, 256),
    "lr": 0.05,
    "batch_size": 64,
    "epochs": 5,
    "probe": 1000,
}


def draw(records: list, rate: float, out: Path) -> list[Path]:
    """The overlap figures of one rate: binary overlap, and weighted by firing rates."""
    from forgetless.report.analysis_figures import overlap_forgetting
    from forgetless.report.figures import save

    name = f"{100 * rate:g}pct"
    binary = overlap_forgetting(
        records,
        title=f"rotated MNIST, MLP 2x256; a unit is active for a task if it fires on >= "
        f"{100 * rate:g}% of its images",
    )
    weighted = overlap_forgetting(
        records,
        title="rotated MNIST, MLP 2x256; overlap of the units' firing rates (weighted Jaccard)",
        measure="overlap_weighted",
    )
    return save(binary, out / f"overlap_rate{name}") + save(weighted, out / "overlap_weighted")


def replot(summary: Path, out: Path) -> None:
    """Draw the figures again from a finished run's JSON (no training)."""
    from forgetless.analysis.overlap_study import OverlapRecord

    report = json.loads(summary.read_text())
    for key, value in report.items():
        if key.startswith("rate "):
            records = [OverlapRecord(**r) for r in value["records"]]
            value["figures"] = [str(f) for f in draw(records, float(key[5:]), out)]
    publish(report, summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--angles", type=float, nargs="+", default=[0, 15, 30, 45, 60, 75, 90, 105, 120, 150, 180]
    )
    parser.add_argument("--rates", type=float, nargs="+", default=[0.5])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--store", type=Path, default=Path("benchmarks/results/runs"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/overlap"))
    parser.add_argument("--summary", type=Path, default=Path("benchmarks/results/overlap.json"))
    parser.add_argument(
        "--replot", action="store_true", help="redraw the figures from --summary, no training"
    )
    args = parser.parse_args()
    if args.replot:
        replot(args.summary, args.out)
        return
    torch.set_num_threads(1)  # the measures as the runs compute: one thread, the same sums
    settings = OverlapSettings(
        data="mnist", data_dir=args.data_dir, angles=tuple(args.angles), **SETTINGS
    )
    started = time.perf_counter()
    report: dict[str, Any] = {"settings": {**SETTINGS, "angles": args.angles, "seeds": args.seeds}}
    for rate in args.rates:
        t0 = time.perf_counter()
        records = overlap_study(settings, args.seeds, args.store, args.workers, rate=rate)
        log(f"rate {rate}: {time.perf_counter() - t0:.0f} s")
        claims = {}
        for measure in ("overlap", "overlap_weighted"):
            claims[measure] = {"mean": overlap_claim(records, measure=measure)}
            for k, layer in enumerate(records[0].layers):
                claims[measure][f"layer {layer}"] = overlap_claim(records, layer=k, measure=measure)
        by_angle = {}
        for angle in args.angles:
            rows = [r for r in records if r.angle == angle]
            by_angle[f"{angle:g}"] = {
                "overlap_pct": [
                    round(100 * sum(r.overlap[k] for r in rows) / len(rows), 1)
                    for k in range(len(rows[0].layers))
                ],
                "overlap_weighted_pct": [
                    round(100 * sum(r.overlap_weighted[k] for r in rows) / len(rows), 1)
                    for k in range(len(rows[0].layers))
                ],
                "cka": [
                    round(sum(r.cka[k] for r in rows) / len(rows), 3)
                    for k in range(len(rows[0].layers))
                ],
                "forgetting_pct": round(100 * sum(r.forgetting for r in rows) / len(rows), 2),
                "acc_b_before_pct": round(100 * sum(r.acc_b_before for r in rows) / len(rows), 2),
                "acc_a_pct": round(100 * sum(r.acc_a for r in rows) / len(rows), 2),
            }
        files = draw(records, rate, args.out)
        report[f"rate {rate:g}"] = {
            "by_angle": by_angle,
            "claim": claims,
            "records": [r.to_dict() for r in records],
            "figures": [str(f) for f in files],
        }
    report["elapsed_seconds"] = round(time.perf_counter() - started, 1)
    publish(report, args.summary)


if __name__ == "__main__":
    main()
