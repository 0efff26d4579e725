"""``forgetless report``: one self-contained HTML page (and figures) from stored runs."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from forgetless.errors import ConfigError


def add_arguments(report: argparse.ArgumentParser) -> None:
    report.description = (
        "Build an HTML report from runs: run folders, result.json files, run ids "
        "(or unique prefixes) in --store, or a whole store folder. The page needs no network."
    )
    report.add_argument("runs", nargs="+", help="run folders, result.json files, run ids or stores")
    report.add_argument(
        "-o", "--out", default="report.html", help="the HTML file (default: report.html)"
    )
    report.add_argument(
        "--store",
        metavar="DIR",
        help="where run ids are looked up (default: $FORGETLESS_RUNS or ./runs)",
    )
    report.add_argument("--title", default="forgetless report")
    report.add_argument(
        "--figures", metavar="DIR", help="also save each figure as PNG and SVG in DIR"
    )
    report.add_argument(
        "--analysis",
        nargs="+",
        metavar="SVG_OR_DIR",
        help="also embed these SVG figures (or every SVG in these folders), e.g. the output "
        "of 'forgetless landscape' or 'forgetless plasticity'",
    )


def collect_results(names: Sequence[str], store_dir: str | None) -> list:
    """Results from run folders, result.json files, stores (all complete runs) or run ids."""
    from pathlib import Path

    from forgetless.result import Result
    from forgetless.runs import RunStore, default_store, is_store

    results = []
    for name in names:
        path = Path(name)
        if path.is_file():
            results.append(Result.load(path))
        elif (path / "result.json").is_file():
            results.append(Result.load(path / "result.json"))
        elif is_store(path):
            results += RunStore(path).complete_results()
        else:
            root = Path(store_dir) if store_dir else default_store()
            if not is_store(root):
                raise ConfigError(f"{name!r} is not a run folder, a result file or a run store")
            store = RunStore(root)
            results.append(store.result(str(store.locate(name))))
    return results


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from forgetless.report import (
        accuracy_heatmap,
        forgetting_curves,
        perplexity_heatmap,
        save,
        write_report,
    )

    results = collect_results(args.runs, args.store)
    extra = []
    for name in args.analysis or []:
        path = Path(name)
        extra += sorted(path.glob("*.svg")) if path.is_dir() else [path]
    out = write_report(results, args.out, args.title, extra)
    print(f"wrote {out} ({len(results)} run(s))")
    if args.figures:
        from forgetless.analysis.frontier import frontiers_in
        from forgetless.labels import unique_stems
        from forgetless.report.figures import frontier_plot, run_title, strategy_comparison
        from forgetless.report.html import labelled

        folder = Path(args.figures)
        ordered, labels = labelled(results)
        # Named by what tells the runs apart, numbered where two would coincide: no run's
        # figures overwrite another's.
        for r, label, stem in zip(ordered, labels, unique_stems(labels), strict=True):
            stem = f"{r.scenario}_{stem}"
            save(
                accuracy_heatmap(r, run_title(r, "accuracy (%)", label)), folder / f"{stem}_matrix"
            )
            curves = forgetting_curves(
                r, run_title(r, "accuracy on each task along the stream", label)
            )
            save(curves, folder / f"{stem}_curves")
            if r.perplexity_matrix:
                heatmap = perplexity_heatmap(r, run_title(r, "perplexity per token", label))
                save(heatmap, folder / f"{stem}_perplexity")
        if len(results) > 1:
            save(strategy_comparison(results), folder / "comparison")
        frontiers = frontiers_in(results)
        if frontiers:
            scenario = ", ".join(sorted({r.scenario for r in results}))
            save(frontier_plot(frontiers, scenario=scenario), folder / "frontier")
        print(f"figures (PNG and SVG) in {folder}")
    return 0
