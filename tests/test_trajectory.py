"""Weight trajectories: the recorder sees every k-th step through the engine's hooks, PCA of a
path recovers the plane it lies in, and on real training EWC's path ends nearer the task-A
optimum than fine-tuning's."""

import pytest
import torch

from forgetless import ConfigError
from forgetless.analysis.trajectory import pca_plane
from forgetless.engine import FitConfig
from forgetless.experiment import RunConfig, prepare
from forgetless.models import build_model
from forgetless.scenarios import make_stream
from forgetless.strategies import STRATEGIES
from forgetless.strategies.ewc import EWC
from forgetless.studies.trajectory import (
    ParameterRecorder,
    record_trajectory,
    stored_path,
    trajectory_configs,
    trajectory_study,
)

# Task-IL split digits trained hard (Adam, 10 epochs of batch 32), as in test_ewc.py.
FIT = FitConfig(epochs=10, batch_size=32, optimizer="adam", lr=0.003, progress=False)


@pytest.fixture(scope="module")
def stream():
    return make_stream("split-digits", seed=0, protocol="task")[:2]


def _model(stream):
    return build_model("mlp", stream.input_shape, stream.num_outputs, hidden=[32, 32], seed=0)


def test_pca_recovers_the_plane_of_a_path():
    g = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(200, 2, generator=g, dtype=torch.float64))
    origin = torch.randn(200, generator=g, dtype=torch.float64)
    t = torch.linspace(0, 1, 40, dtype=torch.float64)
    coords = torch.stack([3 * t, torch.sin(4 * t)], dim=1)  # a curved path in the plane
    points = origin + coords @ basis.T + 1e-6 * torch.randn(40, 200, generator=g)
    plane = pca_plane([points], origin=points[-1])
    u = plane.directions.double()
    # The two directions are orthonormal and span the constructed plane.
    torch.testing.assert_close(u @ u.T, torch.eye(2, dtype=torch.float64), atol=1e-5, rtol=0)
    projector = basis @ basis.T
    torch.testing.assert_close(u @ projector, u, atol=1e-5, rtol=0)
    assert float(plane.explained.sum()) == pytest.approx(1.0, abs=1e-6)
    assert plane.explained[0] >= plane.explained[1]
    # Projected coordinates keep every distance between points (a rotation of the originals).
    projected = plane.project(points)
    torch.testing.assert_close(
        torch.cdist(projected, projected), torch.cdist(coords, coords), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        projected[-1], torch.zeros(2, dtype=torch.float64), atol=1e-6, rtol=0
    )
    with pytest.raises(ConfigError, match="k must be"):
        pca_plane([points[:2]], k=2)


def test_recorder_keeps_every_kth_step_and_task_ends(stream):
    assert "parameter-recorder" not in STRATEGIES  # an analysis tool, not a method
    fit = FitConfig(epochs=3, batch_size=32, lr=0.1, progress=False)
    model = _model(stream)
    trajectory = record_trajectory(stream, model, "finetune", fit, every=4)
    steps = [3 * -(-len(task.train) // 32) for task in stream.tasks]  # three epochs each
    total = sum(steps)
    expected = sorted({0, *range(4, total + 1, 4), steps[0], total})
    weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert trajectory.steps == expected
    assert trajectory.points.shape == (len(expected), weights.numel())
    assert [trajectory.steps[i] for i in trajectory.task_ends] == [steps[0], total]
    # The last point is the trained model's weights.
    torch.testing.assert_close(trajectory.points[-1], weights)
    with pytest.raises(ConfigError, match="every"):
        ParameterRecorder(0)


BASE = RunConfig(
    scenario="split-digits", protocol="task", hidden=[32, 32], epochs=10, batch_size=32,
    optimizer="adam", lr=0.003, seed=0,
)  # fmt: skip


@pytest.mark.slow
def test_ewc_path_stays_nearer_the_task_a_optimum(tmp_path, sweeps_run):
    reports = sweeps_run
    configs = trajectory_configs(
        BASE, {"finetune": ("finetune", {}), "ewc": ("ewc", {"lam": 1000.0})}, every=5
    )
    study = trajectory_study(configs, tmp_path, workers=2, resolution=7)
    # The paths are in the store: a second call trains nothing and draws the same paths.
    again = trajectory_study(configs, tmp_path, resolution=7)
    assert len(reports[0].done) == 2 and reports[1].done == []
    assert torch.equal(again.coordinates["ewc"], study.coordinates["ewc"])
    # The path recorded in the store is the one recorded in this process.
    stream, model, _ = prepare(configs["ewc"].resolved())
    here = record_trajectory(stream, model, EWC(1000.0), BASE.fit_config(), every=5)
    torch.testing.assert_close(here.points, study.trajectories["ewc"].points, rtol=1e-5, atol=1e-5)
    fine, ewc = study.trajectories["finetune"], study.trajectories["ewc"]
    # Same start, same batches, no penalty during task A: one A optimum for both.
    assert torch.equal(fine.end_of_task(0), ewc.end_of_task(0))
    assert study.plane_distances["ewc"] < 0.75 * study.plane_distances["finetune"]
    assert study.task_a_loss["ewc"] < 0.5 * study.task_a_loss["finetune"]
    assert study.fisher_distances["ewc"] < 0.5 * study.fisher_distances["finetune"]
    assert ewc.result.accuracy_matrix[1][0] > fine.result.accuracy_matrix[1][0]
    # The surfaces cover the paths: task A's loss is lowest near the A optimum (the origin).
    surface = study.surfaces["task A"]
    assert surface.loss.shape == (7, 7)
    assert float(study.plane.explained.sum()) > 0.5
    record = study.to_dict()
    assert len(record["paths"]["ewc"]["coordinates"]) == len(ewc.steps)


@pytest.mark.slow
def test_cli_trajectory_passes_parameters_to_the_strategies_that_take_them(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from forgetless.cli import main

    args = ["trajectory", "--scenario", "split-digits", "--hidden", "16", "--epochs", "2"]
    args += ["--lr", "0.1", "--every", "4", "--resolution", "5", "--examples", "100"]
    args += ["--store", str(tmp_path / "runs")]
    assert main([*args, "--lam", "10", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "finetune" in out and "ewc" in out and "PCA plane holds" in out
    assert (tmp_path / "trajectory.png").stat().st_size > 0
    assert (tmp_path / "trajectory.svg").stat().st_size > 0
    assert main([*args, "--nope", "1", "-o", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.slow
def test_a_path_resumed_after_a_crash_is_the_uninterrupted_one(tmp_path):
    from forgetless.runs import RunStore

    def crash_after_task_a(record):
        if record["event"] == "task" and record["task"] == 1:
            raise KeyboardInterrupt

    config = trajectory_configs(
        RunConfig(scenario="split-digits", hidden=[16], epochs=2, lr=0.1, optimizer="sgd"),
        {"ewc": ("ewc", {"lam": 1.0})},
        every=3,
    )["ewc"]
    whole = RunStore(tmp_path / "whole")
    whole.execute(config)
    store = RunStore(tmp_path / "stopped")
    with pytest.raises(KeyboardInterrupt):  # after task B's evaluation, before its checkpoint
        store.execute(config, on_event=crash_after_task_a)
    store.resume(store.folder(store.run_id(config)))
    points, recorder = stored_path(tmp_path / "stopped", config)
    expected, _ = stored_path(tmp_path / "whole", config)
    assert torch.equal(points, expected)
    assert recorder.task_ends[-1] == len(points) - 1
    assert store.result(store.run_id(config)).strategy == "ewc"  # the observer is not named
