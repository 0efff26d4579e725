"""The run store: folders, the SQLite index, checkpoints, and resuming after a crash."""

from __future__ import annotations

import json
import multiprocessing
import warnings

import pytest
import torch
from torch import nn

from forgetless import ConfigError
from forgetless.buffer import MemoryBuffer
from forgetless.cli import main
from forgetless.experiment import RunConfig, run
from forgetless.runs import RunIndex, RunStore, load_snapshot
from forgetless.state import flatten, pack, unflatten, unpack


def _config(strategy: str = "finetune", protocol: str = "class", **params) -> RunConfig:
    return RunConfig(
        scenario="split-digits",
        protocol=protocol,
        strategy=strategy,
        strategy_params=params,
        iterations=15,
        optimizer="adam",
        lr=0.01,
        threads=1,
        progress=False,
    )


def _crash_after(task: int):
    def on_event(record):
        if record["event"] == "task" and record["task"] == task:
            raise KeyboardInterrupt

    return on_event


@pytest.mark.parametrize(
    ("strategy", "protocol", "params"),
    [
        ("ewc", "task", {"lam": 100.0}),
        ("si", "task", {}),
        ("lwf", "task", {}),
        ("replay", "class", {"buffer_size": 40}),
        (
            "replay",
            "class",
            {"buffer_size": 40, "buffer_policy": "task-balanced", "buffer_update": "task"},
        ),
        ("replay", "class", {"buffer_size": 40, "buffer_policy": "class-balanced"}),
        ("replay", "class", {"buffer_size": 40, "replay_draw": "passes", "replay_batch_size": 16}),
        ("der", "class", {"buffer_size": 40}),
        ("icarl", "class", {"buffer_size": 40}),
        ("replay+online-ewc", "class", {"buffer_size": 40, "lam": 10.0}),
    ],
)
@pytest.mark.slow
def test_a_run_resumed_after_a_crash_ends_as_if_never_stopped(tmp_path, strategy, protocol, params):
    warnings.simplefilter("ignore", RuntimeWarning)
    uninterrupted = run(_config(strategy, protocol, **params))
    store = RunStore(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        store.execute(_config(strategy, protocol, **params), on_event=_crash_after(2))
    (row,) = store.index.find()
    # The crash came after task 3 was evaluated but before its checkpoint: 2 tasks are safe.
    assert (row["status"], row["tasks_done"]) == ("interrupted", 2)
    resumed = store.resume(store.folder(row["id"]))
    assert resumed.accuracy_matrix == uninterrupted.accuracy_matrix
    assert resumed.task_aware_matrix == uninterrupted.task_aware_matrix
    assert resumed.losses == uninterrupted.losses
    assert resumed.baseline == uninterrupted.baseline
    assert store.index.get(row["id"])["status"] == "complete"
    events = [json.loads(line) for line in (store.folder(row["id"]) / "events.jsonl").open()]
    assert {"event": "resume", "after_task": 1} in events
    assert events[-1]["event"] == "end"


@pytest.mark.slow
def test_a_complete_config_is_not_trained_again(tmp_path):
    store = RunStore(tmp_path)
    first = store.execute(_config())
    folder = store.folder(store.run_id(_config()))
    events = (folder / "events.jsonl").read_text()
    again = store.execute(_config())
    assert again.accuracy_matrix == first.accuracy_matrix
    assert (folder / "events.jsonl").read_text() == events  # nothing ran
    assert len(store.index.find()) == 1
    row = store.index.get(folder.name)
    assert row["status"] == "complete" and row["acc"] == pytest.approx(first.metrics["acc"])
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == [
        *(f"model-task-{i}.safetensors" for i in range(1, 6)),
        "resume.safetensors",
    ]
    # A different seed is a different run.
    other = _config()
    other.seed = 1
    store.execute(other)
    assert len(store.index.find(status="complete")) == 2


@pytest.mark.slow
def test_a_store_without_weights_resumes_and_keeps_no_checkpoint_once_complete(tmp_path):
    config = _config("replay", "class", buffer_size=40)
    uninterrupted = run(config)
    store = RunStore(tmp_path, keep_weights=False)
    with pytest.raises(KeyboardInterrupt):
        store.execute(config, on_event=_crash_after(2))
    checkpoints = store.folder(store.run_id(config)) / "checkpoints"
    # Mid-run only the resume files exist (the last and the one before): no per-task weights.
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "resume-previous.safetensors",
        "resume.safetensors",
    ]
    resumed = store.resume(store.folder(store.run_id(config)))
    assert resumed.accuracy_matrix == uninterrupted.accuracy_matrix
    assert list(checkpoints.iterdir()) == []  # complete: nothing left to resume
    assert store.index.get(store.run_id(config))["status"] == "complete"
    assert store.execute(config).accuracy_matrix == uninterrupted.accuracy_matrix  # from disk


def test_per_task_weights_are_plain_safetensors_of_the_model(tmp_path):
    from safetensors.torch import load_file

    store = RunStore(tmp_path)
    store.execute(_config())
    folder = store.folder(store.run_id(_config()))
    weights = load_file(folder / "checkpoints" / "model-task-5.safetensors")
    snapshot = load_snapshot(folder / "checkpoints" / "resume.safetensors")
    assert snapshot.task == 4
    assert weights.keys() == snapshot.model.keys()
    for name, tensor in weights.items():
        torch.testing.assert_close(tensor, snapshot.model[name], rtol=0, atol=0)


def _write_rows(path: str, prefix: str, n: int) -> None:
    index = RunIndex(path)
    for i in range(n):
        index.upsert(f"{prefix}{i}", config_hash=f"{prefix}{i}", status="running")
        index.update(f"{prefix}{i}", status="complete", acc=i / n)


@pytest.mark.slow
def test_two_processes_writing_the_index_at_once_lose_nothing(tmp_path):
    path = str(tmp_path / "index.sqlite")
    RunIndex(path)
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write_rows, args=(path, p, 150)) for p in "ab"]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
        assert w.exitcode == 0
    rows = RunIndex(path).find()
    assert len(rows) == 300
    assert {r["status"] for r in rows} == {"complete"}


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_from_the_command_line(tmp_path, traced, killed_command):
    config = RunConfig(
        scenario="split-digits",
        strategy="replay",
        strategy_params={"buffer_size": 40},
        iterations=60,
        seed=3,
        threads=1,
        progress=False,
    )
    expected, points = traced(lambda: RunStore(tmp_path / "reference").execute(config))
    # A new interpreter, killed once its third task is trained, before any of it is on disk.
    third = [i for i, name in enumerate(points, 1) if name == "event task: half written"][2]
    store = tmp_path / "store"
    args = [
        "run", "--scenario", "split-digits", "--strategy", "replay", "--buffer-size", "40",
        "--iterations", "60", "--threads", "1", "--no-progress", "--seed", "3",
        "--store", str(store),
    ]  # fmt: skip
    pid = killed_command(args, third, fork=False)
    (row,) = RunIndex(store / "index.sqlite").find()
    # kill -9 leaves the process no chance to say so; the index sees that it is gone.
    assert row["status"] == "interrupted" and row["pid"] == pid
    assert row["tasks_done"] == 2
    folder = store / row["id"]
    assert main(["run", "--resume", str(folder), "--json"]) == 0
    resumed = json.loads((folder / "result.json").read_text())
    assert resumed["accuracy_matrix"] == expected.accuracy_matrix


def test_runs_ls_show_and_compare(tmp_path, capsys):
    store = RunStore(tmp_path)
    store.execute(_config())
    store.execute(_config("ewc", "task", lam=100.0))
    assert main(["runs", "ls", "--store", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "split-digits_finetune_s0_" in out and "split-digits_ewc_s0_" in out
    assert "2 run(s)" in out
    assert main(["runs", "ls", "--store", str(tmp_path), "--strategy", "ewc"]) == 0
    assert "1 run(s)" in capsys.readouterr().out
    assert main(["runs", "show", "split-digits_ewc", "--store", str(tmp_path)]) == 0
    assert "accuracy (%)" in capsys.readouterr().out
    ids = [r["id"] for r in store.index.find()]
    assert main(["runs", "compare", *ids, "--store", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "finetune s0" in out and "ewc s0" in out
    assert main(["runs", "show", "split-digits", "--store", str(tmp_path)]) == 2
    assert "matches 2 runs" in capsys.readouterr().err
    assert main(["runs", "ls", "--store", str(tmp_path / "nowhere")]) == 2
    assert "no run store at" in capsys.readouterr().err


@pytest.mark.slow
def test_runs_that_differ_in_one_setting_are_told_apart_everywhere(tmp_path, capsys):
    store = RunStore(tmp_path)
    for lam, lr in ((10.0, 0.01), (1000.0, 0.01), (10.0, 0.003)):
        config = _config("ewc", "task", lam=lam)
        store.execute(RunConfig.from_dict({**config.to_dict(), "lr": lr}))
    with pytest.raises(KeyboardInterrupt):  # a fourth run, stopped after two tasks
        store.execute(_config("ewc", "task", lam=100.0), on_event=_crash_after(2))
    rows = store.index.find()
    assert main(["runs", "compare", *[r["id"] for r in rows[:3]], "--store", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ewc lam=10 lr=0.01 s0" in out and "ewc lam=1000 lr=0.01 s0" in out
    assert "ewc lam=10 lr=0.003 s0" in out
    assert main(["runs", "ls", "--store", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    stopped = next(line for line in lines if line.startswith(rows[3]["id"]))
    # The interrupted run: its progress out of the tasks it plans, and its settings.
    assert "interrupted" in stopped and " 2/5 " in stopped and "ewc lam=100 lr=0.01 s0" in stopped
    assert "?" not in "".join(lines)
    store.reindex()  # the folders alone give the planned number of tasks too
    assert store.index.get(rows[3]["id"])["n_tasks"] == 5
    assert main(["runs", "show", rows[3]["id"], "--store", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "status: interrupted, tasks done 2/5" in out
    assert "  lam = 100  (strategy parameter)" in out and "  optimizer = adam" in out
    assert "  lr = 0.01" in out and "  iterations = 15" in out


def test_resume_of_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path, capsys):
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "is not a run folder" in capsys.readouterr().err


# --- state without pickles -------------------------------------------------------------------


def test_pack_and_flatten_round_trip_the_kinds_of_state_strategies_hold():
    model = nn.Linear(3, 2)
    model.requires_grad_(False)
    model.eval()
    memory = MemoryBuffer(4, (3,), num_logits=2)
    memory.reservoir_add(
        torch.ones(2, 3), torch.tensor([0, 1]), torch.tensor([0, 0]), logits=torch.ones(2, 2)
    )
    state = {
        "numbers": [1, 2.5, None, True, "text"],
        "pair": (torch.arange(3), 7),
        "by_class": {0: torch.zeros(2), 5: torch.ones(2)},
        "old_model": model,
        "memory": memory,
    }
    skeleton, tensors = flatten(pack(state))
    json.dumps(skeleton)  # the skeleton is plain JSON
    back = unpack(unflatten(json.loads(json.dumps(skeleton)), tensors), template=nn.Linear(3, 2))
    assert back["numbers"] == state["numbers"]
    assert isinstance(back["pair"], tuple) and torch.equal(back["pair"][0], torch.arange(3))
    assert set(back["by_class"]) == {0, 5}
    assert torch.equal(back["old_model"].weight, model.weight)
    assert not back["old_model"].training and not back["old_model"].weight.requires_grad
    assert isinstance(back["memory"], MemoryBuffer) and len(back["memory"]) == 2
    assert torch.equal(back["memory"].x, memory.x) and back["memory"].seen == memory.seen


def test_a_checkpoint_cannot_name_a_class_outside_forgetless():
    with pytest.raises(ConfigError, match="not a restorable forgetless class"):
        unpack({"__object__": "os:system", "vars": {"__dict__": []}})
    with pytest.raises(ConfigError, match="not supported"):
        pack(object())


def test_a_run_found_complete_under_its_lock_is_tidied_by_the_holder(tmp_path):
    """A process that waited for a run's lock and then finds the run complete (its writer died
    between the result and removing the checkpoints) removes the leftovers itself: asking for
    the lock a second time would refuse it, since flock counts each open of the file."""
    from forgetless.runs.lock import RunLock
    from forgetless.runs.store import PREVIOUS

    store = RunStore(tmp_path / "store", keep_weights=False)
    config = _config()
    store.execute(config)
    run_id = store.run_id(config.resolved())
    folder = store.folder(run_id)
    leftover = folder / "checkpoints" / PREVIOUS
    leftover.write_bytes(b"left by a writer that died after its result")
    lock = RunLock(folder)
    lock.acquire(wait=False)
    try:
        store._complete(config.resolved(), run_id, locked=True)
    finally:
        lock.release()
    assert not leftover.exists()
