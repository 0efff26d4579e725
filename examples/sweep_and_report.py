"""A sweep into a run store, its summary over seeds, and an HTML report with its figures.

    python examples/sweep_and_report.py                   # examples/sweep.toml, about 1 min
    python examples/sweep_and_report.py --epochs 1        # a quick look (the CI test)

The same as, on the command line:

    forgetless sweep examples/sweep.toml --store runs
    forgetless report runs -o report.html --figures figures

Runs already complete in the store are not trained again, so a second call only rebuilds the
report. Open report.html in a browser: it needs no network.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from forgetless.report import write_report
from forgetless.runs import RunStore
from forgetless.sweeps import format_summary, run_sweep, summarise, sweep_from_dict
from forgetless.toml_file import read_toml

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", type=Path, default=HERE / "sweep.toml")
    parser.add_argument("--store", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, default=Path("report.html"))
    parser.add_argument("--epochs", type=int, help="override the sweep's epochs (quick runs)")
    parser.add_argument("--workers", type=int, default=1, help="runs at once (default: 1)")
    args = parser.parse_args(argv)

    spec = read_toml(args.sweep, "sweep file")
    if args.epochs is not None:
        spec["base"] = {**spec.get("base", {}), "epochs": args.epochs}
    sweep = sweep_from_dict(spec, where=str(args.sweep))
    report = run_sweep(sweep, args.store, workers=args.workers)
    print(f"{len(report.done)} run(s) trained, {len(report.skipped)} already complete")
    store = RunStore(args.store)
    results = [store.result(run_id) for run_id in sorted(report.done + report.skipped)]
    print(format_summary(summarise(results)), end="")
    page = write_report(results, args.out, title="EWC strengths against replay")
    print(f"wrote {page}")
    return page


if __name__ == "__main__":
    main()
