"""Trust: crafted files run nothing, damaged files never become results, nothing escapes the
store, and every bad input is a one-line error (issue 12, each item reproduced here first)."""

from __future__ import annotations

import functools
import gzip
import json
import math
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from forgetless.buffer import MemoryBuffer
from forgetless.cli import main
from forgetless.data.idx import MAX_IDX_BYTES, read_idx
from forgetless.data.user import from_arrays
from forgetless.engine import train
from forgetless.errors import ConfigError, DataError, TrainingError
from forgetless.experiment import RunConfig, run
from forgetless.models import build_model
from forgetless.result import Result
from forgetless.runs import RunBusy, RunIndex, RunLock, RunStore, load_weights, read_config
from forgetless.runs.files import tensor_digest
from forgetless.scenarios import make_stream
from forgetless.state import MAX_DEPTH, flatten, pack, unflatten, unpack
from forgetless.strategies.base import Strategy

GADGET = "forgetless.analysis.landscape:torch._utils_internal.tempfile._TemporaryFileCloser"


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _config(strategy: str = "replay", **params) -> RunConfig:
    return RunConfig(
        scenario="split-digits",
        protocol="class",
        strategy=strategy,
        strategy_params=params or ({"buffer_size": 40} if strategy == "replay" else {}),
        iterations=15,
        optimizer="adam",
        lr=0.01,
        threads=1,
        progress=False,
    )


def _interrupted(root: Path, config: RunConfig, task: int) -> Path:
    """A run stopped (Ctrl-C) right after task ``task`` was evaluated, before its checkpoint:
    ``task`` tasks are safe on disk."""

    def stop(record):
        if record["event"] == "task" and record["task"] == task:
            raise KeyboardInterrupt

    store = RunStore(root)
    with pytest.raises(KeyboardInterrupt):
        store.execute(config, on_event=stop)
    return store.folder(store.run_id(config))


def _rewrite_checkpoint(path: Path, edit) -> None:
    """Change a checkpoint's JSON skeleton with ``edit`` and re-sign it, as an attacker who
    knows the format would: the checksum then matches, and only the allow-list stands."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    metadata = json.loads(raw[8 : 8 + size])["__metadata__"]
    tensors = load_bytes(raw)
    skeleton = edit(json.loads(metadata["forgetless.snapshot"]))
    text = skeleton if isinstance(skeleton, str) else json.dumps(skeleton)
    metadata = {"forgetless.snapshot": text, "forgetless.sha256": tensor_digest(tensors, text)}
    path.write_bytes(save_bytes(tensors, metadata=metadata))


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("forgetless: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --- 1. a crafted checkpoint runs no code ----------------------------------------------------


def _with_gadget(victim: Path):
    def edit(skeleton):
        inner = {"__object__": GADGET, "vars": {"__dict__": []}}
        closer = {
            "__object__": GADGET,
            "vars": {"__dict__": [["file", inner], ["name", str(victim)], ["delete", True]]},
        }
        skeleton["strategies"][0]["__dict__"].append(["gadget", closer])
        return skeleton

    return edit


def test_the_tempfile_gadget_in_a_checkpoint_is_refused_and_deletes_nothing(tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    folder = _interrupted(tmp_path / "store", _config(), task=1)  # one checkpoint: after task 1
    _rewrite_checkpoint(folder / "checkpoints" / "resume.safetensors", _with_gadget(victim))
    assert main(["run", "--resume", str(folder)]) == 2
    line = _error_line(capsys)
    assert "refusing to rebuild" in line and "_TemporaryFileCloser" in line
    assert "resume.safetensors" in line and "--rerun" in line
    assert victim.read_text() == "precious"
    assert not (folder / "result.json").exists()
    assert RunStore(folder.parent).index.get(folder.name)["status"] != "complete"


def test_a_crafted_last_checkpoint_is_set_aside_for_the_intact_one_before(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    config = _config()
    folder = _interrupted(tmp_path / "store", config, task=3)  # checkpoints after 2 and 3
    _rewrite_checkpoint(folder / "checkpoints" / "resume.safetensors", _with_gadget(victim))
    with pytest.warns(RuntimeWarning, match="refusing to rebuild"):
        result = RunStore(folder.parent).resume(folder)
    assert result.accuracy_matrix == _reference_matrix()
    assert victim.read_text() == "precious"
    assert (folder / "checkpoints" / "resume.safetensors.corrupt").exists()


@pytest.mark.parametrize(
    "name",
    [
        GADGET,
        "os:system",
        "forgetless.buffer:MemoryBuffer",  # format 1's module:qualname, no longer a lookup
        "MemoryBuffer.__init__",
        "__builtins__",
        "",
        17,
        None,
    ],
)
def test_unpack_rebuilds_only_classes_on_the_allow_list(name):
    with pytest.raises(ConfigError, match=r"not a restorable forgetless class|must be a string"):
        unpack({"__object__": name, "vars": {"__dict__": []}})


def test_the_allow_list_round_trips_and_refuses_the_rest():
    memory = MemoryBuffer(4, (3,), num_logits=2)
    back = unpack(pack({"m": memory}))
    assert isinstance(back["m"], MemoryBuffer) and torch.equal(back["m"].x, memory.x)
    with pytest.raises(ConfigError, match="not supported"):
        pack(RunLock(Path(".")))  # a forgetless class, but not a restorable one
    with pytest.raises(ConfigError, match="plain names"):
        unpack({"__object__": "MemoryBuffer", "vars": {"__dict__": [["__class__", 1]]}})


def test_nesting_is_bounded_in_pack_unpack_flatten_and_unflatten():
    deep: list = []
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    for step in (pack, unpack, flatten, lambda d: unflatten(d, {})):
        with pytest.raises(ConfigError, match="nested more than"):
            step(deep)
    very_deep: dict = {}
    for _ in range(5000):  # beyond Python's recursion limit: a clear error all the same
        very_deep = {"a": very_deep}
    with pytest.raises(ConfigError, match="nested more than"):
        unpack(very_deep)


# --- 2, 3. nothing is written outside the store, nothing is created by a failing command -----


@pytest.mark.parametrize("scenario", ["../../ESCAPED", "/tmp/forgetless-ESCAPED-abs", "a/../../b"])
def test_a_scenario_string_cannot_write_outside_the_store(tmp_path, monkeypatch, capsys, scenario):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    (work / "c.toml").write_text(f'scenario = "{scenario}"\niterations = 2\n')
    (work / "s.toml").write_text(f'[base]\nscenario = "{scenario}"\niterations = 2\n')
    before = sorted(tmp_path.rglob("*"))
    assert main(["run", "--config", "c.toml", "--store", "store", "--no-progress"]) == 2
    assert "unknown scenario" in _error_line(capsys)
    assert main(["sweep", "s.toml", "--store", "store"]) == 2
    assert "unknown scenario" in _error_line(capsys)
    assert sorted(tmp_path.rglob("*")) == before  # not even the store folder
    assert not Path("/tmp/forgetless-ESCAPED-abs").exists()
    assert "/" not in RunStore("store").run_id(RunConfig(scenario=scenario))


def test_an_index_row_naming_a_folder_outside_the_store_is_never_read(tmp_path, capsys):
    store = RunStore(tmp_path / "store")
    store.execute(_config())
    outside = tmp_path / "outside_run"  # a run folder elsewhere, with a result of its own
    outside.mkdir()
    good = store.folder(store.run_id(_config()))
    for name in ("config.json", "result.json"):
        (outside / name).write_bytes((good / name).read_bytes())
    store.index.upsert("../outside_run", config_hash="x", status="complete")
    os.chdir(tmp_path / "store")  # where "../outside_run" would resolve to it
    try:
        assert main(["runs", "show", "../outside", "--store", "."]) == 2
        assert "not a run id" in _error_line(capsys)
        assert main(["report", ".", "-o", str(tmp_path / "r.html")]) == 2
        assert "not a run id" in _error_line(capsys)
        assert main(["runs", "summary", "--store", "."]) == 2
        assert "not a run id" in _error_line(capsys)
    finally:
        os.chdir(tmp_path)
    with pytest.raises(ConfigError, match="not a run id"):
        store.folder("../outside_run")


@pytest.mark.parametrize("where", ["missing/run", ".", "/"])
def test_resume_of_something_that_is_not_a_run_creates_nothing(
    tmp_path, monkeypatch, capsys, where
):
    monkeypatch.chdir(tmp_path)
    root_index = Path("/index.sqlite").exists()
    assert main(["run", "--resume", where]) == 2
    assert "not a run folder" in _error_line(capsys)
    assert list(tmp_path.iterdir()) == []
    assert Path("/index.sqlite").exists() == root_index


# --- 4. a gzip bomb is not decompressed ------------------------------------------------------


def _gzip_of_zeros(path: Path, header: bytes, zeros: int) -> None:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    chunk = bytes(1 << 22)
    with open(path, "wb") as f:
        f.write(packer.compress(header))
        for _ in range(zeros // len(chunk)):
            f.write(packer.compress(chunk))
        f.write(packer.flush())


def test_a_gzip_bomb_stops_at_the_size_its_header_states(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    header = struct.pack(">BBBBIII", 0, 0, 8, 3, 60000, 28, 28)  # 47 MB of images, then zeros
    _gzip_of_zeros(path, header, 256 * 2**20)  # 256 MB in a 256 KB file
    assert path.stat().st_size < 2**20
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="trailing garbage") as err:
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(path) in str(err.value)
    assert peak < 120 * 2**20  # the 47 MB the header states, not the 256 MB that follow


def test_idx_headers_that_claim_too_much_are_refused_before_reading(tmp_path):
    huge = tmp_path / "huge-idx3-ubyte.gz"
    huge.write_bytes(gzip.compress(struct.pack(">BBBBIII", 0, 0, 8, 3, 2**20, 2**10, 2**10)))
    with pytest.raises(DataError, match=f"more than the {MAX_IDX_BYTES}"):
        read_idx(huge)
    small = tmp_path / "small-idx3-ubyte.gz"  # 100 MB claimed by a file of a few bytes
    small.write_bytes(gzip.compress(struct.pack(">BBBBIII", 0, 0, 8, 3, 100, 1000, 1000)))
    with pytest.raises(DataError, match="can hold only"):
        read_idx(small)
    raw = tmp_path / "raw-idx3-ubyte"
    raw.write_bytes(struct.pack(">BBBBIII", 0, 0, 8, 3, 100, 1000, 1000))
    with pytest.raises(DataError, match="truncated"):
        read_idx(raw)


# --- 5. deep JSON ----------------------------------------------------------------------------


def test_deeply_nested_json_is_a_clear_error_everywhere_it_is_read(tmp_path, capsys):
    deep = "[" * 200_000 + "]" * 200_000
    bad = tmp_path / "result.json"
    bad.write_text(deep)
    with pytest.raises(ConfigError, match="nested too deep") as err:
        Result.load(bad)
    assert str(bad) in str(err.value)
    assert main(["report", str(bad), "-o", str(tmp_path / "r.html")]) == 2
    assert "nested too deep" in _error_line(capsys)
    moderately = "[" * 500 + "]" * 500  # within Python's limit, beyond ours
    bad.write_text(moderately)
    with pytest.raises(ConfigError, match="levels deep"):
        Result.load(bad)
    folder = _interrupted(tmp_path / "store", _config(), task=2)
    (folder / "config.json").write_text(deep)
    assert main(["run", "--resume", str(folder)]) == 2
    assert "config.json" in _error_line(capsys)
    (tmp_path / "deep.toml").write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert main(["run", "--config", str(tmp_path / "deep.toml")]) == 2
    assert "deep.toml" in _error_line(capsys)


def test_deeply_nested_checkpoint_metadata_is_a_clear_error(tmp_path):
    config = _config()
    folder = _interrupted(tmp_path, config, task=1)
    path = folder / "checkpoints" / "resume.safetensors"
    _rewrite_checkpoint(path, lambda s: '{"a": ' * 200_000 + "1" + "}" * 200_000)
    with pytest.raises(DataError, match="nested too deep") as err:
        RunStore(tmp_path).execute(config)
    assert "resume.safetensors" in str(err.value)


# --- 6. a damaged file is never a result -----------------------------------------------------


def _damage(path: Path, where: str) -> None:
    data = bytearray(path.read_bytes())
    at = {"middle": len(data) // 2, "header": 8, "end": len(data) - 64}[where]
    size = min(4096, len(data) - at)
    data[at : at + size] = np.random.default_rng(0).bytes(size)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "where",
    [
        "middle",
        pytest.param("header", marks=pytest.mark.slow),
        pytest.param("end", marks=pytest.mark.slow),
    ],
)
def test_random_bytes_in_the_resume_checkpoint_are_detected(tmp_path, capsys, where):
    config = _config(buffer_size=200)
    reference = run(config)
    folder = _interrupted(tmp_path, config, task=3)
    checkpoints = folder / "checkpoints"
    _damage(checkpoints / "resume.safetensors", where)
    with pytest.warns(RuntimeWarning, match="corrupt") as caught:
        result = RunStore(tmp_path).resume(folder)
    assert "resume.safetensors" in str(caught[0].message)
    assert result.accuracy_matrix == reference.accuracy_matrix  # from the one before
    # Both damaged: no run, an error naming the file and saying what to do.
    folder = _interrupted(tmp_path / "two", config, task=3)
    for name in ("resume.safetensors", "resume-previous.safetensors"):
        _damage(folder / "checkpoints" / name, where)
    assert main(["run", "--resume", str(folder)]) == 2
    line = _error_line(capsys)
    assert "resume.safetensors is corrupt" in line and "--rerun" in line
    assert not (folder / "result.json").exists()
    assert RunIndex(folder.parent / "index.sqlite").get(folder.name)["status"] != "complete"
    assert main(["run", "--resume", str(folder), "--rerun", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy_matrix"] == reference.accuracy_matrix


def _complete(root: Path, config: RunConfig | None = None) -> tuple[RunStore, Path]:
    store = RunStore(root)
    store.execute(config or _config())
    return store, store.folder(store.run_id(config or _config()))


@pytest.fixture(scope="module")
def complete_store(tmp_path_factory) -> Path:
    """A store holding one complete run of ``_config()``: copied, not trained, per test."""
    root = tmp_path_factory.mktemp("complete")
    _complete(root)
    return root


@functools.cache
def _reference_matrix() -> list:
    return run(_config()).accuracy_matrix


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


RESULT_DAMAGE = {
    "random bytes": lambda p: _damage(p, "middle"),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "a changed number": lambda p: _edit_json(
        p, lambda d: d["accuracy_matrix"][0].__setitem__(0, 0.5)
    ),
    "a matrix that is a string": lambda p: _edit_json(
        p, lambda d: (d.__setitem__("accuracy_matrix", "abc"), d.pop("checksum"))
    ),
    "a ragged matrix": lambda p: _edit_json(
        p, lambda d: (d["accuracy_matrix"][1].pop(), d.pop("checksum"))
    ),
    "NaN accuracies": lambda p: _edit_json(
        p, lambda d: (d["accuracy_matrix"][0].__setitem__(0, math.nan), d.pop("checksum"))
    ),
    "empty": lambda p: p.write_bytes(b""),
}


@pytest.mark.parametrize("damage", list(RESULT_DAMAGE))
def test_a_damaged_result_is_an_error_naming_it_never_a_result(
    tmp_path, complete_store, capsys, damage
):
    shutil.copytree(complete_store, tmp_path, dirs_exist_ok=True)
    store = RunStore(tmp_path)
    folder = store.folder(store.run_id(_config()))
    RESULT_DAMAGE[damage](folder / "result.json")
    for argv in (
        ["runs", "show", folder.name, "--store", str(tmp_path)],
        ["report", str(folder), "-o", str(tmp_path / "r.html")],
        ["runs", "summary", "--store", str(tmp_path)],
    ):
        assert main(argv) == 2
        assert "result.json" in _error_line(capsys)
    with pytest.raises((DataError, ConfigError), match=r"result\.json"):
        store.execute(_config())  # the same config: not complete from a damaged file
    if damage == "random bytes":  # what the error says to do
        assert main(["run", "--resume", str(folder), "--rerun"]) == 0
        assert Result.load(folder / "result.json").accuracy_matrix == _reference_matrix()


def test_damaged_config_events_and_weights_are_errors_naming_them(tmp_path, complete_store, capsys):
    config = _config()
    folder = _interrupted(tmp_path, config, task=2)
    text = (folder / "config.json").read_text()
    (folder / "config.json").write_text(text[: len(text) // 2])  # a torn write
    assert main(["run", "--resume", str(folder)]) == 2
    assert "config.json" in _error_line(capsys)
    (folder / "config.json").write_text(text.replace('"seed": 0', '"seed": 1'))
    assert main(["run", "--resume", str(folder)]) == 2
    assert "does not match its checksum" in _error_line(capsys)
    (folder / "config.json").write_text(text)
    events = folder / "events.jsonl"
    events.write_bytes(events.read_bytes().replace(b'"task": 0', b'"task": 9', 1))
    with pytest.raises(DataError, match=r"events\.jsonl is corrupt"):
        RunStore(tmp_path).execute(config)
    done = tmp_path / "done"
    shutil.copytree(complete_store, done)
    done = RunStore(done).folder(RunStore(done).run_id(_config()))
    weights = done / "checkpoints" / "model-task-2.safetensors"
    assert set(load_weights(weights)) == set(build_model("mlp", (64,), 10).state_dict())
    _damage(weights, "end")
    with pytest.raises(DataError, match=r"model-task-2\.safetensors is corrupt"):
        load_weights(weights)


# --- 7. NaN and inf ---------------------------------------------------------------------------


def test_non_finite_inputs_and_empty_sets_are_data_errors_naming_the_array():
    x = np.random.default_rng(0).random((50, 4), dtype=np.float32)
    y = np.arange(50) % 2
    bad = x.copy()
    bad[7, 2] = np.nan
    with pytest.raises(
        DataError, match=r"x_train holds 1 NaN or infinite value\(s\) \(the first in row 7\)"
    ):
        from_arrays(bad, y, x, y)
    bad[7, 2] = np.inf
    with pytest.raises(DataError, match="x_test"):
        from_arrays(x, y, bad, y)
    with pytest.raises(ConfigError, match="the test set is empty"):
        from_arrays(x, y, x[:0], y[:0])
    with pytest.raises(ConfigError, match="the train set is empty"):
        from_arrays(x[:0], y[:0], x, y)
    with pytest.raises(ConfigError, match=r"scale must be in \(0, inf\), got inf"):
        from_arrays(x, y, x, y, scale=math.inf)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--lr", "inf", r"lr must be in \(0, inf\), got inf"),
        ("--lr", "nan", "lr must be in"),
        ("--momentum", "inf", "momentum must be in"),
        ("--lam", "inf", r"lam must be in \[0, inf\), got inf"),
    ],
)
def test_inf_is_refused_where_a_finite_number_is_meant(capsys, flag, value, message):
    argv = ["run", "--strategy", "ewc", "--protocol", "task", flag, value, "--iterations", "2"]
    assert main(argv) == 2
    assert re_search(message, _error_line(capsys))


def re_search(pattern: str, text: str) -> bool:
    import re

    return re.search(pattern, text) is not None


class _NaNAtStep(Strategy):
    """Adds a NaN penalty at its ``at``-th call: a loss that turns non-finite mid-task."""

    name = "nan-at-step"

    def __init__(self, at: int):
        self.at, self.calls = at, 0

    def penalty(self, learner, x, y, t, logits):
        self.calls += 1
        return torch.tensor(math.nan) if self.calls == self.at else None


def test_a_loss_that_becomes_nan_stops_training_naming_task_and_step():
    stream = make_stream("split-digits", seed=0)
    model = build_model("mlp", stream.input_shape, stream.num_outputs, [32])
    # Tasks of about 250 examples: 3 batches of 100 an epoch, 10 steps a task; step 15 is the
    # fifth of task 2, in its second epoch.
    assert [len(t.train) for t in stream.tasks[:2]] == [254, 252]
    with pytest.raises(TrainingError, match=r"became nan at step 15 \(task 2, epoch 2\)"):
        train(stream, model, _NaNAtStep(15), iterations=10, batch_size=100, progress=False)


def test_a_run_that_diverges_is_failed_with_its_last_good_checkpoint_kept(tmp_path, capsys):
    argv = ["run", "--strategy", "ewc", "--protocol", "task", "--lam", "1e6", "--lr", "0.1"]
    argv += ["--iterations", "30", "--batch-size", "128", "--no-progress", "--store", str(tmp_path)]
    assert main(argv) == 2
    assert re_search(r"became nan at step 38 \(task 2, epoch 4\)", _error_line(capsys))
    (row,) = RunIndex(tmp_path / "index.sqlite").find()
    assert (row["status"], row["tasks_done"]) == ("failed", 1)
    folder = tmp_path / row["id"]
    assert not (folder / "result.json").exists()
    assert (folder / "checkpoints" / "resume.safetensors").exists()  # after task 1
    events = [json.loads(line) for line in (folder / "events.jsonl").open()]
    assert events[-1]["event"] == "failed" and "step 38" in events[-1]["error"]
    RunStore(tmp_path).reindex()  # the folder alone says it failed
    assert RunIndex(tmp_path / "index.sqlite").get(folder.name)["status"] == "failed"


# --- 8. one writer per run --------------------------------------------------------------------

_HOLD = """
import sys, time
from pathlib import Path
from forgetless.runs import RunLock
lock = RunLock(Path(sys.argv[1]))
lock.acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_lock_left_by_a_killed_process_is_taken_over_at_once(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path)], stdout=subprocess.PIPE)
    assert holder.stdout.readline() == b"held\n"
    with pytest.raises(RunBusy, match=f"pid {holder.pid} on host"):
        RunLock(tmp_path).acquire(wait=False)
    assert RunLock(tmp_path).held_by_other()["pid"] == holder.pid
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    lock = RunLock(tmp_path)
    lock.acquire(wait=False)  # the kernel released the dead holder's lock
    lock.release()


@pytest.mark.slow
def test_two_processes_running_one_config_train_it_once(tmp_path):
    args = ["run", "--scenario", "split-digits", "--strategy", "replay", "--buffer-size", "40"]
    args += ["--iterations", "300", "--threads", "1", "--no-progress", "--store", str(tmp_path)]
    code = "import sys; from forgetless.cli import main; sys.exit(main(sys.argv[1:]))"
    first = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not any(lock.read_text() for lock in tmp_path.glob("*/lock")):
        assert time.time() < deadline and first.poll() is None
        time.sleep(0.05)
    second = subprocess.run(
        [sys.executable, "-c", code, *args, "--json"], capture_output=True, text=True, timeout=300
    )
    assert first.wait(300) == 0 and second.returncode == 0, second.stderr
    assert f"is being written by pid {first.pid}" in second.stderr  # it said who, then waited
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    events = [json.loads(line)["event"] for line in (folder / "events.jsonl").open()]
    assert events.count("start") == 1 and events.count("task") == 5 and events.count("end") == 1
    stored = Result.load(folder / "result.json")
    assert json.loads(second.stdout)["accuracy_matrix"] == stored.accuracy_matrix


@pytest.mark.slow
def test_two_overlapping_sweeps_run_each_run_once(tmp_path):
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        'seeds = [0, 1]\n[base]\nscenario = "split-digits"\niterations = 100\n'
        '[[grid]]\nstrategy = ["finetune", "replay"]\n'
    )
    code = "import sys; from forgetless.cli import main; sys.exit(main(sys.argv[1:]))"
    argv = [sys.executable, "-c", code, "sweep", str(sweep), "--store", str(tmp_path / "s")]
    a = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    # b starts once a holds its first run: they overlap however fast a's workers start.
    while not any(lock.read_text() for lock in (tmp_path / "s").glob("*/lock")):
        assert time.time() < deadline and a.poll() is None
        time.sleep(0.05)
    b = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert a.wait(600) == 0 and b.wait(600) == 0
    folders = [p for p in (tmp_path / "s").iterdir() if p.is_dir()]
    assert len(folders) == 4
    for folder in folders:
        events = [json.loads(line) for line in (folder / "events.jsonl").open()]
        tasks = [e["task"] for e in events if e["event"] == "task"]
        assert tasks == [0, 1, 2, 3, 4], (folder.name, tasks)
        assert [e["event"] for e in events].count("end") == 1


# --- 9, 11. atomic writes, and the folders are the truth -------------------------------------


def test_a_deleted_index_does_not_make_a_resume_start_from_scratch(tmp_path, capsys):
    config = _config()
    folder = _interrupted(tmp_path, config, task=3)
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    assert main(["run", "--resume", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy_matrix"] == _reference_matrix()
    events = [json.loads(line) for line in (folder / "events.jsonl").open()]
    assert {"event": "resume", "after_task": 2} in events  # continued after task 3
    assert [e["event"] for e in events].count("start") == 1


def test_an_index_deleted_during_a_run_is_rebuilt_and_loses_nothing(tmp_path):
    def delete_index(record):
        if record["event"] == "task" and record["task"] == 2:
            for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
                (tmp_path / name).unlink(missing_ok=True)

    store = RunStore(tmp_path)
    store.execute(_config("finetune"), on_event=delete_index)
    store.execute(_config())
    rows = {r["strategy"]: r for r in RunIndex(tmp_path / "index.sqlite").find()}
    assert {s: r["status"] for s, r in rows.items()} == {
        "finetune": "complete",
        "replay": "complete",
    }
    assert rows["finetune"]["tasks_done"] == 5


def test_reindex_rebuilds_every_status_from_the_folders(tmp_path, complete_store, capsys):
    shutil.copytree(complete_store, tmp_path, dirs_exist_ok=True)
    _interrupted(tmp_path, _config("finetune"), task=2)
    failing = _config("ewc", lam=1e6)
    failing.protocol, failing.optimizer, failing.lr, failing.iterations = "task", "sgd", 0.1, 30
    with pytest.raises(TrainingError):
        RunStore(tmp_path).execute(failing)
    held = RunStore(tmp_path).folder(RunStore(tmp_path).run_id(_config("replay", buffer_size=9)))
    held.mkdir()
    (held / "config.json").write_text(json.dumps(_config("replay", buffer_size=9).to_dict()))
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(held)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"held\n"
        before = {r["id"]: r for r in RunIndex(tmp_path / "index.sqlite").find()}
        (tmp_path / "index.sqlite").write_bytes(b"this is not a database" * 100)
        for extra in ("index.sqlite-wal", "index.sqlite-shm"):
            (tmp_path / extra).unlink(missing_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            assert main(["runs", "ls", "--store", str(tmp_path)]) == 0  # rebuilt by itself
        captured = capsys.readouterr()
        assert "is corrupt" in captured.err and "4 run(s)" in captured.out
        assert main(["runs", "reindex", "--store", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        assert "1 complete, 1 failed, 1 interrupted, 1 running" in out
        after = {r["id"]: r for r in RunIndex(tmp_path / "index.sqlite").find()}
    finally:
        holder.kill()
        holder.wait()
    assert after.keys() == before.keys() | {held.name}
    for run_id, row in before.items():
        for column in ("status", "tasks_done", "acc", "bwt", "config_hash", "seed"):
            assert after[run_id][column] == row[column], (run_id, column)
    assert after[held.name]["status"] == "running" and after[held.name]["pid"] == holder.pid


def test_config_json_holds_a_checksum_and_reads_back(tmp_path):
    folder = _interrupted(tmp_path, _config(), task=1)
    data = json.loads((folder / "config.json").read_text())
    assert data["checksum"].startswith("sha256:")
    assert read_config(folder) == _config().resolved()  # the resolved config, as it ran


# --- the clear-error catalogue: each bad input, one line, exit code 2 ------------------------

BAD_INPUTS = {
    "toml lr = 'fast'": (["run", "--config", "{f}"], 'lr = "fast"\n', "lr must be a number"),
    "toml hidden = 'abc'": (["run", "--config", "{f}"], 'hidden = "abc"\n', "hidden must be"),
    "toml progress = 'yes'": (["run", "--config", "{f}"], 'progress = "yes"\n', "progress must be"),
    "toml threads = 0": (["run", "--config", "{f}"], "threads = 0\n", "threads must be"),
    "toml n_tasks = 0": (["run", "--config", "{f}"], "n_tasks = 0\n", "n_tasks must be"),
    "--device banana": (["run", "--device", "banana"], None, "not a torch device name"),
    "--device cuda:7": (["run", "--device", "cuda:7"], None, "not available"),
    "--device cuda": (["run", "--device", "cuda"], None, "not available"),
    "--buffer-size 1e12": (
        ["run", "--strategy", "replay", "--buffer-size", "1e12"],
        None,
        r"needs [0-9.]+ TB",
    ),
    "--n-tasks 0": (["run", "--scenario", "permuted-digits", "--n-tasks", "0"], None, "n_tasks"),
    "--threads 0": (["run", "--threads", "0"], None, "threads must be a positive integer"),
    "plasticity --threads 0": (["plasticity", "--threads", "0"], None, "--threads must be"),
    "overlap --threads 0": (["overlap", "--threads", "0"], None, "--threads must be"),
    "--lr 1e6": (
        ["run", "--lr", "1e6", "--iterations", "30"],
        None,
        r"became nan at step \d+ \(task 1",
    ),
    "--lr inf": (["run", "--lr", "inf"], None, "lr must be in"),
    "--lam inf": (["run", "--strategy", "ewc", "--lam", "inf"], None, "lam must be in"),
    "grid lam = []": (
        ["sweep", "{f}", "--store", "{d}/s"],
        '[[grid]]\nstrategy = "ewc"\nlam = []\n',
        r"lam = \[\] gives no values",
    ),
    "random choice = []": (
        ["sweep", "{f}", "--store", "{d}/s"],
        '[[random]]\nn = 2\nstrategy = "ewc"\nlam = {choice = []}\n',
        "choice needs a non-empty list",
    ),
    "scenario ../../ESCAPED": (
        ["run", "--config", "{f}", "--store", "{d}/s"],
        'scenario = "../../ESCAPED"\n',
        "unknown scenario",
    ),
    "--resume /nonexistent": (["run", "--resume", "{d}/nonexistent"], None, "not a run folder"),
    "runs ls of no store": (["runs", "ls", "--store", "{d}/none"], None, "no run store"),
    "unreadable TOML": (["run", "--config", "{f}"], "lr = [1,\n", "is not valid TOML"),
    "a folder as TOML": (["run", "--config", "{d}"], None, "is a folder"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_every_bad_input_is_a_one_line_error(tmp_path, capsys, case):
    argv, content, message = BAD_INPUTS[case]
    if case.startswith("--device cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    file = tmp_path / "input.toml"
    if content is not None:
        file.write_text(content)
    argv = [a.format(f=file, d=tmp_path) for a in argv]
    if argv[0] == "run" and "--resume" not in argv:
        argv += ["--no-progress"] + ([] if "--iterations" in argv else ["--iterations", "3"])
    assert main(argv) == 2
    assert re_search(message, _error_line(capsys)), case


def test_json_output_is_json_alone_when_the_run_is_already_complete(tmp_path, capsys):
    argv = ["run", "--iterations", "3", "--no-progress", "--store", str(tmp_path), "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(argv) == 0
    out = capsys.readouterr()
    assert json.loads(out.out) == first  # nothing but the JSON on stdout
    assert "already complete" in out.err
