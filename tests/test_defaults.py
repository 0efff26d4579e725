"""Defaults that learn: scenario presets carry loop settings, configs resolve to them, and the
ids of runs stored before keep their value."""

import json
import warnings

import pytest

from forgetless.cli import main
from forgetless.experiment import RunConfig, config_hash
from forgetless.runs import RunStore
from forgetless.scenarios import PRESETS

#: config.json files as the run store wrote them before presets carried loop settings, and the
#: ids they were stored under then (computed by that version of forgetless): every loop
#: setting was written out, so each resolves to itself and keeps its id.
STORED_BEFORE = [
    (
        {"scenario": "split-digits", "protocol": "task", "n_tasks": None, "class_order": None,
         "data_dir": None, "sequence_length": None, "tokenizer": None, "model": "mlp",
         "hidden": None, "strategy": "ewc", "strategy_params": {}, "seed": 0, "epochs": 1,
         "iterations": None, "batch_size": 128, "optimizer": "sgd", "lr": 0.01, "momentum": 0.0,
         "reset_optimizer": True, "eval_every": None, "log_every": 50, "eval_batch_size": 1024,
         "device": "cpu", "threads": None, "progress": True, "retain_raw_data": True,
         "weights": None, "trained_tasks": 0},
        "split-digits_ewc_s0_408732296c07cf5d",
    ),
    (
        {"scenario": "split-digits", "protocol": None, "n_tasks": None, "class_order": None,
         "data_dir": None, "sequence_length": None, "tokenizer": None, "model": "mlp",
         "hidden": [32], "strategy": "replay", "strategy_params": {"buffer_size": 50},
         "seed": 0, "epochs": 1, "iterations": 30, "batch_size": 128, "optimizer": "sgd",
         "lr": 0.05, "momentum": 0.0, "reset_optimizer": True, "eval_every": None,
         "log_every": 50, "eval_batch_size": 1024, "device": "cpu", "threads": None,
         "progress": True, "retain_raw_data": True, "weights": None, "trained_tasks": 0},
        "split-digits_replay_s0_8af37a5257ae6b73",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("stored", "run_id"), STORED_BEFORE)
def test_runs_stored_before_keep_their_ids(tmp_path, stored, run_id):
    config = RunConfig.from_dict(stored)
    resolved = config.resolved().to_dict()
    assert {k: resolved[k] for k in stored} == stored  # nothing left for the preset to fill in
    assert all(resolved[k] is None for k in resolved.keys() - stored.keys())  # fields added since
    assert RunStore(tmp_path).run_id(config) == run_id
    # and a store of them is indexed under those ids, not left out as renamed
    folder = tmp_path / run_id
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(stored))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "left out of the index" would be a warning
        assert RunStore(tmp_path).reindex() == {"interrupted": 1}


def test_the_preset_fills_only_what_is_not_given():
    loop = PRESETS["split-digits"].loop
    resolved = RunConfig(scenario="split-digits").resolved()
    assert (resolved.epochs, resolved.batch_size, resolved.optimizer, resolved.lr) == (
        loop.epochs, loop.batch_size, loop.optimizer, loop.lr,
    )  # fmt: skip
    assert loop.epochs * 287 // loop.batch_size >= 100  # enough steps a task to learn it
    given = RunConfig(scenario="split-digits", lr=0.05, optimizer="sgd").resolved()
    assert (given.lr, given.optimizer, given.epochs) == (0.05, "sgd", loop.epochs)
    # the optimiser's settings go together: a rate alone is SGD's, an optimiser alone its
    # usual rate (never Adam at an SGD rate)
    assert loop.optimizer == "adam"
    alone = RunConfig(scenario="split-digits", lr=0.1).resolved()
    assert (alone.optimizer, alone.lr, alone.momentum) == ("sgd", 0.1, 0.0)
    named = RunConfig(scenario="split-digits", optimizer="sgd").resolved()
    assert (named.optimizer, named.lr) == ("sgd", 0.01)
    # a budget given replaces the preset's as a whole: epochs on a preset counting steps
    text = PRESETS["text"].loop
    assert text.iterations is not None
    by_epochs = RunConfig(scenario="text", epochs=3).resolved()
    assert (by_epochs.epochs, by_epochs.iterations) == (3, None)
    by_steps = RunConfig(scenario="split-digits", iterations=7).resolved()
    assert by_steps.iterations == 7
    # a config and its resolved form are one run
    assert config_hash(RunConfig(scenario="split-digits")) == config_hash(resolved)
    assert resolved.resolved() is resolved
    # another preset, other settings
    mnist_fashion = RunConfig(scenario="mnist-fashion").resolved()
    assert (mnist_fashion.epochs, mnist_fashion.batch_size) == (2, 32)


def test_the_store_records_the_resolved_config(tmp_path):
    config = RunConfig(scenario="split-digits", iterations=3, n_tasks=2, progress=False)
    store = RunStore(tmp_path)
    result = store.execute(config)
    folder = tmp_path / store.run_id(config)
    written = json.loads((folder / "config.json").read_text())
    loop = PRESETS["split-digits"].loop
    assert (written["batch_size"], written["optimizer"], written["lr"]) == (
        loop.batch_size, loop.optimizer, loop.lr,
    )  # fmt: skip
    assert result.config["lr"] == loop.lr and result.config["iterations"] == 3
    # the folder's config names the folder: reindexing finds the run complete
    assert store.reindex() == {"complete": 1}


@pytest.mark.slow
def test_the_readme_command_learns(tmp_path, capsys):
    """The README's first stored run, as written: EWC on split-digits with the task given."""
    store = tmp_path / "runs"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no divergence, no "barely learned"
        code = main(
            ["run", "--scenario", "split-digits", "--strategy", "ewc", "--protocol", "task",
             "--store", str(store), "--no-progress", "--threads", "1", "--json"]
        )  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    m = result["metrics"]
    assert m["learning_accuracy"] > 0.95  # each task learnt (chance is 50%)
    assert m["acc"] > 0.9 and m["bwt"] > -0.1
