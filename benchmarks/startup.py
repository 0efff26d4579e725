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

Each sample also records the CPU time (user + system) of the process, which a busy machine
inflates less than wall time. One JSON object goes to stdout and to ``--out``::

    python benchmarks/startup.py [--repeats 7] [--run] [--baseline-src OLD/src] \
        [--out benchmarks/results/startup.json]
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
    return {"wall": wall, "cpu": cpu, "stdout": done.stdout}


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
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "startup.json"))
    args = parser.parse_args(argv)

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
    # The checkout's folder name, not a path of this machine.
    report["baseline_src"] = (
        Path(args.baseline_src).resolve().parent.name if args.baseline_src else None
    )
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
    from forgetless.provenance import provenance

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
