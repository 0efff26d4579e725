"""Sweeps: the TOML format, expansion, skipping complete runs, surviving kill -9, summaries."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from forgetless import ConfigError
from forgetless.cli import main
from forgetless.runs import RunIndex, RunStore
from forgetless.sweeps import format_summary, load_sweep, run_sweep, summarise, sweep_from_dict

BASE = {"scenario": "split-digits", "iterations": 10, "threads": 1}


def test_grid_blocks_multiply_lists_and_route_strategy_parameters():
    sweep = sweep_from_dict(
        {
            "seeds": [0, 1, 2],
            "base": BASE,
            "grid": [
                {"strategy": "finetune"},
                {"strategy": "ewc", "protocol": ["task", "class"], "lam": [1.0, 10.0, 100]},
                {"strategy": "finetune", "hidden": [[16], [32, 32]]},
            ],
        }
    )
    assert len(sweep.configs) == 1 + 6 + 2
    ewc = [c for c in sweep.configs if c.strategy == "ewc"]
    assert {(c.protocol, c.strategy_params["lam"]) for c in ewc} == {
        (p, lam) for p in ("task", "class") for lam in (1.0, 10.0, 100.0)
    }
    assert [c.hidden for c in sweep.configs[-2:]] == [[16], [32, 32]]
    assert len(sweep.runs()) == 9 * 3
    assert sorted({r.seed for r in sweep.runs()}) == [0, 1, 2]


def test_random_blocks_draw_reproducibly_within_their_ranges():
    spec = {
        "sample_seed": 7,
        "base": BASE,
        "random": [
            {
                "n": 20,
                "strategy": "si",
                "c": {"log_uniform": [0.01, 10.0]},
                "lr": {"uniform": [0.01, 0.1]},
                "optimizer": {"choice": ["sgd", "adam"]},
            }
        ],
    }
    first, again = sweep_from_dict(spec), sweep_from_dict(spec)
    draws = [(c.strategy_params["c"], c.lr, c.optimizer) for c in first.configs]
    assert draws == [(c.strategy_params["c"], c.lr, c.optimizer) for c in again.configs]
    assert all(0.01 <= c <= 10 and 0.01 <= lr <= 0.1 for c, lr, _ in draws)
    assert {o for *_, o in draws} == {"sgd", "adam"}
    assert len({c for c, *_ in draws}) == 20


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"seed": [0]}, "unknown key 'seed'; did you mean 'seeds'"),
        ({"seeds": []}, "seeds must be a non-empty list"),
        (
            {"base": {"scenaro": "split-digits"}},
            "'scenaro' is not a run option either; did you mean 'scenario'",
        ),
        (
            {"grid": [{"strategy": "ewc", "lamda": [1.0]}]},
            "parameter(s) lamda not accepted by strategy ewc",
        ),
        ({"grid": [{"strategy": "ewcc"}]}, "did you mean 'ewc'"),
        ({"random": [{"strategy": "si"}]}, "needs n = a positive integer"),
        (
            {"random": [{"n": 2, "strategy": "si", "c": {"normal": [0, 1]}}]},
            "expected one of uniform",
        ),
        ({"grid": [{"seed": 1}]}, "'seed' is not set here"),
    ],
)
def test_bad_sweep_files_are_clear_errors(spec, message):
    with pytest.raises(ConfigError) as err:
        sweep_from_dict(spec, where="s.toml")
    assert message in str(err.value)


@pytest.mark.slow
def test_a_sweep_skips_what_is_complete_and_summarises_over_seeds(tmp_path):
    file = tmp_path / "s.toml"
    file.write_text(
        'seeds = [0, 1]\n[base]\nscenario = "split-digits"\niterations = 10\n'
        '[[grid]]\nstrategy = "finetune"\n[[grid]]\nstrategy = "ewc"\nprotocol = "task"\n'
        "lam = [10.0, 1000.0]\n"
    )
    store = tmp_path / "runs"
    report = run_sweep(load_sweep(file), store, workers=2)
    assert (len(report.done), len(report.skipped), report.failed) == (6, 0, [])
    again = run_sweep(load_sweep(file), store, workers=2)
    assert (len(again.done), len(again.skipped)) == (0, 6)
    results = [RunStore(store).result(r["id"]) for r in RunIndex(store / "index.sqlite").find()]
    rows = summarise(results)
    assert len(rows) == 3 and {r["n"] for r in rows} == {2}
    finetune = next(r for r in rows if r["strategy"] == "finetune")
    accs = [100 * r.metrics["acc"] for r in results if r.strategy == "finetune"]
    assert finetune["acc_mean"] == pytest.approx(sum(accs) / 2)
    assert finetune["acc_sem"] == pytest.approx(abs(accs[0] - accs[1]) / 2)  # std/sqrt(2)
    assert finetune["fwt_mean"] is None  # class-IL
    assert {r["settings"] for r in rows if r["strategy"] == "ewc"} == {"lam=10", "lam=1000"}
    markdown = format_summary(rows, "markdown")
    assert markdown.count("\n") == 2 + 3 and "| ewc |" in markdown
    csv = format_summary(rows, "csv").splitlines()
    assert csv[0].startswith("scenario,protocol,strategy,settings,n,acc_mean,acc_std,acc_sem")
    assert len(csv) == 4


@pytest.mark.slow
def test_a_sweep_with_no_weights_leaves_only_results(tmp_path, capsys):
    file = tmp_path / "s.toml"
    file.write_text(
        'seeds = [0, 1]\n[base]\nscenario = "split-digits"\niterations = 10\n'
        '[[grid]]\nstrategy = "replay"\nbuffer_size = 30\n'
    )
    store = tmp_path / "runs"
    assert main(["sweep", str(file), "--store", str(store), "--no-weights"]) == 0
    rows = RunIndex(store / "index.sqlite").find(status="complete")
    assert len(rows) == 2
    for row in rows:
        folder = store / row["id"]
        assert list((folder / "checkpoints").iterdir()) == []
        assert (folder / "result.json").is_file()
    assert "replay" in capsys.readouterr().out  # the summary over seeds still prints


def test_summary_statistics_by_hand():
    def fake(acc, lam, seed):
        return SimpleNamespace(
            scenario="s", protocol="task", strategy="ewc", seed=seed,
            config={"strategy_params": {"lam": lam}, "seed": seed},
            metrics={"acc": acc, "bwt": -acc / 10, "fwt": 0.0, "forgetting": acc / 10},
        )  # fmt: skip

    rows = summarise([fake(0.5, 1.0, 0), fake(0.7, 1.0, 1), fake(0.9, 1.0, 2), fake(0.1, 2.0, 0)])
    one = next(r for r in rows if r["settings"] == "lam=1")
    assert one["n"] == 3 and one["acc_mean"] == pytest.approx(70.0)
    assert one["acc_std"] == pytest.approx(20.0)  # sample std of 50, 70, 90
    assert one["acc_sem"] == pytest.approx(20.0 / 3**0.5)
    two = next(r for r in rows if r["settings"] == "lam=2")
    assert (two["n"], two["acc_std"], two["acc_sem"]) == (1, None, None)  # one seed: no spread
    assert "10.0 ± n/a" in format_summary([two]) and "± 0.0" not in format_summary([two])


def test_summary_rows_sort_settings_by_value_not_as_text():
    def fake(lam, lr):
        return SimpleNamespace(
            scenario="s", protocol="task", strategy="ewc", seed=0,
            config={"strategy_params": {"lam": lam}, "seed": 0, "lr": lr},
            metrics={"acc": 0.5, "bwt": 0.0, "fwt": 0.0, "forgetting": 0.0},
        )  # fmt: skip

    runs = [fake(1000.0, 0.1), fake(10.0, 0.1), fake(100.0, 0.1), fake(10.0, 0.05)]
    settings = [row["settings"] for row in summarise(runs)]
    assert settings == [
        "lam=10 lr=0.05",
        "lam=10 lr=0.1",
        "lam=100 lr=0.1",
        "lam=1000 lr=0.1",
    ]


@pytest.mark.slow
def test_a_sweep_killed_with_minus_9_restarts_and_runs_everything_once(tmp_path):
    file = tmp_path / "s.toml"
    file.write_text(
        'seeds = [0, 1, 2]\n[base]\nscenario = "split-digits"\niterations = 150\n'
        '[[grid]]\nstrategy = ["finetune", "replay"]\n'
    )
    store = tmp_path / "runs"
    code = "import sys; from forgetless.cli import main; sys.exit(main(sys.argv[1:]))"
    argv = [sys.executable, "-c", code, "sweep", str(file), "--store", str(store), "--workers", "2"]
    parent = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180

    def complete() -> int:
        if not (store / "index.sqlite").exists():
            return 0
        return len(RunIndex(store / "index.sqlite").find(status="complete"))

    while complete() < 2:
        assert parent.poll() is None and time.time() < deadline
        time.sleep(0.1)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    time.sleep(1.0)  # the workers die with their parent (PR_SET_PDEATHSIG)
    assert complete() < 6
    assert main(["sweep", str(file), "--store", str(store), "--workers", "2"]) == 0
    rows = RunIndex(store / "index.sqlite").find()
    assert len(rows) == 6 and {r["status"] for r in rows} == {"complete"}
    for row in rows:
        events = [json.loads(x) for x in (store / row["id"] / "events.jsonl").open()]
        assert [e["event"] for e in events].count("end") == 1, row["id"]


@pytest.mark.slow  # starting Ray takes most of a minute on two cores
def test_the_same_sweep_on_ray_gives_the_same_results_as_locally(tmp_path):
    pytest.importorskip("ray")
    spec = {
        "seeds": [0, 1],
        "base": {"scenario": "split-digits", "iterations": 10},
        "grid": [{"strategy": "finetune"}, {"strategy": "ewc", "lam": 10.0}],
    }
    local = run_sweep(sweep_from_dict(spec), tmp_path / "local", workers=2)
    on_ray = run_sweep(sweep_from_dict(spec), tmp_path / "ray", workers=2, backend="ray")
    assert len(local.done) == len(on_ray.done) == 4 and not on_ray.failed
    for run_id in local.done:
        a = RunStore(tmp_path / "local").result(run_id)
        b = RunStore(tmp_path / "ray").result(run_id)
        assert a.accuracy_matrix == b.accuracy_matrix


@pytest.mark.slow
def test_warnings_from_sweep_workers_print_like_the_command_line_with_their_run(tmp_path, capfd):
    file = tmp_path / "s.toml"
    file.write_text(  # lr 1e-5: nothing is learnt, so the run warns
        'seeds = [0]\n[base]\nscenario = "split-digits"\niterations = 3\nlr = 1e-5\n'
        '[[grid]]\nstrategy = "finetune"\n'
    )
    assert main(["sweep", str(file), "--store", str(tmp_path / "runs")]) == 0
    err = capfd.readouterr().err
    (line,) = [line for line in err.splitlines() if "barely learned" in line]
    assert line.startswith("forgetless: warning: the model barely learned")
    assert re.search(r"\(split-digits_finetune_s0_[0-9a-f]{16}\)$", line)
    assert "RuntimeWarning" not in err and ".py:" not in err


_SAME_ANY_WAY = r"""
import json, sys
from pathlib import Path
from forgetless import sweeps
from forgetless.runs import RunStore
spec = {"seeds": [0, 1], "base": {"scenario": "split-digits", "iterations": 40},
        "grid": [{"strategy": ["finetune", "ewc", "replay"]}]}
root = Path(sys.argv[1])
chosen = sweeps.start_method()
matrices, methods = {}, []
for method in ("fork", "spawn"):
    sweeps.start_method = lambda method=method: method
    for workers in (1, 2):
        store = root / f"{method}-{workers}"
        report = sweeps.run_sweep(sweeps.sweep_from_dict(spec), store, workers=workers)
        assert len(report.done) == 6 and not report.failed, report.failed
        runs = RunStore(store)
        matrices[f"{method}-{workers}"] = {i: runs.result(i).accuracy_matrix for i in report.done}
print(json.dumps({"chosen": chosen, "matrices": matrices}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked workers: Linux only")
def test_forked_and_spawned_workers_one_or_two_give_the_same_numbers(tmp_path):
    # In a fresh process: one Python thread, so the sweep forks its workers, as the command
    # line's does (a test process may run other threads).
    done = subprocess.run(
        [sys.executable, "-c", _SAME_ANY_WAY, str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["chosen"] == "fork"
    reference = out["matrices"]["spawn-1"]
    assert len(reference) == 6 and all(len(m) == 5 for m in reference.values())
    for name, matrices in out["matrices"].items():
        assert matrices == reference, name


def test_workers_are_spawned_while_another_python_thread_runs():
    import threading

    from forgetless.sweeps import start_method

    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    try:
        assert start_method() == "spawn"  # a lock that thread holds would be copied held
    finally:
        stop.set()
        thread.join()
