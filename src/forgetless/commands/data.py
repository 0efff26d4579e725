"""``forgetless data``: list, fetch or locate data sets."""

from __future__ import annotations

import argparse


def add_arguments(data: argparse.ArgumentParser) -> None:
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    lst = data_sub.add_parser("list", help="known data sets, where each was found or how to get it")
    lst.add_argument("--data-dir", metavar="DIR")
    fetch = data_sub.add_parser(
        "fetch", help="download a data set into the cache, verifying hashes"
    )
    fetch.add_argument("name")
    fetch.add_argument("--force", action="store_true", help="download again even if cached")
    fetch.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="cache folder (default: $FORGETLESS_CACHE or the user cache)",
    )
    path = data_sub.add_parser("path", help="print the folder a data set is loaded from")
    path.add_argument("name")
    path.add_argument("--data-dir", metavar="DIR")
    for p in data_sub.choices.values():
        p.allow_abbrev = False


def run(args: argparse.Namespace) -> int:
    from forgetless import data

    if args.data_command == "list":
        print(f"{'name':<15}{'status':<10}where / how to get it")
        print(f"{'digits':<15}{'ready':<10}bundled with scikit-learn (offline)")
        for status in data.source_status(args.data_dir):
            state = "ready" if status.found else "missing"
            print(f"{status.name:<15}{state:<10}{status.hint}")
        return 0
    if args.data_command == "fetch":
        folder = data.fetch(args.name, cache_dir=args.cache_dir, force=args.force)
        print(f"{args.name}: verified files in {folder}")
        return 0
    if args.data_command == "path":
        if args.name == "digits":
            print("digits: bundled with scikit-learn")
            return 0
        found = data.locate(args.name, args.data_dir)
        if found is None and args.name == "shakespeare":
            from forgetless.data.shakespeare import not_found_message
            from forgetless.errors import DataError

            raise DataError(not_found_message(args.data_dir))
        if found is None:
            data.load(args.name, args.data_dir)  # raises the detailed not-found error
        print(found.folder)
        return 0
    args.command_parser.parse_args(["--help"])
    return 2
