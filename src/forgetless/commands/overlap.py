"""``forgetless overlap``: representation overlap, CKA and forgetting of graded task pairs."""

from __future__ import annotations

import argparse

from forgetless.commands.common import write_outputs
from forgetless.errors import ConfigError
from forgetless.options import float_list, int_list
from forgetless.validation import check_positive_int


def add_arguments(o: argparse.ArgumentParser) -> None:
    o.description = (
        "For each --angles value, train an MLP on the data set (task A) then on "
        "the data set rotated by that angle (task B); per hidden layer, measure the overlap of "
        "the units both tasks use, the CKA of A's representation before and after B, and the "
        "forgetting of A; then test the seed article's claim that 70% overlap forgets 45% "
        "more than 30% overlap."
    )
    o.add_argument("--data", default="mnist", help="source data set (default: mnist)")
    o.add_argument("--data-dir", metavar="DIR", help="folder with the IDX files")
    o.add_argument(
        "--angles", type=float_list, default=[0, 15, 30, 45, 60, 90, 120, 150, 180],
        help="rotations of task B in degrees (default: 0,15,30,45,60,90,120,150,180)",
    )  # fmt: skip
    o.add_argument("--seeds", type=int_list, default=[0], help="seeds, e.g. 0,1,2 (default: 0)")
    o.add_argument("--hidden", type=int_list, default=[256, 256], help="(default: 256,256)")
    o.add_argument("--lr", type=float, default=0.05, help="SGD step size (default: 0.05)")
    o.add_argument("--batch-size", type=int, default=64, help="(default: 64)")
    o.add_argument("--epochs", type=int, default=5, help="passes per task (default: 5)")
    o.add_argument("--train-size", type=int, default=10000, help="training images drawn")
    o.add_argument("--test-size", type=int, default=2000, help="test images drawn")
    o.add_argument("--probe", type=int, default=1000, help="test inputs for unit measures")
    o.add_argument("--rate", type=float, default=0.5, help="firing rate that makes a unit active")
    o.add_argument("--threshold", type=float, default=0.0, help="activation that counts as firing")
    o.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    o.add_argument(
        "-o", "--out", metavar="DIR", default="overlap",
        help="where overlap.json, .png and .svg go (default: ./overlap)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:

    import torch

    from forgetless import data
    from forgetless.analysis.overlap_study import overlap_claim, run_overlap, subsample
    from forgetless.engine import FitConfig
    from forgetless.report.analysis_figures import overlap_forgetting

    torch.set_num_threads(check_positive_int("--threads", args.threads))
    source = subsample(data.load(args.data, args.data_dir), args.train_size, args.test_size)
    fit = FitConfig(lr=args.lr, batch_size=args.batch_size, epochs=args.epochs, progress=True)
    records = []
    print(f"{'angle':>5} {'seed':>4} {'overlap %':>12} {'weighted %':>12} {'CKA':>12} "
          f"{'A':>5} {'A after B':>9} {'B':>5} {'forgetting':>10}")  # fmt: skip
    for seed in args.seeds:
        for record in run_overlap(
            source, args.angles, seed, tuple(args.hidden), fit, args.probe, args.threshold,
            args.rate,
        ):  # fmt: skip
            records.append(record)
            ov = " ".join(f"{100 * v:4.0f}" for v in record.overlap)
            weighted = " ".join(f"{100 * v:4.0f}" for v in record.overlap_weighted)
            cka = " ".join(f"{v:.2f}" for v in record.cka)
            print(
                f"{record.angle:>5g} {seed:>4} {ov:>12} {weighted:>12} {cka:>12} "
                f"{100 * record.acc_a:>5.1f} "
                f"{100 * record.acc_a_after:>9.1f} {100 * record.acc_b:>5.1f} "
                f"{100 * record.forgetting:>10.1f}"
            )
    claims = {}
    for measure in ("overlap", "overlap_weighted"):
        try:
            claims[measure] = claim = overlap_claim(records, measure=measure)
        except ConfigError as err:
            print(f"claim not tested on {measure}: {err}")
            continue
        lo, hi = claim["overlap_range"]
        print(
            f"{measure}: forgetting = {100 * claim['intercept']:.1f} + "
            f"{claim['slope']:.2f} x overlap(%) points (r = {claim['pearson']:.2f}, overlaps "
            f"{100 * lo:.0f}-{100 * hi:.0f}%): at 30% {100 * claim['forgetting_at_low']:.1f}, "
            f"at 70% {100 * claim['forgetting_at_high']:.1f}, "
            f"{100 * claim['relative_increase']:+.0f}% (the seed article: +45%)"
            + ("" if claim["interpolated"] else "; 30% or 70% lies outside the data")
        )
    data = {"records": [r.to_dict() for r in records], "claims": claims}
    write_outputs(args.out, "overlap", data, {"overlap": overlap_forgetting(records)})
    return 0
