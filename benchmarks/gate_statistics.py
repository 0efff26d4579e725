"""Are the forgetting gate's statistics right, and is it fast? (issue 14, must-shows 2 and 4)

Two MLPs are trained on MNIST (784-100-10, one epoch, seeds 0 and 1). The 10,000 MNIST test
images are the population: slices are drawn from it with replacement (a bootstrap resampling
of slices), so the true change of a drawn slice is the population's, known exactly.

- identical models: the candidate is the baseline; false-fail rate (must be 0: no flips).
- at the threshold: baseline and candidate are the two seeds (the worse one is the candidate)
  and ``--max-drop`` is set to their true drop, so each slice sits exactly on the boundary; the
  gate should fail about ``1 - confidence`` of them (the test's size), at every slice size.
- a known drop: the candidate is the baseline with one class's output bias lowered so that
  the population loses about 3 points; with max drop 1 the gate should fail (power by size).
- tiny slices: 20 to 100 examples of the identical pair are inconclusive, with the examples
  that would be needed.
- speed: ``gate()`` on 10 slices (the test set by digit, 10,000 examples) with 784-400-400
  MLPs, and the ``forgetless gate`` command end to end (a new process: imports included).

    python benchmarks/gate_statistics.py --data-dir DATA
    #   -> benchmarks/results/gate_statistics.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from forgetless import data as sources
from forgetless import gate, train
from forgetless.models import build_model
from forgetless.production.gate import decide
from forgetless.production.loading import save_weights
from forgetless.production.slices import correct
from forgetless.provenance import provenance
from forgetless.scenarios.stream import Protocol, Stream, Task


def _trained(mnist, hidden, seed, epochs=1):
    units = tuple(range(10))
    stream = Stream("mnist", (Task("mnist", mnist.train, mnist.test, units, tuple(map(str, units))),),
                    Protocol.DOMAIN, 10, seed)  # fmt: skip
    model = build_model("mlp", (1, 28, 28), 10, hidden=hidden, seed=seed)
    train(stream, model, seed=seed, epochs=epochs, optimizer="adam", lr=1e-3, progress=False)
    return model.eval()


def _rates(base, cand, sizes, trials, max_drop, confidence, resamples, rng):
    """Verdict shares over ``trials`` slices of each size drawn with replacement."""
    out = {}
    for n in sizes:
        counts = {"pass": 0, "fail": 0, "inconclusive": 0}
        needed = []
        for t in range(trials):
            rows = torch.from_numpy(rng.integers(0, len(base), n))
            row = decide({"s": base[rows]}, {"s": cand[rows]}, max_drop, confidence,
                         resamples=resamples, seed=t)["s"]  # fmt: skip
            counts[row.verdict] += 1
            if row.needed:
                needed.append(row.needed)
        out[str(n)] = {
            **{k: v / trials for k, v in counts.items()},
            "trials": trials,
            "needed_median": statistics.median(needed) if needed else None,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--out", default="benchmarks/results/gate_statistics.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    mnist = sources.load("mnist", args.data_dir)
    a, b = _trained(mnist, [100], 0), _trained(mnist, [100], 1)
    ca, cb = correct(a, mnist.test), correct(b, mnist.test)
    acc_a, acc_b = float(ca.float().mean()), float(cb.float().mean())
    base, cand = (ca, cb) if acc_b <= acc_a else (cb, ca)
    true_drop = 100 * abs(acc_a - acc_b)
    report = {
        "models": {"seed 0": acc_a, "seed 1": acc_b, "true_drop_points": true_drop},
        "resamples": args.resamples,
        "sizes": [200, 1000, 5000],
    }
    sizes = report["sizes"]
    report["identical"] = _rates(ca, ca, sizes, 200, 1.0, 0.95, args.resamples, rng)
    report["threshold"] = {
        str(conf): _rates(base, cand, sizes, args.trials, true_drop, conf, args.resamples, rng)
        for conf in (0.9, 0.95, 0.99)
    }
    # A known drop: lower the bias of the class whose shift costs about 3 points.
    worse = copy.deepcopy(a)
    head = worse[-1]
    with torch.no_grad():
        for delta in np.linspace(0.5, 20, 40):
            head.bias.copy_(a[-1].bias)
            head.bias[3] -= float(delta)
            cw = correct(worse, mnist.test)
            if 100 * (acc_a - float(cw.float().mean())) >= 3.0:
                break
    known = 100 * (acc_a - float(cw.float().mean()))
    report["known_drop"] = {
        "true_drop_points": known,
        "max_drop_points": 1.0,
        "rates": _rates(ca, cw, sizes, 200, 1.0, 0.95, args.resamples, rng),
    }
    report["tiny"] = {
        "identical": _rates(ca, ca, [20, 50, 100], 200, 1.0, 0.95, args.resamples, rng),
        "two_seeds": _rates(ca, cb, [20, 50, 100], 200, 1.0, 0.95, args.resamples, rng),
    }
    print(json.dumps({k: report[k] for k in ("models", "identical", "threshold")}, indent=1),
          file=sys.stderr)  # fmt: skip

    # Speed: 10 slices, 10,000 examples, 784-400-400 MLPs.
    big_a, big_b = (
        build_model("mlp", (1, 28, 28), 10, seed=0),
        build_model("mlp", (1, 28, 28), 10, seed=1),
    )
    slices = {
        f"digit {k}": mnist.test.subset((mnist.test.y == k).nonzero().squeeze(1)) for k in range(10)
    }
    answers_a = {k: correct(big_a, v) for k, v in slices.items()}
    answers_b = {k: correct(big_b, v) for k, v in slices.items()}
    gate_times, decide_times = [], []
    for _ in range(5):
        t0 = time.perf_counter()
        gate(big_a, big_b, slices)
        gate_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        decide(answers_a, answers_b)
        decide_times.append(time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "model.py").write_text(
            "from forgetless.models import build_model\n\n"
            "def make_model():\n    return build_model('mlp', (1, 28, 28), 10)\n"
        )
        save_weights(big_a, tmp / "a.safetensors")
        save_weights(big_b, tmp / "b.safetensors")
        folder = tmp / "slices"
        folder.mkdir()
        for name, s in slices.items():
            np.savez(folder / f"{name}.npz", x=s.inputs().numpy(), y=s.y.numpy())
        command = [sys.executable, "-m", "forgetless.cli", "gate", "--model",
                   f"{tmp}/model.py:make_model", "--baseline", str(tmp / "a.safetensors"),
                   "--candidate", str(tmp / "b.safetensors"), "--slices", str(folder)]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        cli_times = []
        for _ in range(3):
            t0 = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            cli_times.append(time.perf_counter() - t0)
        version = [sys.executable, "-c", "import forgetless.cli"]
        t0 = time.perf_counter()
        subprocess.run(version, check=True, env=env)
        import_seconds = time.perf_counter() - t0
    report["speed"] = {
        "examples": 10_000,
        "slices": 10,
        "resamples": 10_000,
        "gate_seconds_median": statistics.median(gate_times),
        "statistics_seconds_median": statistics.median(decide_times),
        "cli_seconds_median": statistics.median(cli_times),
        "cli_exit_code": done.returncode,
        "python_and_import_seconds": import_seconds,
        "threads": args.threads,
    }
    print(json.dumps(report["speed"], indent=1), file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report["provenance"] = provenance()  # the forgetless version and git commit
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
