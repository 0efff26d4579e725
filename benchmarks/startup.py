"""Start-up time of the ``forgetless`` command against importing torch, in the same run.

Measured, each as a fresh process, ``--repeats`` times in turn (so that a busy spell of the
machine falls on all of them alike), the median kept:

1. ``forgetless --help`` and ``forgetless run --help`` (neither imports torch: the command
   modules are imported only for the command being run, the option lists come from RunConfig's
   fields and a torch-free list of names);
2. ``python -c "import torch"``, the floor of any command that trains;
3. with ``--run``, a whole ``forgetless run`` on the bundled digits (split-digits, its preset's
   loop settings, one thread), and the share of its wall time that the engine's own timings
   (``Result.timings["total"]``: training and evaluation) do not cover: process start,
   imports, data loading and model building.

4. with ``--phases DATA``, a whole Split-MNIST class-IL fine-tuning run of the protocol of
   ``avalanche_compare.py`` (MLP 784-400-400-10, one thread), split into where its wall time
   goes: the interpreter's start, importing torch, importing forgetless's modules for a run,
   reading the data (``forgetless.data.load``), the rest of preparing (splitting, the model,
   the strategy), training, evaluation, the rest of the command (its result JSON), and the
   exit; with ``--baseline-src`` the same for the other checkout, in turn.

Each sample also records the CPU time (user + system) of the process, which a busy machine
inflates less than wall time. One JSON object goes to stdout and to ``--out``::

    python benchmarks/startup.py [--repeats 7] [--run] [--baseline-src OLD/src] \
        [--phases DATA] [--out benchmarks/results/startup.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLI = "import sys; from forgetless.cli import main; sys.exit(main(sys.argv[1:]))"
DIGITS_RUN = ["run", "--scenario", "split-digits", "--threads", "1", "--no-progress", "--json"]


def _env(src: Path = ROOT / "src") -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    return env


def timed(argv: list[str], src: Path = ROOT / "src") -> dict[str, Any]:
    """One fresh process, importing forgetless from ``src``: its wall seconds, CPU seconds
    and stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=_env(src), check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-500:]}")
    return {"wall": wall, "cpu": cpu, "stdout": done.stdout, "stderr": done.stderr}


MNIST_RUN = [
    "run", "--scenario", "split-mnist", "--protocol", "class", "--model", "mlp", "--lr", "0.05",
    "--batch-size", "128", "--epochs", "1", "--seed", "0", "--threads", "1", "--no-progress",
    "--json", "--strategy", "finetune",
]  # fmt: skip
#: Run in the measured process: marks the phases, then the command as the command line runs it.
PHASES = r"""
import json, sys, time
began = time.time()
start = time.perf_counter()
marks = {}
import torch
marks["import torch"] = time.perf_counter() - start
from forgetless.cli import main
import forgetless.commands.run, forgetless.data, forgetless.engine, forgetless.runs
import forgetless.experiment as experiment
marks["import forgetless"] = time.perf_counter() - start - marks["import torch"]
def timing(owner, name, mark):
    original = getattr(owner, name)
    def timed(*args, **kwargs):
        t = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            marks[mark] = time.perf_counter() - t
    setattr(owner, name, timed)
timing(forgetless.data, "load", "read data")
timing(experiment, "prepare", "prepare")
sys.argv = ["forgetless", *sys.argv[1:]]
t = time.perf_counter()
def report():
    # At exit: the command line's main() may end the process itself (after the exit handlers).
    # Registered last, this handler runs first; the "exit" phase is what follows it.
    marks["command"] = time.perf_counter() - t
    print(json.dumps({"began": began, "ended": time.time(), "marks": marks}), file=sys.stderr,
          flush=True)
import atexit
atexit.register(report)
sys.exit(main())
"""


def phases(data_dir: str, src: Path) -> dict[str, float]:
    """One fresh Split-MNIST run's wall seconds per phase (see the module's docstring)."""
    before = time.time()
    sample = timed([sys.executable, "-c", PHASES, *MNIST_RUN, "--data-dir", data_dir], src)
    after = time.time()
    inside = json.loads(sample["stderr"].strip().splitlines()[-1])
    marks, engine = inside["marks"], json.loads(sample["stdout"])["timings"]
    evaluation = engine["eval"] + engine.get("baseline_eval", 0.0)
    return {
        "wall": sample["wall"],
        "cpu": sample["cpu"],
        "interpreter start": inside["began"] - before,
        "import torch": marks["import torch"],
        "import forgetless": marks["import forgetless"],
        "read data": marks["read data"],
        "split, model, strategy": marks["prepare"] - marks["read data"],
        "train": engine["train"],
        "evaluate": evaluation,
        "rest of the command": marks["command"] - marks["prepare"] - engine["total"],
        "exit": after - inside["ended"],
    }


def imports_torch(argv: list[str]) -> bool:
    """Whether ``forgetless ARGV`` imports torch (checked in the process itself)."""
    code = (
        "import sys\nfrom forgetless.cli import main\ntry:\n    main(sys.argv[1:])\n"
        "except SystemExit:\n    pass\nprint('torch' in sys.modules, file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, env=_env()
    )
    return done.stderr.strip().splitlines()[-1] == "True"


def summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    walls = [s["wall"] for s in samples]
    cpus = [s["cpu"] for s in samples]
    return {
        "median_s": statistics.median(walls),
        "min_s": min(walls),
        "median_cpu_s": statistics.median(cpus),
        "walls_s": walls,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="processes per measure")
    parser.add_argument("--run", action="store_true", help="also a digits run (3 repeats)")
    parser.add_argument(
        "--baseline-src",
        metavar="DIR",
        help="also time 'forgetless --help' from another checkout's src/ (e.g. before a change)",
    )
    parser.add_argument(
        "--phases",
        metavar="DATA",
        help="also where a Split-MNIST run's wall time goes (DATA holds mnist/), --repeats runs",
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "startup.json"))
    args = parser.parse_args(argv)
    if args.phases:
        report = {"split-mnist run phases": split_mnist_phases(args)}
        return _finish(report, args)

    commands = {
        "forgetless --help": [sys.executable, "-c", CLI, "--help"],
        "forgetless run --help": [sys.executable, "-c", CLI, "run", "--help"],
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "python -c 'pass'": [sys.executable, "-c", "pass"],
    }
    sources = {name: ROOT / "src" for name in commands}
    if args.baseline_src:
        commands["baseline: forgetless --help"] = commands["forgetless --help"]
        sources["baseline: forgetless --help"] = Path(args.baseline_src)
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in commands}
    for repeat in range(args.repeats):  # in turn, so that load falls on every measure alike
        for name, command in commands.items():
            samples[name].append(timed(command, sources[name]))
        print(f"repeat {repeat + 1}/{args.repeats}", file=sys.stderr)
    report: dict[str, Any] = {name: summary(s) for name, s in samples.items()}
    torch_s = report["python -c 'import torch'"]["median_s"]
    for name in ("forgetless --help", "forgetless run --help", "baseline: forgetless --help"):
        if name in report:
            report[name]["ratio_to_import_torch"] = report[name]["median_s"] / torch_s
    report["imports_torch"] = {
        "forgetless --help": imports_torch(["--help"]),
        "forgetless run --help": imports_torch(["run", "--help"]),
    }
    if args.run:
        runs = []
        for _ in range(3):
            sample = timed([sys.executable, "-c", CLI, *DIGITS_RUN])
            engine = json.loads(sample["stdout"])["timings"]
            runs.append(
                {
                    "wall_s": sample["wall"],
                    "cpu_s": sample["cpu"],
                    "engine_s": engine["total"],
                    "train_s": engine["train"],
                    "outside_engine_share": 1 - engine["total"] / sample["wall"],
                }
            )
        report["digits run"] = {
            "command": "forgetless " + " ".join(DIGITS_RUN),
            "runs": runs,
            "median_outside_engine_share": statistics.median(
                r["outside_engine_share"] for r in runs
            ),
            "median_train_share": statistics.median(r["train_s"] / r["wall_s"] for r in runs),
        }
    return _finish(report, args)


def split_mnist_phases(args: argparse.Namespace) -> dict[str, Any]:
    """``--repeats`` runs of each checkout in turn; the median seconds of each phase."""
    sources = {"this checkout": ROOT / "src"}
    if args.baseline_src:
        sources["baseline"] = Path(args.baseline_src)
    phases(args.phases, sources["this checkout"])  # warm-up: page cache, the decoded cache
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in sources}
    for repeat in range(args.repeats):
        for name, src in sources.items():
            samples[name].append(phases(args.phases, src))
        print(f"phases {repeat + 1}/{args.repeats}", file=sys.stderr)
    return {
        "command": "forgetless " + " ".join(MNIST_RUN) + " --data-dir DATA",
        **{
            name: {
                "median_s": {k: round(statistics.median(r[k] for r in rs), 3) for k in rs[0]},
                "runs": rs,
            }
            for name, rs in samples.items()
        },
    }


def _finish(report: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from forgetless.provenance import provenance

    # The checkout's folder name, not a path of this machine.
    report["baseline_src"] = (
        Path(args.baseline_src).resolve().parent.name if args.baseline_src else None
    )
    report["repeats"] = args.repeats
    report["python"] = sys.version.split()[0]
    report["cpus"] = os.cpu_count()
    report["load_average"] = os.getloadavg()
    report["provenance"] = provenance()
    text = json.dumps(report, indent=1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()
