"""The run store and sweeps under load: wall time with 1 and 2 local workers, the same sweep on a
local Ray, and a sweep killed half-way with kill -9 of its parent then restarted.

Usage::

    python benchmarks/sweep_durability.py [--out benchmarks/results/sweep_durability.json] \\
        [--only scaling ray kill] [--repeats 3] [--keep DIR]

The sweep is issue 5's: split-digits, class-incremental, 4 strategies x 2 settings x 3 seeds = 24
runs with the settings of ``forgetless demo`` (MLP 100-100, 20 epochs of batch 32, SGD lr 0.1:
each task is learnt almost perfectly): finetune at lr 0.05 and 0.1, EWC at lambda 10 and 50 (stable with SGD at lr 0.1), SI at c 0.1 and 1, replay with
50 and 200 stored examples.

``scaling``: the whole sweep into an empty store with 1 worker and with 2 (``run_sweep``, the
local process pool, one torch thread per worker), ``--repeats`` pairs, alternating which goes
first. The speed-up is the ratio of wall times per pair, and their median.

``ray``: the same sweep on a local Ray with 2 CPUs; every run's accuracy matrix must equal the
local one bit for bit. Ray's start-up is timed apart from the sweep.

``kill``: ``forgetless sweep`` in a child process with 2 workers; when 12 runs are complete the
parent is killed with SIGKILL (its workers die with it), then the sweep is run again to the end.
Checks: 24 runs complete, each with exactly one ``end`` event in its ``events.jsonl`` (no run
finished twice), and every matrix equal to the uninterrupted sweep's (interrupted runs resume
from their last task and end with the same numbers).

Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from forgetless.runs import RunIndex, RunStore
from forgetless.sweeps import run_sweep, sweep_from_dict
from grid import log, publish

SPEC: dict[str, Any] = {
    "seeds": [0, 1, 2],
    "base": {
        "scenario": "split-digits",
        "hidden": [100, 100],
        "epochs": 20,
        "batch_size": 32,
        "lr": 0.1,
    },
    "grid": [
        {"strategy": "finetune", "lr": [0.05, 0.1]},
        {"strategy": "ewc", "lam": [10.0, 50.0]},
        {"strategy": "si", "c": [0.1, 1.0]},
        {"strategy": "replay", "buffer_size": [50, 200]},
    ],
}
SECTIONS = ("scaling", "ray", "kill")


def matrices(store: Path) -> dict[str, list[list[float]]]:
    """Run id -> accuracy matrix of every complete run in a store."""
    runs = RunStore(store)
    return {
        row["id"]: runs.result(row["id"]).accuracy_matrix
        for row in runs.index.find(status="complete")
    }


def timed_sweep(store: Path, workers: int, backend: str = "local") -> dict[str, Any]:
    report = run_sweep(sweep_from_dict(SPEC), store, workers=workers, backend=backend)
    if report.failed:
        raise RuntimeError(f"runs failed: {report.failed}")
    log(f"{backend} x{workers}: {len(report.done)} runs in {report.seconds:.1f} s")
    return {"runs": len(report.done), "seconds": round(report.seconds, 2)}


def scaling(root: Path, repeats: int) -> dict[str, Any]:
    pairs = []
    for k in range(repeats):
        order = (1, 2) if k % 2 == 0 else (2, 1)  # alternate which goes first
        times = {w: timed_sweep(root / f"workers-{w}-{k}", w) for w in order}
        pairs.append({"workers_1": times[1], "workers_2": times[2],
                      "speedup": round(times[1]["seconds"] / times[2]["seconds"], 3)})  # fmt: skip
    for w in (1, 2):  # the stores the other sections compare with
        shutil.copytree(root / f"workers-{w}-0", root / f"workers-{w}")
    same = all(
        matrices(root / f"workers-1-{k}") == matrices(root / f"workers-2-{k}")
        for k in range(repeats)
    )
    return {
        "pairs": pairs,
        "speedup_median": statistics.median(p["speedup"] for p in pairs),
        "results_identical_1_vs_2_workers": same,
    }


def on_ray(root: Path) -> dict[str, Any]:
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False)
    startup = time.perf_counter() - start
    try:
        sweep = timed_sweep(root / "ray", 2, backend="ray")
    finally:
        ray.shutdown()
    local = root / "workers-2"
    if not (local / "index.sqlite").exists():
        timed_sweep(local, 2)
    ours, theirs = matrices(local), matrices(root / "ray")
    return {
        "ray_startup_seconds": round(startup, 2),
        "sweep": sweep,
        "runs_compared": len(ours),
        "identical_per_seed_to_local": ours == theirs,
    }


def killed_and_restarted(root: Path) -> dict[str, Any]:
    store = root / "killed"
    spec_file = root / "sweep.toml"
    spec_file.write_text(to_toml(SPEC))
    code = "import sys; from forgetless.cli import main; sys.exit(main(sys.argv[1:]))"
    argv = [sys.executable, "-c", code, "sweep", str(spec_file), "--store", str(store)]
    parent = subprocess.Popen(
        [*argv, "--workers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    index = store / "index.sqlite"

    def count(status: str) -> int:
        return len(RunIndex(index).find(status=status)) if index.exists() else 0

    while count("complete") < 12:
        if parent.poll() is not None:
            raise RuntimeError("the sweep ended before it could be killed")
        time.sleep(0.05)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    time.sleep(1.0)  # the workers die with their parent (PR_SET_PDEATHSIG)
    at_kill = {"complete": count("complete"), "running": count("running")}
    log(f"killed: {at_kill}")
    restart = run_sweep(sweep_from_dict(SPEC), store, workers=2)
    rows = RunIndex(index).find()
    ends = {}
    for row in rows:
        events = [json.loads(line) for line in (store / row["id"] / "events.jsonl").open()]
        ends[row["id"]] = [e["event"] for e in events].count("end")
    reference = root / "workers-2"
    if not (reference / "index.sqlite").exists():
        timed_sweep(reference, 2)
    return {
        "at_kill": at_kill,
        "restart_done": len(restart.done),
        "restart_skipped": len(restart.skipped),
        "restart_failed": len(restart.failed),
        "runs_in_index": len(rows),
        "all_complete": all(r["status"] == "complete" for r in rows),
        "every_run_ended_exactly_once": all(n == 1 for n in ends.values()),
        "identical_to_uninterrupted": matrices(store) == matrices(reference),
    }


def to_toml(spec: dict[str, Any]) -> str:
    """SPEC as a sweep file (flat values only, which is all it holds)."""

    def value(v: Any) -> str:
        return json.dumps(v)

    lines = [f"seeds = {value(spec['seeds'])}", "[base]"]
    lines += [f"{k} = {value(v)}" for k, v in spec["base"].items()]
    for block in spec["grid"]:
        lines.append("[[grid]]")
        lines += [f"{k} = {value(v)}" for k, v in block.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/sweep_durability.json")
    )
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--repeats", type=int, default=3, help="1-vs-2-worker pairs (scaling)")
    parser.add_argument("--keep", type=Path, help="keep the stores in this folder")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="forgetless-sweeps-"))
    root.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    report: dict[str, Any] = {"sweep": SPEC}
    try:
        if "scaling" in args.only:
            report["scaling"] = scaling(root, args.repeats)
        if "ray" in args.only:
            report["ray"] = on_ray(root)
        if "kill" in args.only:
            report["kill"] = killed_and_restarted(root)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    report["environment"] = {
        "cpus": os.cpu_count(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    publish(report, args.out)


if __name__ == "__main__":
    main()
