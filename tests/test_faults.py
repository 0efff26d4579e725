"""Crash tests of the run store, in the spirit of SQLite's: a kill at every write point.

The store names each place it changes the disk (:mod:`forgetless.runs.faults`). The first test
lists them for a whole run and checks the list against the protocol written out below, so a
new write point cannot go untested. Then, for every point, a forked child runs the config and
is killed there with SIGKILL (no cleanup, as ``kill -9``), or Ctrl-C is raised there; the run
is resumed; and it must end with exactly the uninterrupted run's matrices and losses, each
event exactly once in ``events.jsonl``, and no complete run ever read from a damaged file.
The same holds for a sweep killed (its main process, with SIGKILL) at every kind of point.

Points marked slow are the long parametrisations; a representative subset runs in the quick
set (``-m "not slow"``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections import Counter
from pathlib import Path

import pytest

from forgetless.experiment import RunConfig, run
from forgetless.runs import RunStore, faults
from forgetless.sweeps import Sweep, run_sweep

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")

N_TASKS = 5


def _config(strategy: str = "replay+online-ewc", seed: int = 0) -> RunConfig:
    # Replay and online EWC: the two restorable classes (a memory buffer, a merged quadratic)
    # both go through every checkpoint.
    return RunConfig(
        scenario="split-digits",
        protocol="class",
        strategy=strategy,
        strategy_params={"buffer_size": 40, "lam": 10.0} if strategy != "finetune" else {},
        seed=seed,
        iterations=15,
        optimizer="adam",
        lr=0.01,
        log_every=5,
        threads=1,
        progress=False,
    )


def expected_points(n_tasks: int, keep_weights: bool) -> list[str]:
    """The write protocol of one run, from an empty store to complete."""

    def atomic(label: str, previous: bool = False) -> list[str]:
        kept = [f"{label}: previous kept, new not renamed"] if previous else []
        return [
            f"{label}: half written",
            f"{label}: written, not renamed",
            *kept,
            f"{label}: renamed",
        ]

    points = ["lock taken", *atomic("config")]
    points += ["index: before the running row", "index: after the running row", "events: emptied"]
    for task in range(n_tasks):
        points += ["event task: half written", "event task: written"]
        points += atomic("task weights") if keep_weights else []
        points += ["events: synced", *atomic("resume checkpoint", previous=task > 0)]
        points += ["index: before tasks done", "index: after tasks done"]
    points += ["event end: half written", "event end: written", *atomic("result")]
    for _ in range(1 if keep_weights else 2):  # the previous checkpoint; the last one too
        points += [
            "resume checkpoint (complete): before delete",
            "resume checkpoint (complete): deleted",
        ]
    points += ["index: before complete", "index: after complete"]
    return points


POINTS = expected_points(N_TASKS, keep_weights=True)
# One of each kind of point, at different stages of the run: the quick set.
QUICK = {
    POINTS.index("config: written, not renamed") + 1,
    POINTS.index("events: emptied") + 1,
    POINTS.index("event task: half written") + 1,
    POINTS.index("resume checkpoint: previous kept, new not renamed") + 1,
    [i for i, name in enumerate(POINTS) if name == "index: before tasks done"][1] + 1,
    POINTS.index("event end: written") + 1,
    POINTS.index("result: written, not renamed") + 1,
    POINTS.index("index: before complete") + 1,
}


def _marked(numbers, quick):
    return [n if n in quick else pytest.param(n, marks=pytest.mark.slow) for n in numbers]


@pytest.fixture(scope="module")
def reference():
    """The uninterrupted run: what every crashed and resumed run must end with."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return run(_config())


def _crash_in_child(root: Path, target: int, keep_weights: bool = True) -> None:
    """Run the config into ``root`` in a forked child that SIGKILLs itself at write point
    ``target``; fail if it ended any other way (the point was not reached)."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 3
        try:
            warnings.simplefilter("ignore")
            faults.arm(target, "kill")
            RunStore(root, keep_weights).execute(_config())
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
        f"the child was not killed at point {target} (status {status})"
    )


def _events(folder: Path) -> list[dict]:
    lines = (folder / "events.jsonl").read_bytes().splitlines()
    return [json.loads(line) for line in lines]  # every line whole: no torn record


def _check_complete(store: RunStore, config: RunConfig, result, reference) -> None:
    """The resumed run against the uninterrupted one, and its folder's files (the checkpoints
    of a complete run: its weights and last checkpoint, or nothing with --no-weights)."""
    assert result.accuracy_matrix == reference.accuracy_matrix
    assert result.task_aware_matrix == reference.task_aware_matrix
    assert result.losses == reference.losses
    assert result.baseline == reference.baseline
    folder = store.folder(store.run_id(config))
    events = _events(folder)
    counts = Counter(e["event"] for e in events)
    assert counts["start"] == 1 and counts["end"] == 1, counts
    assert Counter(e["task"] for e in events if e["event"] == "task") == dict.fromkeys(
        range(N_TASKS), 1
    )
    losses = [(e["task"], e["step"]) for e in events if e["event"] == "loss"]
    assert len(losses) == len(set(losses)) == N_TASKS * 15 // 5  # each loss record once
    assert events[-1]["event"] == "end"
    assert not list(folder.rglob(".*.part")), "a temporary file was left behind"
    kept = sorted(p.name for p in (folder / "checkpoints").iterdir())
    weights = [f"model-task-{i}.safetensors" for i in range(1, N_TASKS + 1)]
    assert kept in ([], [*weights, "resume.safetensors"]), kept
    row = store.index.get(folder.name)
    assert row["status"] == "complete" and row["tasks_done"] == N_TASKS


def _never_complete_from_damage(store: RunStore, config: RunConfig, reference) -> None:
    """After a crash, whatever says "complete" must be the right, intact result."""
    folder = store.folder(store.run_id(config))
    row = store.index.get(folder.name)
    if row is not None and row["status"] == "complete":
        assert store.result(folder.name).accuracy_matrix == reference.accuracy_matrix
    if (folder / "result.json").exists():
        assert store.result(folder.name).accuracy_matrix == reference.accuracy_matrix


def test_the_write_points_of_a_run_are_the_protocol(tmp_path):
    log = tmp_path / "points.txt"
    for keep_weights in (True, False):
        log.unlink(missing_ok=True)
        faults.arm(None, log=str(log))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                RunStore(tmp_path / f"store-{keep_weights}", keep_weights).execute(_config())
        finally:
            faults.arm(None)
        assert log.read_text().splitlines() == expected_points(N_TASKS, keep_weights)
    assert len(POINTS) == 75


@pytest.mark.parametrize("target", _marked(range(1, len(POINTS) + 1), QUICK))
def test_kill_9_at_every_write_point_then_resume(tmp_path, reference, target):
    _crash_in_child(tmp_path, target)
    store = RunStore(tmp_path)
    config = _config()
    _never_complete_from_damage(store, config, reference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = store.execute(config)
    _check_complete(store, config, result, reference)


@pytest.mark.parametrize("target", _marked(range(1, len(POINTS) + 1), {9, 30, 66}))
def test_ctrl_c_at_every_write_point_then_resume(tmp_path, reference, target):
    store = RunStore(tmp_path)
    config = _config()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        faults.arm(target, "interrupt")
        try:
            with pytest.raises(KeyboardInterrupt):
                store.execute(config)
        finally:
            faults.arm(None)
        _never_complete_from_damage(store, config, reference)
        row = store.index.get(store.run_id(config))
        assert row is None or row["status"] in ("interrupted", "complete")
        result = store.execute(config)
    _check_complete(store, config, result, reference)


@pytest.mark.parametrize(
    ("first", "second"),
    [(30, 5), (47, 20), pytest.param(14, 60, marks=pytest.mark.slow)],
)
def test_a_resumed_run_killed_again_still_ends_the_same(tmp_path, reference, first, second):
    """A crash during the resumed run (the second count starts at the resume)."""
    _crash_in_child(tmp_path, first)
    _crash_in_child(tmp_path, second)
    store = RunStore(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = store.execute(_config())
    _check_complete(store, _config(), result, reference)


# --- sweeps ----------------------------------------------------------------------------------

SWEEP_CONFIGS = [_config("finetune"), _config("replay+online-ewc")]
# Every kind of point a sweep worker reaches (with --no-weights), at its first occurrence.
SWEEP_POINTS = expected_points(N_TASKS, keep_weights=False)
SWEEP_KINDS = sorted({SWEEP_POINTS.index(name) + 1 for name in SWEEP_POINTS})


def _tagged_processes(tag: str) -> list[int]:
    """Pids of live processes whose environment holds ``tag`` (Linux)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if tag.encode() in (entry / "environ").read_bytes():
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _sweep_file(tmp_path: Path) -> Path:
    grid = "\n".join(
        f'[[grid]]\nstrategy = "{c.strategy}"\n'
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in c.strategy_params.items())
        for c in SWEEP_CONFIGS
    )
    base = {
        k: v
        for k, v in _config().to_dict().items()
        if k in ("scenario", "protocol", "iterations", "optimizer", "lr", "log_every")
    }
    text = "seeds = [0]\n[base]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in base.items())
    path = tmp_path / "sweep.toml"
    path.write_text(text + grid)
    return path


def _start_sweep(tmp_path: Path, store: Path, env: dict) -> subprocess.Popen:
    code = "import sys; from forgetless.cli import main; sys.exit(main(sys.argv[1:]))"
    args = ["sweep", str(_sweep_file(tmp_path)), "--store", str(store), "--workers", "2"]
    return subprocess.Popen(
        [sys.executable, "-c", code, *args, "--no-weights"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_gone(tag: str, seconds: float = 15.0) -> list[int]:
    deadline = time.time() + seconds
    while (alive := _tagged_processes(tag)) and time.time() < deadline:
        time.sleep(0.1)
    return alive


@pytest.fixture(scope="module")
def sweep_references():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {c.strategy: run(c) for c in SWEEP_CONFIGS}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("target", _marked(SWEEP_KINDS, {SWEEP_POINTS.index("events: synced") + 1}))
def test_a_sweep_killed_at_every_kind_of_write_point_then_run_again(
    tmp_path, sweep_references, target
):
    store = tmp_path / "store"
    tag = uuid.uuid4().hex
    pid = os.fork()
    if pid == 0:  # the sweep's main process; its workers (spawned) read the fault plan
        code = 3
        try:
            warnings.simplefilter("ignore")
            os.environ.update({faults.ENV: f"{target}:parent", "FORGETLESS_TEST_TAG": tag})
            run_sweep(Sweep(SWEEP_CONFIGS, [0]), store, workers=2, keep_weights=False)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    # Its workers die with it (the parent-death signal): no orphan goes on writing a run.
    assert _wait_gone(tag) == []
    # Run again: what the restarted sweep does for each run (tests/test_sweeps.py runs a
    # restarted sweep whole), here in this process, without starting workers again.
    runs = RunStore(store, keep_weights=False)
    for config in SWEEP_CONFIGS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = runs.execute(config)
        _check_complete(runs, config, result, sweep_references[config.strategy])
        assert list((runs.folder(runs.run_id(config)) / "checkpoints").iterdir()) == []


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc (Linux)")
def test_kill_9_of_a_sweep_while_its_workers_start_leaves_no_orphan(tmp_path):
    tag_name, tag = "FORGETLESS_TEST_TAG", uuid.uuid4().hex
    sweep = _start_sweep(tmp_path, tmp_path / "store", {tag_name: tag})
    deadline = time.time() + 60
    while time.time() < deadline:  # until a worker exists: it is importing torch now
        workers = [p for p in _tagged_processes(tag) if p != sweep.pid]
        if workers:
            break
        time.sleep(0.01)
    assert workers, "no worker started"
    os.kill(sweep.pid, signal.SIGKILL)
    sweep.wait()
    assert _wait_gone(tag) == []
