"""Studies run through the run store: a second call trains nothing, a study stopped part-way
continues with the runs it lacks, and the layers stay apart (report/ reads Results only,
analysis/ measures without training)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from forgetless.errors import ConfigError
from forgetless.experiment import RunConfig
from forgetless.studies.common import execute, stored_models

SRC = Path(__file__).resolve().parents[1] / "src" / "forgetless"
DRIVERS = ("forgetless.studies", "forgetless.sweeps", "forgetless.experiment", "forgetless.runs")


def _imports(folder: Path) -> dict[str, set[str]]:
    """Every module each file of ``folder`` imports, at any depth (imports inside functions
    too), as absolute names."""
    found = {}
    for path in folder.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        found[path.name] = names
    return found


def _within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_report_imports_no_driver_and_analysis_trains_nothing():
    for file, names in _imports(SRC / "report").items():
        assert not [n for n in names if _within(n, DRIVERS)], file
    trainers = (*DRIVERS, "forgetless.engine")
    for file, names in _imports(SRC / "analysis").items():
        assert not [n for n in names if _within(n, trainers)], file
    # Transitively too: importing them loads none of what trains or stores.
    code = (
        "import sys, forgetless.analysis, forgetless.report, forgetless.report.analysis_figures,"
        " forgetless.report.production, forgetless.summaries;"
        "print(' '.join(m for m in sys.modules if m.startswith('forgetless.')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert not [m for m in loaded if _within(m, trainers)], loaded


def test_old_import_paths_of_the_summaries_still_work():
    from forgetless import summaries
    from forgetless.analysis import frontier
    from forgetless.sweeps import format_summary, mean_and_spread, summarise

    assert summarise is summaries.summarise and format_summary is summaries.format_summary
    assert mean_and_spread is summaries.mean_and_spread
    assert frontier.build_frontier is summaries.build_frontier
    assert frontier.frontiers_in is summaries.frontiers_in


def _tiny(**changes) -> RunConfig:
    settings = dict(
        scenario="split-digits", protocol="task", hidden=[16], epochs=2, batch_size=32,
        optimizer="sgd", lr=0.1, first_tasks=2,
    )  # fmt: skip
    return RunConfig(**{**settings, **changes})


@pytest.mark.slow
def test_landscape_study_is_cached_in_the_store(tmp_path, sweeps_run):
    from forgetless.studies.landscape import landscape_run

    options = dict(directions=2, resolution=5, plane=False, hessian=False)
    study, solved = landscape_run(_tiny(), tmp_path, examples=100, **options)
    assert len(sweeps_run[0].done) == 1
    assert len(solved.models) == 2 and len(solved.result.accuracy_matrix) == 2
    again, _ = landscape_run(_tiny(), tmp_path, examples=100, **options)
    assert sweeps_run[1].done == [] and len(sweeps_run[1].skipped) == 1
    assert torch.equal(study.lines.loss, again.lines.loss)
    # The models read back are the run's: their accuracy on task A is the matrix's R[0, 0].
    model, task = solved.models[0], solved.stream.tasks[0]
    with torch.no_grad():
        logits = model(task.test.inputs())[:, list(task.units)]
    predicted = torch.tensor(task.units)[logits.argmax(1)]
    accuracy = (predicted == task.test.y).float().mean().item()
    assert accuracy == pytest.approx(solved.result.accuracy_matrix[0][0], abs=1e-6)


@pytest.mark.slow
def test_a_frontier_stopped_part_way_runs_only_what_it_lacks(tmp_path, sweeps_run):
    from forgetless.studies.frontier import frontier_configs, run_frontiers

    base = _tiny(first_tasks=None, n_tasks=None)
    # One of the two settings ran before (a study stopped after its first run).
    (first,) = frontier_configs(base, "ewc", "lam", [0.0], [0])
    execute([first], None, tmp_path, keep_weights=False)
    (frontier,) = run_frontiers(base, [("ewc", "lam", [0.0, 30.0])], [0], tmp_path)
    assert len(sweeps_run[-1].done) == 1 and len(sweeps_run[-1].skipped) == 1
    assert [p.value for p in frontier.points] == [0.0, 30.0]
    run_frontiers(base, [("ewc", "lam", [0.0, 30.0])], [0], tmp_path)
    assert sweeps_run[-1].done == [] and len(sweeps_run[-1].skipped) == 2


@pytest.mark.slow
def test_stored_models_need_the_runs_weights(tmp_path):
    config = _tiny(epochs=1)
    execute([config], None, tmp_path, keep_weights=False)
    with pytest.raises(ConfigError, match="kept no weights"):
        stored_models(tmp_path, config)


def test_study_settings_are_checked_before_anything_runs(tmp_path):
    from forgetless.studies.overlap import OverlapSettings
    from forgetless.studies.plasticity import PlasticitySettings

    with pytest.raises(ConfigError, match="draws from one of"):
        PlasticitySettings(data="cifar")
    with pytest.raises(ConfigError, match="rotates one of"):
        OverlapSettings(data="fashion-mnist")
    with pytest.raises(ConfigError, match="angles"):
        OverlapSettings(angles=())
    with pytest.raises(ConfigError, match="first_tasks"):
        RunConfig(first_tasks=0)
    with pytest.raises(ConfigError, match="angles"):
        RunConfig(scenario="rotated-digits", angles=["x"])
    assert not any(tmp_path.iterdir())


def test_new_stream_fields_build_the_streams_they_name():
    from forgetless.experiment import config_hash, prepare

    stream, _, _ = prepare(
        RunConfig(scenario="rotated-digits", angles=[0, 90], train_size=300, test_size=100)
    )
    a, b = stream.tasks
    assert len(stream) == 2 and len(a.train) == 300 and len(b.test) == 100
    # The same drawn images in both tasks, B's rotated by a quarter turn.
    from forgetless.scenarios.builders import _rotate

    assert torch.equal(_rotate(a.test, 90.0).x, b.test.x) and torch.equal(a.test.y, b.test.y)
    stream, _, _ = prepare(
        RunConfig(scenario="permuted-digits-long", n_tasks=3, train_size=50, test_size=20)
    )
    assert [len(t.train) for t in stream] == [50, 50, 50]
    assert not torch.equal(stream.tasks[0].train.y, stream.tasks[1].train.y)  # its own draws
    stream, _, _ = prepare(RunConfig(first_tasks=2))
    assert len(stream) == 2 and stream.num_outputs == 10
    # Unset, the new fields leave every old run's id alone.
    assert config_hash(RunConfig(angles=None, first_tasks=None)) == config_hash(RunConfig())
    with pytest.raises(ConfigError, match="takes no angles"):
        prepare(RunConfig(scenario="split-digits", angles=[0.0, 1.0]))
