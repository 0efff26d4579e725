"""Continual backprop, shrink and perturb, the plasticity and overlap analyses, their CLI."""

import copy
import json
import math

import pytest
import torch

from forgetless import data
from forgetless.analysis.overlap_study import OverlapRecord, overlap_claim
from forgetless.analysis.plasticity import PlasticityRun, permuted_subsets
from forgetless.cli import main
from forgetless.engine import FitConfig, train
from forgetless.errors import ConfigError
from forgetless.learner import Learner
from forgetless.models import CNN, MLP
from forgetless.scenarios import make_stream
from forgetless.strategies import ContinualBackprop, ShrinkPerturb, make_strategies
from forgetless.studies.overlap import OverlapSettings, overlap_study
from forgetless.studies.plasticity import PlasticitySettings, plasticity_study


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def _learner(stream, model):
    fit = FitConfig()
    return Learner(model, stream, fit.make_optimizer, torch.device("cpu"), torch.Generator())


@pytest.mark.slow
def test_continual_backprop_keeps_fewer_dormant_units_than_backprop(tmp_path, sweeps_run):
    # A high step size kills ReLU units task after task (Dohare et al. 2024); continual backprop
    # replaces dead units (their utility is 0) with fresh ones, so fewer stay dormant.
    settings = PlasticitySettings(
        data="digits", tasks=16, train_per_task=800, test_per_task=200, hidden=(32, 32),
        lr=0.5, batch_size=16, probe=200,
    )  # fmt: skip
    specs = [("finetune", {}), ("continual-backprop", {"rho": 0.01, "maturity": 20})]
    found = plasticity_study(settings, specs, [0], tmp_path / "runs", workers=2)
    runs = dict(zip(["finetune", "continual-backprop"], found, strict=True))
    assert len(sweeps_run[0].done) == 2
    # The runs are in the store: a second call trains nothing and measures the same.
    again = plasticity_study(settings, specs, [0], tmp_path / "runs")
    assert sweeps_run[1].done == [] and len(sweeps_run[1].skipped) == 2
    assert [r.records for r in again] == [r.records for r in found]
    late = {k: sum(run.series("dormant")[8:]) / 8 for k, run in runs.items()}
    assert late["finetune"] > 0.4, late  # backprop really loses units here
    assert late["continual-backprop"] < late["finetune"] - 0.2, late
    assert runs["continual-backprop"].params == {"rho": 0.01, "maturity": 20, "eta": 0.99}
    # The record serialises to JSON and back.
    again = PlasticityRun.from_dict(json.loads(json.dumps(runs["finetune"].to_dict())))
    assert again.series("effective_rank") == runs["finetune"].series("effective_rank")
    assert len(again.records) == 16 and len(again.records[0].effective_rank) == 2


def test_continual_backprop_with_rho_zero_is_backprop():
    stream = make_stream("permuted-digits", n_tasks=2)
    fit = FitConfig(lr=0.1, batch_size=32, progress=False)
    results, weights = [], []
    for strategy in ("finetune", ContinualBackprop(rho=0.0)):
        torch.manual_seed(0)
        model = MLP((1, 8, 8), 10, hidden=(16, 16))
        results.append(train(stream, model, strategy, fit=fit, seed=0).accuracy_matrix)
        weights.append([p.detach().clone() for p in model.parameters()])
    assert results[0] == results[1]
    for a, b in zip(*weights, strict=True):
        assert torch.equal(a, b)


def test_continual_backprop_reinitialises_the_least_useful_mature_unit():
    stream = make_stream("permuted-digits", n_tasks=1)
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10, hidden=(6,))
    learner = _learner(stream, model)
    cbp = ContinualBackprop(rho=0.5, maturity=2, eta=0.5)
    cbp.before_task(learner, stream.tasks[0])
    fan_in, fan_out = model[1], model[3]
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        # Unit i outputs i + 1 on every input, unit 3 nothing (dead); outgoing weights 1, so
        # the contribution utility ranks units 3, 0, 1 lowest.
        fan_in.weight.zero_()
        fan_in.bias.copy_(torch.tensor([1.0, 2.0, 3.0, -1.0, 5.0, 6.0]))
        fan_out.weight.fill_(1.0)
    for _ in range(2):  # ages 1, 2: not mature yet (maturity 2 means age > 2)
        model(x)
        cbp.after_step(learner, x, None, None, None)
    assert cbp.replaced == 0
    before_in, out_before = fan_in.weight.detach().clone(), model(x).detach()
    model(x)
    cbp.after_step(learner, x, None, None, None)  # 6 mature units * 0.5 = 3 replacements
    assert cbp.replaced == 3
    reset = (cbp._age[0] == 0).nonzero().flatten().tolist()
    assert reset == [0, 1, 3]
    kept = [2, 4, 5]
    assert torch.equal(fan_in.weight[kept], before_in[kept])
    assert torch.all(fan_out.weight[:, kept] == 1.0)
    assert torch.all(fan_out.weight[:, reset] == 0)
    assert torch.all(fan_in.bias[reset] == 0)
    fresh = fan_in.weight[reset]
    assert torch.all(fresh.abs() <= 1 / math.sqrt(64)) and torch.all(fresh != 0)
    # The replaced units' mean contributions moved into the next bias: with constant
    # activations the network computes exactly what it did before.
    torch.testing.assert_close(model(x).detach(), out_before)
    assert cbp.state_bytes() == 3 * 6 * 4


def test_continual_backprop_refuses_models_that_are_not_mlps():
    stream = make_stream("permuted-digits", n_tasks=1)
    with pytest.raises(ConfigError, match=r"continual-backprop.*Conv2d"):
        train(stream, CNN((1, 8, 8), 10), "continual-backprop", progress=False)


def test_continual_backprop_resumes_exactly():
    stream = make_stream("permuted-digits", n_tasks=3)
    fit = FitConfig(lr=0.3, batch_size=16, progress=False)
    params = {"rho": 0.01, "maturity": 10}
    snaps = []
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10, hidden=(16, 16))
    init = copy.deepcopy(model.state_dict())
    full = train(
        stream,
        model,
        make_strategies("continual-backprop+shrink-perturb", {**params, "noise": 1e-3}),
        fit=fit,
        seed=0,
        on_task_end=lambda s: snaps.append(copy.deepcopy(s)),
    )
    model2 = MLP((1, 8, 8), 10, hidden=(16, 16))
    model2.load_state_dict(init)
    strategies = make_strategies("continual-backprop+shrink-perturb", {**params, "noise": 1e-3})
    resumed = train(stream, model2, strategies, fit=fit, seed=0, resume=snaps[0])
    assert resumed.accuracy_matrix == full.accuracy_matrix
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b)
    assert strategies[0].replaced > 0
    assert full.strategy_state_bytes == 3 * 4 * 32


def test_shrink_perturb_shrinks_and_perturbs_as_specified():
    stream = make_stream("permuted-digits", n_tasks=2)
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10, hidden=(400, 400))
    learner = _learner(stream, model)
    start = [p.detach().clone() for p in model.parameters()]
    sp = ShrinkPerturb(shrink=0.3, noise=0.0)
    sp.before_task(learner, stream.tasks[0])  # first task: a fresh network, left alone
    assert all(torch.equal(p, s) for p, s in zip(model.parameters(), start, strict=True))
    learner.task_index = 1
    sp.before_task(learner, stream.tasks[1])
    for p, s in zip(model.parameters(), start, strict=True):
        torch.testing.assert_close(p.detach(), 0.3 * s)
    # Noise only: the change has mean 0 and standard deviation sigma.
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    ShrinkPerturb(shrink=1.0, noise=0.02).before_task(learner, stream.tasks[1])
    change = torch.cat([p.detach().flatten() for p in model.parameters()]) - before
    assert float(change.std()) == pytest.approx(0.02, rel=0.02)
    assert abs(float(change.mean())) < 1e-3
    # Every step: lambda per optimiser step.
    step = ShrinkPerturb(shrink=0.9, noise=0.0, every="step")
    step.before_task(learner, stream.tasks[1])
    snapshot = [p.detach().clone() for p in model.parameters()]
    for _ in range(3):
        step.after_step(learner, None, None, None, None)
    for p, s in zip(model.parameters(), snapshot, strict=True):
        torch.testing.assert_close(p.detach(), 0.9**3 * s)
    assert step.state_bytes() == 0


def test_parameter_validation():
    for kwargs, name in [
        ({"rho": -0.1}, "rho"),
        ({"rho": 1.5}, "rho"),
        ({"maturity": -1}, "maturity"),
        ({"maturity": 2.5}, "maturity"),
        ({"eta": 1.0}, "eta"),
    ]:
        with pytest.raises(ConfigError, match=name):
            ContinualBackprop(**kwargs)
    for kwargs, name in [
        ({"shrink": 0.0}, "shrink"),
        ({"shrink": 1.5}, "shrink"),
        ({"noise": -1.0}, "noise"),
        ({"every": "epoch"}, "every"),
    ]:
        with pytest.raises(ConfigError, match=name):
            ShrinkPerturb(**kwargs)
    built = make_strategies("continual-backprop", {"rho": "1e-3", "maturity": "50"})[0]
    assert (built.rho, built.maturity) == (1e-3, 50)
    with pytest.raises(ConfigError, match="n_tasks"):
        permuted_subsets(data.load("digits"), 0, 10, 10)
    with pytest.raises(ConfigError, match="exceed"):
        permuted_subsets(data.load("digits"), 2, 100000, 10)


@pytest.mark.slow
def test_overlap_records_and_claim(tmp_path, sweeps_run):
    settings = OverlapSettings(
        data="digits", angles=(0, 90), hidden=(32, 32), lr=0.2, batch_size=32, epochs=15,
        train_size=800, test_size=300, probe=200,
    )  # fmt: skip
    records = overlap_study(settings, [0], tmp_path / "runs", workers=2)
    assert len(sweeps_run[0].done) == 2
    # The overlap's definition changes without training again: the runs are in the store.
    stricter = overlap_study(settings, [0], tmp_path / "runs", rate=0.9)
    assert sweeps_run[1].done == [] and len(sweeps_run[1].skipped) == 2
    assert [r.cka for r in stricter] == [r.cka for r in records]
    assert stricter[1].overlap != records[1].overlap
    same, turned = records
    assert same.layers == ["2", "4"] and len(same.cka) == 2
    # B identical to A: every unit A uses, B uses; training B changes little.
    assert same.overlap == [1.0, 1.0] and same.overlap_weighted == [1.0, 1.0]
    assert same.acc_b_before == same.acc_a
    assert same.forgetting < 0.05
    # A quarter turn: a different task, which is forgotten more, with less overlap.
    assert turned.acc_b_before < same.acc_b_before - 0.3
    assert turned.forgetting > same.forgetting + 0.1
    assert max(turned.overlap) < 1.0 and max(turned.overlap_weighted) < 1.0
    assert min(turned.cka) < min(same.cka)
    # The claim's line on hand-made points: forgetting = 0.1 + 0.5 overlap.
    points = [
        OverlapRecord(0.0, 0, ["a"], [o], [o], [o], [1.0], 1.0, 1.0, 1.0, 1.0, 0.1 + 0.5 * o)
        for o in (0.2, 0.4, 0.6, 0.8)
    ]
    claim = overlap_claim([p.to_dict() for p in points])
    assert claim["slope"] == pytest.approx(0.5)
    assert claim["forgetting_at_low"] == pytest.approx(0.25)
    assert claim["forgetting_at_high"] == pytest.approx(0.45)
    assert claim["relative_increase"] == pytest.approx(0.8)
    assert claim["pearson"] == pytest.approx(1.0) and claim["interpolated"]
    assert overlap_claim(points, measure="overlap_weighted")["slope"] == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="measure"):
        overlap_claim(points, measure="size")


@pytest.mark.slow
def test_cli_plasticity_and_overlap_smoke(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "plasticity"
    args = "plasticity --data digits --tasks 3 --train-per-task 200 --test-per-task 100"
    args += " --hidden 16,16 --strategy finetune --strategy continual-backprop:rho=0.01,maturity=5"
    store = ["--store", str(tmp_path / "runs")]
    code = main([*args.split(), *store, "-o", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "continual-backprop" in text and "dormant" in text
    saved = json.loads((out / "plasticity.json").read_text())
    assert len(saved["runs"]) == 2 and len(saved["runs"][1]["records"]) == 3
    assert (out / "plasticity.png").exists() and (out / "plasticity.svg").exists()
    out = tmp_path / "overlap"
    args = "overlap --data digits --angles 0,90 --hidden 16 --epochs 1 --train-size 600"
    code = main([*args.split(), "--test-size", "200", *store, "-o", str(out)])
    assert code == 0
    assert "forgetting" in capsys.readouterr().out
    saved = json.loads((out / "overlap.json").read_text())
    assert [r["angle"] for r in saved["records"]] == [0.0, 90.0]
    assert (out / "overlap.png").exists() and (out / "overlap.svg").exists()
    assert main(["plasticity", "--data", "digits", "--strategy", "continual-backprop:rho"]) == 2


def test_plasticity_curves_average_seeds_and_smooth():
    pytest.importorskip("matplotlib")
    from forgetless.analysis.plasticity import PlasticityRecord
    from forgetless.report.analysis_figures import plasticity_curves

    def fake(seed: int, strategy: str) -> PlasticityRun:
        records = [
            PlasticityRecord(t, 0.9 - 0.01 * t * seed, 0.1 * t, [5.0, 4.0 - t], 0.1, 1.0)
            for t in range(4)
        ]
        return PlasticityRun(strategy, {}, seed, {}, records, 1.0)

    runs = [fake(1, "finetune"), fake(3, "finetune"), fake(1, "continual-backprop").to_dict()]
    fig = plasticity_curves(runs, smooth=2)
    accuracy = fig.axes[0].lines[0].get_ydata()
    # Seeds 1 and 3 averaged (0.9 - 0.02 t), then a running mean over 2 tasks.
    assert list(accuracy) == pytest.approx([90.0, 89.0, 87.0, 85.0])
    assert [len(ax.lines) for ax in fig.axes] == [2, 2, 2, 2]
    assert list(fig.axes[2].lines[0].get_ydata()) == pytest.approx([4.0, 3.5, 2.5, 1.5])
    with pytest.raises(ConfigError, match="no plasticity runs"):
        plasticity_curves([])
