"""The stability-plasticity frontier: its measures by hand, Pareto fronts and hypervolumes on
hand-made points, ranges, and a real sweep of EWC's strength on the digits."""

import json

import pytest

from forgetless import ConfigError
from forgetless.cli import main
from forgetless.result import Result
from forgetless.studies.frontier import parse_range
from forgetless.summaries import build_frontier, hypervolume, pareto_front, stability_plasticity


def test_stability_and_plasticity_by_hand():
    R = [
        [0.9, 0.1, 0.0],
        [0.6, 0.8, 0.2],
        [0.5, 0.4, 0.7],
    ]
    stability, plasticity = stability_plasticity(R)
    assert stability == pytest.approx((0.5 + 0.4) / 2)
    assert plasticity == pytest.approx((0.8 + 0.7) / 2)  # the first task is left out
    assert stability_plasticity([[1.0, 0.0], [0.3, 0.9]]) == (0.3, 0.9)
    with pytest.raises(ConfigError, match="at least 2 tasks"):
        stability_plasticity([[1.0]])


def test_pareto_front_on_hand_made_points():
    points = [
        (0.9, 0.2),  # 0: front (most stable)
        (0.7, 0.6),  # 1: front
        (0.6, 0.5),  # 2: dominated by 1
        (0.5, 0.9),  # 3: front (most plastic)
        (0.5, 0.8),  # 4: dominated by 3 (equal x, lower y)
        (0.7, 0.6),  # 5: equal to 1: kept with it
        (0.1, 0.1),  # 6: dominated by all
    ]
    assert sorted(pareto_front(points)) == [0, 1, 3, 5]
    assert pareto_front([]) == []
    assert pareto_front([(0.3, 0.3)]) == [0]


def test_hypervolume_is_the_dominated_area():
    # Staircase of (0.9, 0.2), (0.7, 0.6), (0.5, 0.9) over (0, 0):
    # 0.9 * 0.2 + 0.7 * (0.6 - 0.2) + 0.5 * (0.9 - 0.6) = 0.18 + 0.28 + 0.15
    front = [(0.9, 0.2), (0.7, 0.6), (0.5, 0.9)]
    assert hypervolume(front) == pytest.approx(0.61)
    # Dominated points add nothing; a point at (1, 1) dominates everything.
    assert hypervolume([*front, (0.6, 0.5), (0.1, 0.1)]) == pytest.approx(0.61)
    assert hypervolume([*front, (1.0, 1.0)]) == pytest.approx(1.0)
    assert hypervolume(front, reference=(0.5, 0.2)) == pytest.approx(0.4 * 0.0 + 0.2 * 0.4)
    assert hypervolume([]) == 0.0


@pytest.mark.parametrize(
    ("text", "name", "values"),
    [
        ("lambda=1e0:1e6", "lam", [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6]),
        ("buffer=50:5000", "buffer_size", [50.0, 108.0, 232.0, 500.0, 1077.0, 2321.0, 5000.0]),
        ("c=1,0.1,10", "c", [0.1, 1.0, 10.0]),
    ],
)
def test_ranges(text, name, values):
    assert parse_range(text, points=7) == (name, values)


@pytest.mark.parametrize(
    ("text", "message"),
    [("lambda", "NAME=LOW:HIGH"), ("lam=5:1", "0 < LOW < HIGH"), ("lam=a,b", "numbers")],
)
def test_bad_ranges_are_clear_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_range(text)


def _result(strategy, lam, seed, matrix):
    return Result(
        accuracy_matrix=matrix,
        baseline=[0.5, 0.5],
        task_names=["A", "B"],
        scenario="s",
        protocol="domain",
        strategy=strategy,
        seed=seed,
        config={"strategy_params": {"lam": lam}},
    )


def test_frontier_averages_seeds_per_setting():
    results = [
        _result("ewc", 1.0, 0, [[0.9, 0.5], [0.2, 0.9]]),
        _result("ewc", 1.0, 1, [[0.9, 0.5], [0.4, 0.7]]),
        _result("ewc", 100.0, 0, [[0.9, 0.5], [0.8, 0.6]]),
        _result("ewc", 10.0, 0, [[0.9, 0.5], [0.2, 0.5]]),  # dominated by lam=1
        _result("si", 10.0, 0, [[0.9, 0.5], [0.9, 0.9]]),  # another strategy: ignored
    ]
    frontier = build_frontier(results, "ewc", "lam")
    assert [q.value for q in frontier.points] == [1.0, 10.0, 100.0]
    first = frontier.points[0]
    assert (first.stability, first.plasticity) == pytest.approx((0.3, 0.8))
    assert first.stability_std == pytest.approx(0.1414213, rel=1e-5)
    assert first.seeds == [0, 1]
    assert frontier.front == [0, 2]  # ordered by (stability, plasticity)
    assert frontier.hypervolume == pytest.approx(0.8 * 0.6 + 0.3 * (0.8 - 0.6))
    with pytest.raises(ConfigError, match="no runs of 'lwf'"):
        build_frontier(results, "lwf", "lam")


@pytest.mark.slow
def test_frontier_command_sweeps_ewc_on_the_digits(tmp_path, capsys):
    # Task-IL split digits: fine-tuning forgets some, a strong EWC keeps more of the old tasks.
    argv = [
        "frontier", "--scenario", "split-digits", "--protocol", "task", "--hidden", "32,32",
        "--epochs", "5", "--batch-size", "32", "--lr", "0.1", "--strategy", "ewc",
        "--range", "lambda=0,30", "--seeds", "2", "--store", str(tmp_path / "runs"),
        "-o", str(tmp_path / "out"),
    ]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "hypervolume of ewc" in printed
    data = json.loads((tmp_path / "out" / "frontier.json").read_text())
    (frontier,) = data["frontiers"]
    weak, strong = frontier["points"]
    assert (weak["value"], strong["value"]) == (0.0, 30.0)
    assert weak["seeds"] == strong["seeds"] == [0, 1]
    assert strong["stability"] > weak["stability"] + 0.02
    assert (tmp_path / "out" / "frontier.png").stat().st_size > 0
    assert "<svg" in (tmp_path / "out" / "frontier.svg").read_text()
    # Everything is in the store now: a second call trains nothing and gives the same table.
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[:4] == printed.splitlines()[:4]


def test_frontier_command_needs_one_range_per_strategy(tmp_path, capsys):
    argv = ["frontier", "--strategy", "ewc", "--strategy", "si", "--range", "lam=1:10"]
    assert main([*argv, "--store", str(tmp_path)]) == 2
    assert "one --range per --strategy" in capsys.readouterr().err


def test_range_values_are_typed_as_the_strategy_parameters():
    from forgetless.experiment import RunConfig, config_hash
    from forgetless.studies.frontier import frontier_configs

    base = RunConfig(scenario="split-digits")
    (from_range,) = frontier_configs(base, "replay", "buffer_size", [50.0], [0])
    assert from_range.strategy_params["buffer_size"] == 50
    assert isinstance(from_range.strategy_params["buffer_size"], int)
    by_hand = RunConfig(
        scenario="split-digits", strategy="replay", strategy_params={"buffer_size": 50}
    )
    assert config_hash(from_range) == config_hash(by_hand)
    (lam,) = frontier_configs(base, "ewc", "lam", [10], [0])
    assert isinstance(lam.strategy_params["lam"], float)


@pytest.mark.slow
def test_isolation_methods_join_the_frontier_under_task_il(tmp_path, capsys):
    # pnn has no strength: range "none" places it once; packnet sweeps its pruned fraction.
    assert parse_range("none") == ("", [])
    store, out = tmp_path / "runs", tmp_path / "out"
    argv = [
        "frontier", "--scenario", "split-digits", "--protocol", "task", "--hidden", "32,32",
        "--epochs", "3", "--batch-size", "32", "--lr", "0.1", "--strategy", "pnn", "--range",
        "none", "--strategy", "packnet", "--range", "prune=0.25,0.75", "--seeds", "1",
        "--store", str(store), "-o", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    assert "as given" in capsys.readouterr().out
    pnn, packnet = json.loads((out / "frontier.json").read_text())["frontiers"]
    (point,) = pnn["points"]
    assert (point["parameter"], point["value"], point["seeds"]) == ("", None, [0])
    # BWT 0: what pnn keeps of the old tasks is exactly what it reached on each when learnt.
    from forgetless.runs import RunStore

    (run,) = [r for r in RunStore(store).complete_results() if r.strategy == "pnn"]
    R = run.accuracy_matrix
    assert run.metrics["bwt"] == 0.0
    assert point["stability"] == pytest.approx(sum(R[j][j] for j in range(4)) / 4)
    assert point["plasticity"] == pytest.approx(sum(R[i][i] for i in range(1, 5)) / 4)
    assert point["stability"] > 0.7 and point["plasticity"] > 0.7
    assert pnn["front"] == [0]
    assert pnn["hypervolume"] == pytest.approx(point["stability"] * point["plasticity"])
    assert [q["value"] for q in packnet["points"]] == [0.25, 0.75]
    # Under the scenario's class-IL protocol they are refused before any run.
    argv = ["frontier", "--scenario", "split-digits", "--strategy", "ewc", "--range", "lam=1,10"]
    argv += ["--strategy", "hat", "--range", "reg=0.1,1", "--store", str(tmp_path / "other")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "hat needs the task id" in err and "--protocol task" in err
    assert not (tmp_path / "other").exists() or not any((tmp_path / "other").iterdir())
