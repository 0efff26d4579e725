"""benchmarks/grid.py: the benchmarks' runs go through the one sweep runner into a run store."""

from __future__ import annotations

from pathlib import Path

import pytest

from forgetless.experiment import RunConfig, run
from forgetless.runs import RunStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_benchmark_runs_go_through_the_sweep_runner_into_the_store(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    grid = pytest.importorskip("grid")
    configs = [
        RunConfig(hidden=[16], iterations=60, seed=3, protocol="task"),
        RunConfig(hidden=[16], iterations=60, seed=5, strategy="ewc", protocol="task"),
    ]
    store = tmp_path / "runs"
    records = grid.run_all(configs, store, workers=2)
    assert set(records) == {grid.config_key(c) for c in configs}
    runs = RunStore(store)
    for config in configs:  # each config once, with its own seed, read back from the store
        record = grid.record_of(records, config)
        assert (record["seed"], record["strategy"]) == (config.seed, config.strategy)
        assert record["accuracy_matrix"] == runs.result(runs.run_id(config)).accuracy_matrix
        assert record["cpu_seconds"] == record["timings"]["cpu"] > 0
    # a worker's numbers are this process's
    assert grid.record_of(records, configs[0])["accuracy_matrix"] == run(configs[0]).accuracy_matrix
    err = capsys.readouterr().err
    assert "0 runs on record, 2 to run on 2 workers" in err
    assert "[2/2] " in err and " min left)" in err
    assert grid.run_all(configs, store) == records  # nothing left to train
    assert "2 runs on record, 0 to run" in capsys.readouterr().err
