"""Task inference on the digits: routers let methods that need the task id run under class-IL,
with the routing accuracy reported beside the accuracy matrix; the Ledoit-Wolf covariance
against a hand computation and scikit-learn; the router's state saved and restored."""

from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from forgetless import ConfigError, train
from forgetless.cli import main
from forgetless.experiment import RunConfig, run
from forgetless.models import SpecialistNet, build_model
from forgetless.result import Result
from forgetless.routing import Router, ledoit_wolf
from forgetless.runs import RunStore
from forgetless.scenarios import make_stream
from forgetless.state import flatten, unflatten

# Class-IL split digits: wide enough and slow enough that fine-tuning learns each new task (a
# 32-unit MLP at lr 0.005 fails to learn the later ones, whatever the strategy).
CLASS = dict(
    scenario="split-digits",
    protocol="class",
    hidden=[64, 64],
    iterations=100,
    optimizer="adam",
    lr=0.002,
    threads=1,
    progress=False,
)


@pytest.fixture(scope="module")
def finetune():
    return run(strategy="finetune", **CLASS)


def _hand_ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit and Wolf 2004, Sec. 3, written out with the n outer products."""
    n, p = x.shape
    s = x.T @ x / n
    mu = np.trace(s) / p
    d2 = np.sum((s - mu * np.eye(p)) ** 2) / p
    b2 = sum(np.sum((np.outer(r, r) - s) ** 2) for r in x) / n**2 / p
    shrinkage = min(b2, d2) / d2
    return (1 - shrinkage) * s + shrinkage * mu * np.eye(p), shrinkage


@pytest.mark.parametrize(("n", "p"), [(200, 8), (30, 50), (64, 64)])
def test_ledoit_wolf_matches_a_hand_computation_and_scikit_learn(n, p):
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(n + p)
    x = rng.normal(size=(n, p)) @ rng.normal(size=(p, p)) * 0.3 + 0.1 * rng.normal(size=(n, p))
    covariance, shrinkage = ledoit_wolf(torch.tensor(x))
    hand, hand_shrinkage = _hand_ledoit_wolf(x)
    assert shrinkage == pytest.approx(hand_shrinkage, rel=1e-9)
    np.testing.assert_allclose(covariance.numpy(), hand, rtol=1e-9, atol=1e-12)
    fitted = LedoitWolf(assume_centered=True).fit(x)
    assert shrinkage == pytest.approx(fitted.shrinkage_, rel=1e-9)
    np.testing.assert_allclose(covariance.numpy(), fitted.covariance_, rtol=1e-9, atol=1e-12)
    assert 0 < shrinkage < 1


def test_ledoit_wolf_of_no_rows_is_a_clear_error():
    with pytest.raises(ConfigError, match="ledoit_wolf needs a"):
        ledoit_wolf(torch.zeros(0, 3))


def _check_routing(result: Result) -> None:
    Q = result.routing_accuracy
    T = result.num_tasks
    assert Q is not None and len(Q) == T and all(len(row) == T for row in Q)
    assert Q[0][0] == 1.0  # one task learnt: every input goes to it
    assert all(Q[i][j] == 0.0 for i in range(T) for j in range(i + 1, T))  # not learnt yet
    assert result.metrics["routing_acc"] == pytest.approx(sum(Q[-1]) / T)
    text = str(result)
    assert "routed (%)" in text and "task inferred: ACC" in text and "task given: ACC" in text


@pytest.mark.slow
@pytest.mark.parametrize(
    ("router", "start", "routed"), [("entropy", "initial", 0.4), ("mahalanobis", "last", 0.7)]
)
def test_specialists_under_class_il_with_a_router(finetune, router, start, routed):
    result = run(strategy="specialists", strategy_params={"start": start}, router=router, **CLASS)
    m = result.metrics
    _check_routing(result)
    assert m["routing_acc"] > routed  # chance is 1/5
    assert m["acc"] > finetune.metrics["acc"] + 0.15
    assert m["task_aware_acc"] > 0.95  # with the task given, every specialist knows its task
    assert finetune.routing_accuracy is None and "routing_acc" not in finetune.metrics
    # Given the task, no specialist forgets; inferred, a task loses what is routed elsewhere.
    G = result.task_aware_matrix
    assert all(G[i][j] == G[j][j] for i in range(5) for j in range(i))


def test_packnet_under_class_il_with_the_mahalanobis_router(finetune):
    result = run(strategy="packnet", router="mahalanobis", **CLASS)
    _check_routing(result)
    m = result.metrics
    assert m["routing_acc"] > 0.6
    assert m["acc"] > finetune.metrics["acc"] + 0.3
    assert m["task_aware_acc"] > m["acc"]  # the task given is worth more than inferred
    shrinkage = result.strategy_reports["router"]["shrinkage"]
    assert len(shrinkage) == 5 and all(0 <= s <= 1 for s in shrinkage)


def test_wrong_router_pairings_are_clear_errors(capsys):
    stream = make_stream("split-digits", seed=0, protocol="class")
    model = build_model("mlp", stream.input_shape, stream.num_outputs, [16], seed=0)
    with pytest.raises(ConfigError, match="finetune answers every task with the same model"):
        train(stream, model, "finetune", router="entropy", iterations=2, progress=False)
    # A model that takes the task id is something to route, whatever the method.
    warnings.simplefilter("ignore", RuntimeWarning)
    own = train(stream[:2], SpecialistNet(model), "finetune", router="entropy", iterations=2,
                progress=False)  # fmt: skip
    assert own.routing_accuracy is not None and own.config["router"] == "entropy"
    with pytest.raises(ConfigError, match="router must be one of entropy, mahalanobis, ncm"):
        train(stream, model, "specialists", router="oracle", iterations=2, progress=False)
    with pytest.raises(ConfigError, match="router must be one of"):
        RunConfig(strategy="specialists", router="oracle")
    task_il = make_stream("split-digits", seed=0, protocol="task")
    with pytest.raises(ConfigError, match="under the task-incremental protocol it is given"):
        train(task_il, model, "specialists", router="entropy", iterations=2, progress=False)
    with pytest.raises(ConfigError, match="specialists needs the task id at test time"):
        train(stream, model, "specialists", iterations=2, progress=False)
    args = ["run", "--protocol", "task", "--strategy", "pnn", "--router", "ncm"]
    assert main([*args, "--iterations", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "task-incremental protocol it is given" in err and "Traceback" not in err


def test_the_router_state_is_plain_tensors_and_survives_save_and_load():
    stream = make_stream("split-digits", seed=0, protocol="class")[:3]
    model = build_model("mlp", stream.input_shape, stream.num_outputs, [16], seed=0)
    router = Router("mahalanobis")
    warnings.simplefilter("ignore", RuntimeWarning)
    train(stream, model, "specialists", router=router, iterations=20, progress=False)
    assert len(router.means) == len(router.precisions) == 3
    assert [tuple(m.shape) for m in router.means] == [(2, 16)] * 3
    skeleton, tensors = flatten(router.state_dict())
    assert "__object__" not in json.dumps(skeleton)  # nothing but tensors and scalars
    restored = Router()
    holder = SimpleNamespace(model=torch.nn.Linear(1, 1), device=torch.device("cpu"))
    restored.load_state_dict(unflatten(json.loads(json.dumps(skeleton)), tensors), holder)
    assert restored.kind == "mahalanobis" and restored.shrinkage == router.shrinkage
    for a, b in zip(
        restored.means + restored.precisions, router.means + router.precisions, strict=True
    ):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_a_routed_run_resumed_after_a_crash_ends_as_if_never_stopped(tmp_path):
    config = RunConfig(**{**CLASS, "iterations": 30}, strategy="specialists", router="mahalanobis")
    uninterrupted = run(config)
    store = RunStore(tmp_path)

    def crash(record):
        if record["event"] == "task" and record["task"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.execute(config, on_event=crash)
    (row,) = store.index.find()
    resumed = store.resume(store.folder(row["id"]))
    assert resumed.accuracy_matrix == uninterrupted.accuracy_matrix
    assert resumed.routing_accuracy == uninterrupted.routing_accuracy
    assert resumed.task_aware_matrix == uninterrupted.task_aware_matrix
    assert resumed.strategy_reports == uninterrupted.strategy_reports


def test_the_cli_prints_routing_and_the_result_checks_it(tmp_path, capsys):
    args = [
        "run", "--protocol", "class", "--strategy", "specialists", "--router", "ncm",
        "--hidden", "16", "--iterations", "10", "--no-progress", "--store", str(tmp_path),
    ]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "router ncm" in out and "routed (%)" in out and "task given: ACC" in out
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert main(["runs", "show", folder.name, "--store", str(tmp_path)]) == 0
    assert "routed (%)" in capsys.readouterr().out
    data = json.loads((folder / "result.json").read_text())
    data.pop("checksum")
    assert main(["report", str(folder), "--out", str(tmp_path / "report.html")]) == 0
    assert "routing acc" in (tmp_path / "report.html").read_text()
    assert Result.from_dict(data).routing_accuracy == data["routing_accuracy"]
    for bad in ([[1.5] * 5] * 5, [[0.5] * 4] * 5, "all"):
        with pytest.raises(ConfigError, match="routing_accuracy must be"):
            Result.from_dict({**data, "routing_accuracy": bad})


@pytest.mark.slow
def test_under_domain_il_the_mahalanobis_router_tells_permutations_apart():
    domain = {**CLASS, "scenario": "permuted-digits", "protocol": "domain", "n_tasks": 3}
    finetune = run(strategy="finetune", **domain)
    for strategy in ("specialists", "hat"):
        result = run(strategy=strategy, router="mahalanobis", **domain)
        _check_routing(result)
        m = result.metrics
        assert m["routing_acc"] > 0.95  # a permutation's features are far from the others'
        assert m["acc"] == pytest.approx(m["task_aware_acc"], abs=0.02)  # as if it were given
        assert m["acc"] > finetune.metrics["acc"] + 0.1
