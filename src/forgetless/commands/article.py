"""``forgetless article``: a seed article's experiment, our figures beside the article's."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from forgetless.articles import ARTICLES

    parser.description = (
        "Run one of the seed articles' experiments with the article's settings "
        "and print the article's figures beside ours: binary (two competing binary tasks, "
        "fine-tuning then EWC; offline, seconds) or mnist-fashion (MNIST then Fashion-MNIST, "
        "a CNN; needs the data, about 5 CPU-minutes)."
    )
    parser.add_argument("name", choices=list(ARTICLES), help="the article")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--data-dir", metavar="DIR", help="where MNIST and Fashion-MNIST are")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON instead")


def run(args: argparse.Namespace) -> int:
    import json

    from forgetless.articles import run_article

    report = run_article(
        args.name,
        args.seed,
        echo=(lambda _: None) if args.json else print,
        data_dir=args.data_dir,
        threads=args.threads,
        device=args.device,
        progress=False,
    )
    if args.json:
        del report["results"]
        print(json.dumps(report, indent=1))
    return 0
