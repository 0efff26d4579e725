"""The run store and sweeps under load: wall time with 1 and 2 local workers, the same sweep on a
local Ray, and a sweep killed half-way with kill -9 of its parent then restarted.

Usage::

    python benchmarks/sweep_durability.py [--out benchmarks/results/sweep_durability.json] \\
        [--only scaling ray kill] [--repeats 3] [--keep DIR] [--baseline-src OLD/src]

The sweep is issue 5's: split-digits, class-incremental, 4 strategies x 2 settings x 3 seeds = 24
runs with the settings of ``forgetless demo`` (MLP 100-100, 20 epochs of batch 32, SGD lr 0.1:
each task is learnt almost perfectly): finetune at lr 0.05 and 0.1, EWC at lambda 10 and 50 (stable with SGD at lr 0.1), SI at c 0.1 and 1, replay with
50 and 200 stored examples.

``scaling``: the whole sweep into an empty store with 1 worker and with 2 (``run_sweep``, the
local process pool, one torch thread per worker), ``--repeats`` pairs, alternating which goes
first. Each sweep runs in a fresh process, as ``forgetless sweep`` would: ``seconds`` is
``run_sweep``'s own wall time (the workers' start included), ``process_seconds`` the whole
process's (its imports too), ``cpu_seconds`` the CPU time of the process and its workers (less
inflated than wall time by a busy machine). The speed-up is the ratio of wall times per pair (``speedup``
of ``seconds``, ``speedup_process`` of ``process_seconds``), and their median. With
``--baseline-src``, the same pairs with forgetless imported from another checkout's ``src/``
(before a change), in turn with this one's; the accuracy matrices of every sweep must be equal.

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
import math
import os
import resource
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

ROOT = Path(__file__).resolve().parents[1]

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


SWEEP_PROCESS = r"""
import json, sys, time
from forgetless import sweeps
began = time.time()
report = sweeps.run_sweep(sweeps.sweep_from_dict(json.loads(sys.argv[1])), sys.argv[2],
                          workers=int(sys.argv[3]))
method = getattr(sweeps, "start_method", lambda: "spawn")()
print(json.dumps({"seconds": report.seconds, "runs": len(report.done), "began": began,
                  "failed": report.failed, "start_method": method}))
"""


def process_sweep(store: Path, workers: int, src: Path) -> dict[str, Any]:
    """The sweep in a fresh process importing forgetless from ``src``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]))
    argv = [sys.executable, "-c", SWEEP_PROCESS, json.dumps(SPEC), str(store), str(workers)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers' too, reaped by it
    cpu = sum(getattr(after, k) - getattr(before, k) for k in ("ru_utime", "ru_stime"))
    if done.returncode != 0:
        raise RuntimeError(f"the sweep failed: {done.stderr[-2000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if out["failed"]:
        raise RuntimeError(f"runs failed: {out['failed']}")
    log(f"{src.parent.name} x{workers}: {out['runs']} runs in {out['seconds']:.1f} s "
        f"({wall:.1f} s with the process)")  # fmt: skip
    return {"runs": out["runs"], "seconds": round(out["seconds"], 2),
            "process_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
            "start_method": out["start_method"],
            **timeline(store, out["began"])}  # fmt: skip


def timeline(store: Path, began: float) -> dict[str, Any]:
    """Where the sweep's time went, from the index rows (``created``: a run's first row, as it
    starts; ``updated``: its last, as it completes; ``pid``: its worker): each worker's first
    run started this long after ``run_sweep`` was called (the worker's start), and the runs'
    seconds summed (the work)."""
    rows = RunIndex(store / "index.sqlite").find()
    first: dict[int, float] = {}
    for row in rows:
        first[row["pid"]] = min(first.get(row["pid"], math.inf), row["created"] - began)
    return {
        "workers_first_run_after_s": sorted(round(t, 2) for t in first.values()),
        "run_seconds_sum": round(sum(r["updated"] - r["created"] for r in rows), 2),
    }


def scaling(root: Path, repeats: int, baseline: Path | None = None) -> dict[str, Any]:
    sources = {"this checkout": ROOT / "src"}
    if baseline is not None:
        sources["baseline"] = baseline
    runs = [(name, w) for name in sources for w in (1, 2)]
    pairs: dict[str, list[dict[str, Any]]] = {name: [] for name in sources}
    for k in range(repeats):
        shift = k % len(runs)  # rotate which goes first, so that load falls on all alike
        times = {}
        for name, w in runs[shift:] + runs[:shift]:
            times[name, w] = process_sweep(root / f"{slug(name)}-workers-{w}-{k}", w, sources[name])
        for name in sources:
            one, two = times[name, 1], times[name, 2]
            pairs[name].append({
                "workers_1": one, "workers_2": two,
                "speedup": round(one["seconds"] / two["seconds"], 3),
                "speedup_process": round(one["process_seconds"] / two["process_seconds"], 3),
            })  # fmt: skip
    mine = slug("this checkout")
    for w in (1, 2):  # the stores the other sections compare with
        shutil.copytree(root / f"{mine}-workers-{w}-0", root / f"workers-{w}")
    reference = matrices(root / f"{mine}-workers-1-0")
    same = all(
        matrices(root / f"{slug(name)}-workers-{w}-{k}") == reference
        for name, w in runs
        for k in range(repeats)
    )
    report: dict[str, Any] = {}
    for name, rows in pairs.items():
        report[name] = {
            "pairs": rows,
            "speedup_median": statistics.median(p["speedup"] for p in rows),
            "speedup_process_median": statistics.median(p["speedup_process"] for p in rows),
            **{
                f"{measure}_median": {
                    f"workers_{w}": statistics.median(p[f"workers_{w}"][measure] for p in rows)
                    for w in (1, 2)
                }
                for measure in ("seconds", "process_seconds", "cpu_seconds")
            },
        }
    report["results_identical_across_workers_and_checkouts"] = same
    return report


def slug(name: str) -> str:
    return name.replace(" ", "-")


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
    parser.add_argument(
        "--baseline-src", type=Path, help="also scaling with another checkout's src/ (before)"
    )
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="forgetless-sweeps-"))
    root.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    report: dict[str, Any] = {"sweep": SPEC}
    try:
        if "scaling" in args.only:
            report["scaling"] = scaling(root, args.repeats, args.baseline_src)
        if "ray" in args.only:
            report["ray"] = on_ray(root)
        if "kill" in args.only:
            report["kill"] = killed_and_restarted(root)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    report["environment"] = {
        "cpus": os.cpu_count(),
        "baseline_src": args.baseline_src.resolve().parent.name if args.baseline_src else None,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    publish(report, args.out)


if __name__ == "__main__":
    main()
