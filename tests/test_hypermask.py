"""HyperMask (Ksiazek and Spurek 2024): its semi-binary masks and regularisers against
hand-computed values, then on the digits: it learns every task, forgets little, and its
output regulariser is what keeps earlier tasks' masks."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import task_il
from forgetless import train
from forgetless.engine import FitConfig
from forgetless.experiment import run
from forgetless.learner import Learner
from forgetless.models import MaskedNet, build_model
from forgetless.models.hypernet import HyperMasks, semi_binary
from forgetless.scenarios import make_stream
from forgetless.strategies import HyperMask, Strategy

# The task-IL settings, with the batch the values below were tuned with (the old default).
QUICK = {**task_il.QUICK, "batch_size": 128}
# The authors' lam_target (0.001) was tuned for a 400-400 MLP trained 2000 steps a task; on
# this 32-32 one with 80 steps the target's weights need a firmer hold. Seeds 0-2, ACC / BWT:
# 0.001: 0.89-0.91 / -0.11 to -0.13; 0.01: 0.96-0.99 / -0.01 to -0.03; 0.03: 0.97-0.98 / 0.00;
# 0.1: a task may not learn at all (0.70 on seeds 1 and 2).
HOLD = {"lam_target": 0.03}


def _stream(tasks=5):
    return make_stream("split-digits", seed=0, protocol="task")[:tasks]


def test_a_semi_binary_mask_is_abs_tanh_with_the_smallest_fraction_cut():
    h = torch.tensor([0.1, -2.0, 0.5, 0.0, -0.3], requires_grad=True)
    mask = semi_binary(h, 0.4)  # floor(0.4 * 5) = 2 cut: the 0 and |tanh(0.1)|
    expected = [0.0, math.tanh(2.0), math.tanh(0.5), 0.0, math.tanh(0.3)]
    assert mask.tolist() == pytest.approx(expected, rel=1e-6)
    mask.sum().backward()  # d|tanh h|/dh = sign(h) (1 - tanh^2 h) where kept, else 0
    grads = [
        0.0,
        -(1 - math.tanh(2.0) ** 2),
        1 - math.tanh(0.5) ** 2,
        0.0,
        -(1 - math.tanh(0.3) ** 2),
    ]
    assert h.grad.tolist() == pytest.approx(grads, rel=1e-5)
    assert torch.equal(semi_binary(h, 0.0), torch.tanh(h).abs())  # nothing cut


def _tiny():
    stream = _stream(2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 6), nn.ReLU(), nn.Linear(6, 10))
    fit = FitConfig(optimizer="adam", lr=0.01)
    learner = Learner(model, stream, fit.make_optimizer, torch.device("cpu"), torch.Generator())
    return learner, stream


def test_the_masks_multiply_every_weight_and_bias_but_the_output_bias():
    learner, stream = _tiny()
    weights = {n: p.detach().clone() for n, p in learner.model.named_parameters()}
    strategy = HyperMask(sparsity=0.5, embedding_size=4, hypernet_width=5, hypernet_depth=1)
    strategy.change_model(learner, stream[0])
    net = learner.model
    assert isinstance(net, MaskedNet) and isinstance(net.masks, HyperMasks)
    assert net.masks.hypernet.net[-1].out_features == 64 * 6 + 6 + 6 * 10  # no output bias
    net.eval()
    x = stream[0].test.inputs(slice(0, 8))
    with torch.no_grad():
        masks = net.masks(0)
        for name in ("1", "3"):  # half of each tensor cut
            assert (masks[name].weight == 0).sum() == masks[name].weight.numel() // 2
        assert (masks["1"].bias == 0).sum() == 3 and masks["3"].bias is None
        hidden = torch.relu(
            x.flatten(1) @ (weights["1.weight"] * masks["1"].weight).T
            + weights["1.bias"] * masks["1"].bias
        )
        expected = hidden @ (weights["3.weight"] * masks["3"].weight).T + weights["3.bias"]
        torch.testing.assert_close(net(x, 0), expected)
        assert torch.equal(net(x, 1), net(x, 0))  # a task not learnt yet: as the newest


def test_the_regularisers_are_the_stated_formulas():
    learner, stream = _tiny()
    strategy = HyperMask(sparsity=0.3, beta=0.5, lam_target=0.2, embedding_size=4)
    strategy.change_model(learner, stream[0])
    strategy.after_task(learner, stream[0])  # saves H*_0 and theta*
    net = learner.model
    targets = strategy.targets.clone()
    anchor = {n: p.detach().clone() for n, p in net.named_parameters() if n.startswith("body.")}
    learner.task_index = 1
    strategy.change_model(learner, stream[1])
    strategy.batch(learner, None, None, None)
    with torch.no_grad():  # what training would do: both networks move
        net.masks.hypernet.net[-1].weight.add_(0.01)
        for name in anchor:
            dict(net.named_parameters())[name].add_(0.02)
    h0 = net.masks.outputs(0).detach()
    expected = 0.5 / 1 * (h0 - targets[0]).pow(2).sum().item()
    current = net.masks.masks_of(net.masks.outputs(1), 0.3)
    params = dict(net.named_parameters())
    moved = 0.0
    for layer in ("1", "3"):
        for which, mask in (("weight", current[layer].weight), ("bias", current[layer].bias)):
            change = params[f"body.{layer}.{which}"] - anchor[f"body.{layer}.{which}"]
            moved += (change.abs() if mask is None else (change * mask).abs()).sum().item()
    expected += 0.2 * moved
    got = strategy.penalty(learner, None, None, None, None)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert moved > 0 and expected > 0.2 * moved  # both terms count
    # Only the current task's embedding trains; earlier ones are fixed.
    flags = [e.requires_grad for e in net.masks.hypernet.embeddings]
    assert flags == [False, True]


class Cuts(Strategy):
    name = "cuts"

    def __init__(self):
        self._seen = []

    def after_step(self, learner, x, y, t, logits):
        self._seen.append((learner.task_index, learner.model.masks.cut))

    def state_dict(self):
        return {}


def test_the_first_task_raises_the_cut_fraction_linearly():
    warnings.simplefilter("ignore", RuntimeWarning)  # 5 steps learn little
    stream = _stream(2)
    model = build_model("mlp", stream.input_shape, stream.num_outputs, [8], seed=0)
    cuts = Cuts()
    train(stream, model, [HyperMask(embedding_size=8), cuts], iterations=5, progress=False)
    first = [c for task, c in cuts._seen if task == 0]
    assert first == pytest.approx([0.3 * (i + 1) / 5 for i in range(5)])
    assert [c for task, c in cuts._seen if task == 1] == [0.3] * 5


# On the digits


@pytest.fixture(scope="module")
def finetune():
    return run(strategy="finetune", **QUICK)


@pytest.fixture(scope="module")
def hypermask():
    return run(strategy="hypermask", strategy_params=HOLD, **QUICK)


@pytest.mark.slow
def test_hypermask_learns_every_task_and_forgets_little(finetune, hypermask):
    m = hypermask.metrics
    assert m["acc"] > 0.95 and m["acc"] > finetune.metrics["acc"] + 0.2
    assert m["bwt"] > -0.02  # the target's weights are shared: small, not 0 (-0.002 measured)
    assert finetune.metrics["bwt"] < -0.2
    report = hypermask.strategy_reports["hypermask"]
    sizes = [64 * 32, 32 * 32, 32 * 10]
    assert report["weights"] == sum(sizes)
    kept = sum(n - int(0.3 * n) for n in sizes) / sum(sizes)
    assert report["kept"] == pytest.approx([kept] * 5, rel=1e-6)  # per layer, 30% cut
    shared = torch.tensor(report["shared"])
    assert torch.equal(shared, shared.T)
    off = shared[~torch.eye(5, dtype=torch.bool)]
    # Two masks keep 70% each: independent ones would share 49%; these share more.
    assert (off < kept).all() and (off > 0.45).all()
    assert report["stable"][-1] == 1.0 and min(report["stable"]) > 0.7


def test_the_output_regulariser_keeps_earlier_tasks_masks(hypermask):
    loose = run(strategy="hypermask", strategy_params={**HOLD, "beta": 0.0}, **QUICK)
    held = hypermask.strategy_reports["hypermask"]["stable"][:-1]
    free = loose.strategy_reports["hypermask"]["stable"][:-1]
    # Without it each earlier mask drifts (about a third of the weights change state).
    assert sum(held) / 4 > 0.9 and sum(free) / 4 < 0.8
    assert hypermask.metrics["bwt"] > loose.metrics["bwt"] + 0.05
