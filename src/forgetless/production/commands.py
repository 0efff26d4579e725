"""The production commands of the ``forgetless`` CLI: ``update``, ``gate``, ``merge``, ``drift``
and ``monitor``. ``add_gate(parser)`` and so on declare each one's options, ``cmd_gate(args)``
and so on run it and return the exit code (:mod:`forgetless.commands` lists them). Usage and data errors raise a
:class:`~forgetless.errors.ForgetlessError`, which the CLI prints as one line (exit code 2).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from forgetless.errors import ConfigError

MODEL_HELP = (
    "the model's factory: path/to/file.py:make_model or package.module:make_model, a function "
    "returning the nn.Module. This imports and runs that file's code, as Python would; the "
    "weights files are only read as tensors, never unpickled"
)
SLICES_HELP = (
    "old-data slices: a folder of .npz files with arrays x and y (one slice each, named by "
    "its file), one .npz with x, y and a slice array of names, or stream:NAME (the test sets "
    "of a stream's tasks, with --data-dir). Inputs go to the model as float32, as stored"
)

EXAMPLES_GATE = """\
exit codes: 0 every slice passes, 1 a slice regressed, 3 inconclusive (a slice too small to
tell), 2 usage or data errors.

thresholds file (TOML):
  max_drop = 1.0            # every slice not named below
  [slices]
  "segment 2019" = 0.5
  overall = 0.25

example:
  forgetless gate --model model.py:make_model --baseline v1.safetensors \\
      --candidate v2.safetensors --slices slices/ --max-drop 1 --json gate.json --html gate.html
"""


def _common_model(p: argparse.ArgumentParser, required: bool = True, trains: bool = False) -> None:
    from forgetless.options import DeprecatedFlag

    p.add_argument("--model", metavar="SPEC", required=required, help=MODEL_HELP)
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument(
        "--eval-batch-size",
        dest="eval_batch_size",
        metavar="N",
        type=int,
        default=1024,
        help="examples per evaluation forward pass (default: 1024)",
    )
    if not trains:  # --batch-size is the training batch, as for 'forgetless run'
        p.add_argument(
            "--batch-size", dest="eval_batch_size", type=int, action=DeprecatedFlag,
            new="--eval-batch-size", help=argparse.SUPPRESS,
        )  # fmt: skip


def _recording(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("recording (for 'forgetless monitor')")
    g.add_argument("--store", metavar="DIR", help="record the decision in this run store")
    g.add_argument("--version", help="the candidate's version (default: its file's name)")
    g.add_argument("--baseline-version", help="the baseline's version (default: its file's name)")
    g.add_argument("--window", help="the data window this decision covers, e.g. 2024-06")


def _verdict_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-drop",
        type=float,
        default=1.0,
        metavar="POINTS",
        help="the largest acceptable drop in accuracy, in points (default: 1.0)",
    )
    p.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        help="confidence of each one-sided bound (default: 0.95)",
    )


def add_gate(gate: argparse.ArgumentParser) -> None:
    """The options of ``forgetless gate``."""
    gate.description = (
        "Evaluate the baseline and the candidate on the same examples of each "
        "slice; per slice and overall print both accuracies, the paired change with its "
        "bounds (a paired bootstrap over examples), the negative and positive flips, and a "
        "verdict: fail when the drop exceeds --max-drop with the stated confidence, pass when "
        "it is within, inconclusive when the slice is too small to tell."
    )
    gate.epilog = EXAMPLES_GATE
    gate.formatter_class = argparse.RawDescriptionHelpFormatter
    _common_model(gate)
    gate.add_argument("--baseline", metavar="WEIGHTS", required=True, help="the deployed weights")
    gate.add_argument("--candidate", metavar="WEIGHTS", required=True, help="the update's weights")
    gate.add_argument("--slices", metavar="S", required=True, help=SLICES_HELP)
    _verdict_options(gate)
    gate.add_argument("--thresholds", metavar="FILE", help="per-slice max drops (TOML, below)")
    gate.add_argument("--resamples", type=int, default=10_000, help="bootstrap draws per slice")
    gate.add_argument("--seed", type=int, default=0, help="of the bootstrap draws (default: 0)")
    gate.add_argument("--data-dir", metavar="DIR", help="data for stream:NAME slices")
    gate.add_argument("--json", metavar="FILE", help="also write the verdict as JSON")
    gate.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page")
    _recording(gate)


def add_update(update: argparse.ArgumentParser) -> None:
    """The options of ``forgetless update``."""
    from forgetless.names import OPTIMIZERS

    update.description = (
        "Load the model (factory + weights), fine-tune it on --new with a "
        "strategy that may use a retained sample of the old data (--old: EWC's Fisher, "
        "replay's memory), write the candidate's weights, and print each slice's accuracy "
        "before and after with the gate's statistics. Strategy parameters are --NAME VALUE "
        "pairs (--lam 100), as for 'forgetless run'."
    )
    update.epilog = (
        "example:\n  forgetless update --model model.py:make_model --weights v1.safetensors "
        "\\\n      --new new.npz --new-test new_test.npz --old retained.npz --slices slices/ "
        "\\\n      --strategy ewc --lam 1000 --epochs 2 --out v2.safetensors"
    )
    update.formatter_class = argparse.RawDescriptionHelpFormatter
    _common_model(update, trains=True)
    update.add_argument("--weights", required=True, help="the deployed model's weights")
    update.add_argument("--new", required=True, metavar="FILE", help="new training data (.npz)")
    update.add_argument("--new-test", metavar="FILE", help="held-out new data (.npz)")
    update.add_argument(
        "--old", metavar="FILE", help="a retained sample of the old data (.npz) for the strategy"
    )
    update.add_argument("--slices", metavar="S", help=SLICES_HELP + " (default: --old)")
    update.add_argument("--data-dir", metavar="DIR", help="data for stream:NAME slices")
    update.add_argument("--strategy", default="finetune", help="finetune, ewc, replay, lwf, ...")
    g = update.add_argument_group("training loop")
    g.add_argument("--epochs", type=int, default=1, help="passes over --new (default: 1)")
    g.add_argument("--iterations", type=int, help="optimiser steps instead of epochs")
    g.add_argument("--batch-size", type=int, default=128, help="examples per step (default: 128)")
    g.add_argument("--optimizer", default="sgd", choices=list(OPTIMIZERS))
    g.add_argument("--lr", type=float, default=0.01, help="learning rate (default: 0.01)")
    g.add_argument("--momentum", type=float, default=0.0)
    g.add_argument("--seed", type=int, default=0, help="batch order and sampling (default: 0)")
    g.add_argument("--threads", type=int, help="CPU threads for torch")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    update.add_argument("--out", required=True, metavar="FILE", help="the candidate's weights")
    _verdict_options(update)
    update.add_argument("--json", metavar="FILE", help="also write the comparison as JSON")
    update.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page")
    _recording(update)


def add_merge(merge: argparse.ArgumentParser) -> None:
    """The options of ``forgetless merge``."""
    merge.description = (
        "For each alpha, theta = (1 - alpha) theta_old + alpha theta_new (Wortsman "
        "et al. 2022); evaluate every old slice and the new data, print the sweep and draw "
        "old-slice against new-data accuracy along alpha. --write saves one merged model: "
        "--alpha, or the largest alpha whose old slices stay within --max-drop of the old "
        "model's (choose on held-out data, not on the gate's slices)."
    )
    _common_model(merge)
    merge.add_argument("--old", required=True, metavar="WEIGHTS", help="the deployed weights")
    merge.add_argument("--new", required=True, metavar="WEIGHTS", help="the updated weights")
    merge.add_argument("--slices", required=True, metavar="S", help=SLICES_HELP)
    merge.add_argument("--new-data", required=True, metavar="FILE", help="held-out new data")
    merge.add_argument(
        "--alphas",
        default="0:1:11",
        help="START:STOP:COUNT (evenly spaced) or A,B,... (default: 0:1:11)",
    )
    merge.add_argument(
        "--max-drop",
        type=float,
        default=1.0,
        metavar="POINTS",
        help="for choosing alpha: the largest old-slice drop allowed (default: 1.0)",
    )
    merge.add_argument("--alpha", type=float, help="the alpha --write uses (default: chosen)")
    merge.add_argument("--write", metavar="FILE", help="save the merged model's weights")
    merge.add_argument("--data-dir", metavar="DIR", help="data for stream:NAME slices")
    merge.add_argument("--json", metavar="FILE", help="also write the sweep as JSON")
    merge.add_argument(
        "--figure", metavar="PATH", help="save the trade-off figure as PATH.png and PATH.svg"
    )


def add_drift(drift: argparse.ArgumentParser) -> None:
    """The options of ``forgetless drift``."""
    drift.description = (
        "A kernel two-sample test (MMD^2 with a Gaussian kernel, median "
        "bandwidth, permutation p-value) and per-feature Kolmogorov-Smirnov tests with a "
        "multiple-testing correction, on the inputs or on a layer's features. Drift when "
        "either is significant at alpha/2. Exit codes: 0 no drift, 1 drift, 2 usage or data "
        "errors."
    )
    drift.add_argument("--reference", required=True, metavar="FILE", help=".npz with an x array")
    drift.add_argument(
        "--batch", required=True, action="append", metavar="FILE", help=".npz (repeat for more)"
    )
    drift.add_argument("--features", metavar="LAYER", help="test this layer's outputs instead")
    _common_model(drift, required=False)
    drift.add_argument("--weights", help="the model's weights (with --features)")
    drift.add_argument("--alpha", type=float, default=0.05, help="level (default: 0.05)")
    drift.add_argument("--permutations", type=int, default=1000, help="(default: 1000)")
    drift.add_argument(
        "--max-samples", type=int, default=1000, help="MMD points per side (default: 1000)"
    )
    drift.add_argument("--correction", choices=["bh", "bonferroni"], default="bh")
    drift.add_argument("--seed", type=int, default=0)
    drift.add_argument("--json", metavar="FILE", help="also write the results as JSON")


def add_monitor(monitor: argparse.ArgumentParser) -> None:
    """The options of ``forgetless monitor``."""
    monitor.description = (
        "Read the update and gate decisions recorded in a run store (--store on "
        "'forgetless update' and 'forgetless gate') and show every slice's accuracy across "
        "versions, flagging versions where the gate failed a slice or it fell more than "
        "--max-drop points."
    )
    monitor.add_argument("store", help="the run store")
    monitor.add_argument(
        "--max-drop", type=float, default=1.0, metavar="POINTS", help="(default: 1.0)"
    )
    monitor.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    monitor.add_argument("--html", metavar="FILE", help="a self-contained page with the figure")
    monitor.add_argument(
        "--figure", metavar="PATH", help="save the figure as PATH.png and PATH.svg (for "
        "'forgetless report --analysis')",
    )  # fmt: skip


def _write_json(path: str | None, data: Any) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {path}")


def _write_html(path: str | None, text: str) -> None:
    if path:
        from forgetless.report.production import save_page

        save_page(text, path)
        print(f"wrote {path}")


def _record(args, kind: str, comparison, candidate: str, baseline: str, details) -> None:
    if not args.store:
        return
    from forgetless.production.monitor import record

    path = record(
        args.store,
        kind,
        comparison,
        args.version or Path(candidate).stem,
        args.baseline_version or Path(baseline).stem,
        args.window,
        details,
    )
    print(f"recorded in {path}")


def cmd_gate(args: argparse.Namespace) -> int:
    from forgetless.production.gate import gate
    from forgetless.production.loading import load_model

    baseline = load_model(args.model, args.baseline)
    candidate = load_model(args.model, args.candidate)
    result = gate(
        baseline,
        candidate,
        args.slices,
        max_drop=args.max_drop,
        confidence=args.confidence,
        thresholds=args.thresholds,
        resamples=args.resamples,
        seed=args.seed,
        batch_size=args.eval_batch_size,
        device=args.device,
        data_dir=args.data_dir,
    )
    print(result.table("baseline", "candidate"))
    _write_json(args.json, result.to_dict())
    if args.html:
        from forgetless.report.production import gate_page

        _write_html(args.html, gate_page(result))
    details = {"model": args.model, "baseline": args.baseline, "candidate": args.candidate,
               "slices": args.slices}  # fmt: skip
    _record(args, "gate", result, args.candidate, args.baseline, details)
    return result.exit_code


def cmd_update(args: argparse.Namespace) -> int:
    from forgetless.engine import FitConfig
    from forgetless.options import check_strategy_params, strategy_params
    from forgetless.production.loading import load_model, save_weights
    from forgetless.production.update import update

    params = strategy_params(args.argv, args.extra)
    check_strategy_params(args.strategy, params, list(args.command_parser._option_string_actions))
    model = load_model(args.model, args.weights)
    fit = FitConfig(
        epochs=args.epochs,
        iterations=args.iterations,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        momentum=args.momentum,
        eval_batch_size=args.eval_batch_size,
        device=args.device,
        threads=args.threads,
        progress=not args.no_progress,
    )
    outcome = update(
        model,
        args.new,
        args.old,
        args.strategy,
        slices=args.slices,
        new_test=args.new_test,
        params=params,
        fit=fit,
        seed=args.seed,
        max_drop=args.max_drop,
        confidence=args.confidence,
        data_dir=args.data_dir,
    )
    print(f"update with {outcome.strategy} {outcome.params or ''}".rstrip())
    print(outcome.table())
    save_weights(outcome.model, args.out)
    print(f"wrote the candidate's weights to {args.out}")
    _write_json(args.json, {**outcome.to_dict(), "candidate": args.out})
    if args.html:
        from forgetless.report.production import gate_page

        page = gate_page(outcome.comparison, f"update with {outcome.strategy}", "before", "after")
        _write_html(args.html, page)
    details = {"model": args.model, "weights": args.weights, "new": args.new, "old": args.old,
               "strategy": outcome.strategy, "params": outcome.params}  # fmt: skip
    _record(args, "update", outcome.comparison, args.out, args.weights, details)
    return 0


def _alphas(text: str) -> list[float]:
    try:
        if ":" in text:
            start, stop, count = text.split(":")
            n = int(count)
            if n < 2:
                raise ValueError
            a, b = float(start), float(stop)
            return [a + (b - a) * i / (n - 1) for i in range(n)]
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(
            f"--alphas must be START:STOP:COUNT (COUNT >= 2) or A,B,..., got {text!r}"
        ) from None


def cmd_merge(args: argparse.Namespace) -> int:
    from forgetless.production.loading import build, load_weights, put_weights, save_weights
    from forgetless.production.merge import merge_sweep, merged_model

    model = build(args.model)
    old = load_weights(args.old)
    new = load_weights(args.new)
    put_weights(model, old, args.old, f"model of {args.model}")  # both must fit the model
    put_weights(model, new, args.new, f"model of {args.model}")
    sweep = merge_sweep(
        model,
        old,
        new,
        args.slices,
        args.new_data,
        _alphas(args.alphas),
        batch_size=args.eval_batch_size,
        device=args.device,
        data_dir=args.data_dir,
    )
    print(sweep.table())
    chosen = args.alpha if args.alpha is not None else sweep.choose(args.max_drop)
    if args.alpha is None:
        print(
            f"largest alpha with every old slice within {args.max_drop:g} points of the old "
            f"model: {chosen:g}"
        )
    _write_json(args.json, {**sweep.to_dict(), "chosen_alpha": chosen})
    if args.figure:
        from forgetless.report.figures import save
        from forgetless.report.production import merge_figure

        files = save(merge_figure(sweep), args.figure)
        print(f"wrote {', '.join(map(str, files))}")
    if args.write:
        save_weights(merged_model(model, old, new, chosen), args.write)
        print(f"wrote the model at alpha {chosen:g} to {args.write}")
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    from forgetless.production.drift import drift

    model = None
    if args.features:
        if not args.model:
            raise ConfigError("--features needs --model (and --weights) to compute the layer")
        from forgetless.production.loading import load_model

        model = load_model(args.model, args.weights)
    elif args.model or args.weights:
        raise ConfigError("--model and --weights are used with --features LAYER only")
    results = {}
    for batch in args.batch:
        result = drift(
            args.reference,
            batch,
            alpha=args.alpha,
            permutations=args.permutations,
            max_samples=args.max_samples,
            correction=args.correction,
            seed=args.seed,
            model=model,
            layer=args.features,
            batch_size=args.eval_batch_size,
            device=args.device,
        )
        results[batch] = result
        print(f"{batch}: {result.summary()}")
    drifted = [b for b, r in results.items() if r.verdict == "drift"]
    print(f"verdict: {'drift' if drifted else 'no drift'} ({len(drifted)}/{len(results)} batches)")
    _write_json(args.json, {b: r.to_dict() for b, r in results.items()})
    return 1 if drifted else 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from forgetless.production.monitor import monitor

    state = monitor(args.store, args.max_drop)
    print(state.table())
    _write_json(args.json, state.to_dict())
    if args.html:
        from forgetless.report.production import monitor_page

        _write_html(args.html, monitor_page(state))
    if args.figure:
        from forgetless.report.figures import save
        from forgetless.report.production import monitor_figure

        files = save(monitor_figure(state), args.figure)
        print(f"wrote {', '.join(map(str, files))}")
    return 0
