"""``forgetless overlap``: representation overlap, CKA and forgetting of graded task pairs."""

from __future__ import annotations

import argparse

from forgetless.commands.common import add_store_options, runs_bar, store_of, write_outputs
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
    add_store_options(o)
    o.add_argument(
        "-o", "--out", metavar="DIR", default="overlap",
        help="where overlap.json, .png and .svg go (default: ./overlap)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import torch

    from forgetless.report.analysis_figures import overlap_forgetting
    from forgetless.studies.overlap import (
        OverlapSettings,
        format_overlap,
        overlap_claims,
        overlap_study,
    )

    torch.set_num_threads(check_positive_int("--threads", args.threads))
    settings = OverlapSettings(
        data=args.data,
        data_dir=args.data_dir,
        angles=tuple(args.angles),
        hidden=tuple(args.hidden),
        lr=args.lr,
        batch_size=args.batch_size,
        epochs=args.epochs,
        train_size=args.train_size,
        test_size=args.test_size,
        probe=args.probe,
    )
    with runs_bar() as progress:
        records = overlap_study(
            settings, args.seeds, store_of(args), args.workers, progress=progress,
            threshold=args.threshold, rate=args.rate,
        )  # fmt: skip
    print(format_overlap(records), end="")
    claims, text = overlap_claims(records)
    print(text, end="")
    data = {"records": [r.to_dict() for r in records], "claims": claims}
    write_outputs(args.out, "overlap", data, {"overlap": overlap_forgetting(records)})
    return 0
