"""Initial weights as a config field: ``RunConfig.init`` / ``--init`` / ``build_model(init=)``."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats
from torch import nn

from forgetless.errors import ConfigError
from forgetless.experiment import RunConfig, config_hash, prepare, run
from forgetless.models import build_model


def _layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def _bound(weight: torch.Tensor) -> float:
    receptive = math.prod(weight.shape[2:])
    return math.sqrt(6.0 / ((weight.shape[0] + weight.shape[1]) * receptive))


@pytest.mark.parametrize(("name", "input_shape", "hidden"), [
    ("mlp", (1, 28, 28), [400, 100]),
    ("cnn", (1, 28, 28), [128]),
])  # fmt: skip
def test_xavier_draws_uniform_weights_of_glorots_width_and_zero_biases(name, input_shape, hidden):
    model = build_model(name, input_shape, 10, hidden, seed=3, init="xavier")
    default = build_model(name, input_shape, 10, hidden, seed=3)
    for layer, plain in zip(_layers(model), _layers(default), strict=True):
        w, a = layer.weight.detach().flatten().double(), _bound(layer.weight)
        assert w.abs().max() <= a
        # U(-a, a) by a Kolmogorov-Smirnov test of every weight of the layer (hundreds to
        # 300,000 of them); PyTorch's default U(-1/sqrt(fan_in), ...) fails it for every layer
        # here (its width differs from a by a factor of 1.2 to 2.4).
        assert stats.kstest(w.numpy(), stats.uniform(-a, 2 * a).cdf).pvalue > 1e-3
        default_w = plain.weight.detach().flatten().double().numpy()
        assert stats.kstest(default_w, stats.uniform(-a, 2 * a).cdf).pvalue < 1e-6
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
        assert plain.bias.abs().max() > 0


def test_xavier_is_reproducible_per_seed_through_the_config():
    def weights(seed: int, init: str | None) -> list[torch.Tensor]:
        config = RunConfig(model="mlp", hidden=[32], seed=seed, init=init)
        return [p.detach().clone() for p in prepare(config)[1].parameters()]

    first, again, other = weights(1, "xavier"), weights(1, "xavier"), weights(2, "xavier")
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])
    default = weights(1, None)
    assert not torch.equal(first[0], default[0])
    assert all(torch.equal(a, b) for a, b in zip(default, weights(1, "default"), strict=True))


def test_init_enters_the_run_id_only_when_set():
    assert RunConfig(init="default").init is None  # one run, one id, whichever way it is named
    assert config_hash(RunConfig(init="default")) == config_hash(RunConfig())
    assert config_hash(RunConfig(init="xavier")) != config_hash(RunConfig())


def test_a_run_records_its_init_and_learns():
    config = RunConfig(hidden=[32], init="xavier", protocol="task", progress=False)
    result = run(config)
    assert result.config["init"] == "xavier"
    assert result.metrics["acc"] > 0.9  # five two-class tasks of the digits, task-IL


def test_bad_init_names_are_clear_errors():
    with pytest.raises(ConfigError, match="did you mean 'xavier'"):
        RunConfig(init="xavir")
    with pytest.raises(ConfigError, match="init must be one of default, xavier"):
        RunConfig(init=3)
    with pytest.raises(ConfigError, match="no effect with weights"):
        RunConfig(init="xavier", weights="model.safetensors")


def test_the_cli_takes_init(capsys):
    from forgetless.cli import main

    assert main(["run", "--init", "xavier", "--hidden", "16", "--iterations", "5",
                 "--no-progress", "--json"]) == 0  # fmt: skip
    assert '"init": "xavier"' in capsys.readouterr().out
    assert main(["run", "--init", "xavir"]) == 2
    assert "forgetless: error: init must be one of" in capsys.readouterr().err
