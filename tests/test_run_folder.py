"""One way to save a run: ``--out DIR`` writes the run store's layout as it goes, and
``--resume DIR`` continues it."""

import json

import pytest

from forgetless.cli import main
from forgetless.experiment import RunConfig, run
from forgetless.runs import RunStore, read_config
from forgetless.runs.checkpoint import checkpoint_task

ARGS = ["--scenario", "split-digits", "--strategy", "ewc", "--protocol", "task",
        "--iterations", "30", "--threads", "1", "--no-progress", "--seed", "2"]  # fmt: skip
CONFIG = RunConfig(
    scenario="split-digits", strategy="ewc", protocol="task", iterations=30, threads=1,
    progress=False, seed=2,
)  # fmt: skip


@pytest.mark.slow
def test_out_writes_the_store_layout_as_it_goes_and_resume_continues(tmp_path, capsys):
    out = tmp_path / "x"
    seen = {}

    def crash_after_task_3(record):
        if record["event"] == "task":
            # as it goes: the config first, the events so far, a checkpoint per task done
            seen.setdefault("config", (out / "config.json").is_file())
            if record["task"] == 2:
                seen["events"] = (out / "events.jsonl").read_text().count('"event": "task"')
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        RunStore.run_folder(out).execute(CONFIG, on_event=crash_after_task_3)
    assert seen == {"config": True, "events": 3}
    assert not (out / "result.json").exists()
    assert checkpoint_task(out / "checkpoints" / "resume.safetensors") == 1  # 2 tasks safe
    assert read_config(out).lr == CONFIG.resolved().lr  # the resolved config
    assert main(["run", "--resume", str(out), "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    uninterrupted = run(CONFIG)
    assert resumed["accuracy_matrix"] == uninterrupted.accuracy_matrix
    assert resumed["losses"] == uninterrupted.losses
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        *(f"model-task-{i}.safetensors" for i in range(1, 6)),
        "resume.safetensors",
    ]
    events = [json.loads(line) for line in (out / "events.jsonl").open()]
    assert [e["task"] for e in events if e["event"] == "task"] == [0, 1, 2, 3, 4]  # once each
    # the same command again is complete; another config in the folder is refused
    assert main(["run", *ARGS, "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy_matrix"] == resumed["accuracy_matrix"]
    assert main(["run", *ARGS, "--lr", "0.3", "--out", str(out)]) == 2
    assert "holds another run" in capsys.readouterr().err
    assert main(["run", *ARGS, "--out", str(out), "--store", str(tmp_path / "s")]) == 2


@pytest.mark.slow
def test_a_run_killed_with_minus_9_in_its_out_folder_resumes(tmp_path, traced, killed_command):
    out = tmp_path / "x"
    expected, points = traced(lambda: RunStore.run_folder(tmp_path / "reference").execute(CONFIG))
    # Killed once its second task is trained: the first task's resume checkpoint is on disk.
    second = [i for i, name in enumerate(points, 1) if name == "event task: half written"][1]
    killed_command(["run", *ARGS, "--out", str(out)], second)
    assert checkpoint_task(out / "checkpoints" / "resume.safetensors") is not None
    assert not (out / "result.json").exists()
    assert main(["run", "--resume", str(out), "--json"]) == 0
    resumed = json.loads((out / "result.json").read_text())
    assert resumed["accuracy_matrix"] == expected.accuracy_matrix
