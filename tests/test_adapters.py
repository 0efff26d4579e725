"""Adapter layers on any nn.Module: LoRA through peft and our CURLoRA."""

import copy
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from forgetless import ConfigError
from forgetless.models import adapters, build_model
from forgetless.models.adapters import CURLinear
from forgetless.models.adapters.curlora import draw_indices, inverted_probabilities
from forgetless.models.gpt import GPT

try:
    import peft  # noqa: F401

    HAVE_PEFT = True
except ImportError:
    HAVE_PEFT = False
needs_peft = pytest.mark.skipif(not HAVE_PEFT, reason="lora needs peft (forgetless[adapters])")
METHODS = [pytest.param("lora", marks=needs_peft), "curlora"]


def gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(vocab_size=30, block_size=12, width=32, layers=2).eval()


def mlp(seed=0):
    return build_model("mlp", (64,), 10, [32, 32], seed=seed)


def inputs(model):
    g = torch.Generator().manual_seed(1)
    if isinstance(model, GPT):
        return torch.randint(0, 30, (4, 12), generator=g)
    return torch.rand(8, 64, generator=g)


def train_steps(model, steps=5):
    x = inputs(model)
    opt = torch.optim.Adam(adapters.adapter_parameters(model), lr=0.05)
    for _ in range(steps):
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("make", [gpt, mlp])
@pytest.mark.parametrize("method", METHODS)
def test_a_wrapped_model_starts_exactly_at_the_base_model(method, make):
    model = make()
    x = inputs(model)
    before = model(x)
    cls = type(model)
    names = adapters.wrap(model, method, rank=4, seed=0)
    assert type(model) is cls  # the user's model class is never copied or replaced
    assert names and all(n in dict(adapters.adapter_layers(model)) for n in names)
    assert torch.equal(model(x), before)  # B = 0, U = 0: exactly the base outputs


@pytest.mark.parametrize("method", METHODS)
def test_only_adapter_parameters_receive_gradients(method):
    model = gpt()
    adapters.wrap(model, method, rank=4, seed=0)
    own = {id(p) for p in adapters.adapter_parameters(model)}
    model(inputs(model)).square().mean().backward()
    for name, p in model.named_parameters():
        if id(p) in own:
            assert p.requires_grad and p.grad is not None, name
        else:
            assert not p.requires_grad and p.grad is None, name
    expected = {"lora": 2 * 4 * (32 + 96) + 2 * 4 * (32 + 32), "curlora": 4 * 4 * 4}[method]
    assert sum(p.numel() for p in adapters.adapter_parameters(model)) == expected


@pytest.mark.parametrize("method", METHODS)
def test_merge_then_unmerge_restores_the_weights(method):
    model = gpt()
    base = copy.deepcopy(model.state_dict())
    names = adapters.wrap(model, method, rank=4, seed=0)
    train_steps(model)
    x = inputs(model)
    adapted = model(x)
    adapters.merge(model)
    weights = {n: model.get_submodule(n).base_layer.weight for n in names}
    assert all(not torch.allclose(weights[n], base[f"{n}.weight"]) for n in names)
    assert torch.allclose(model(x), adapted, atol=1e-5)  # merged: the same function
    adapters.unmerge(model)
    for n in names:
        assert torch.allclose(weights[n], base[f"{n}.weight"], rtol=0, atol=1e-6)
    assert torch.allclose(model(x), adapted, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_remove_puts_the_plain_layers_back(method):
    model = gpt()
    x = inputs(model)
    plain = model(x)
    adapters.wrap(model, method, rank=4, seed=0)
    train_steps(model)
    adapted = model(x)
    kept = copy.deepcopy(model)
    adapters.remove(model)  # the update dropped
    assert not adapters.adapter_layers(model)
    assert type(model.blocks[0].attn.qkv) is torch.nn.Linear
    assert torch.allclose(model(x), plain, atol=1e-6)
    adapters.remove(kept, merge=True)  # the update kept in the weights
    assert type(kept.blocks[0].attn.qkv) is torch.nn.Linear
    assert torch.allclose(kept(x), adapted, atol=1e-5)


def test_curlora_draws_against_the_weights_energy():
    # hand-computed: energies 1 and 3 -> p = 1/4, 3/4 -> 1/(p+eps) normalised
    q = inverted_probabilities(torch.tensor([1.0, 3.0]), eps=0.0)
    assert torch.allclose(q, torch.tensor([0.75, 0.25], dtype=torch.float64))
    W = torch.ones(6, 50)
    W[:, 0] = 30.0  # column 0 carries 95% of the energy: almost never drawn
    W[2] = 10.0  # so does row 2
    rows, cols = draw_indices(W, 2000, torch.Generator().manual_seed(0))
    assert (cols == 0).float().mean() < 0.005 and (rows == 2).float().mean() < 0.05
    assert rows.dtype == cols.dtype == torch.int64


def test_curlora_layer_is_w_plus_c_u_r():
    torch.manual_seed(0)
    base = torch.nn.Linear(7, 5)
    layer = CURLinear(base, rank=3, alpha=0.5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        layer.U.normal_()
    W = base.weight.detach()
    C, R = W[:, layer.columns], W[layer.rows, :]  # columns and rows of W itself
    assert torch.equal(layer.C, C) and torch.equal(layer.R, R)
    x = torch.randn(4, 7)
    expected = x @ (W + 0.5 * C @ layer.U @ R).t() + base.bias
    assert torch.allclose(layer(x), expected, atol=1e-5)


def test_curlora_indices_survive_save_and_load(tmp_path):
    model = gpt()
    adapters.wrap(model, "curlora", rank=4, seed=0)
    train_steps(model)
    path = tmp_path / "adapted.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    other = gpt()  # the same base, other draws
    adapters.wrap(other, "curlora", rank=4, seed=1)
    layer, other_layer = model.blocks[0].attn.qkv, other.blocks[0].attn.qkv
    assert not torch.equal(layer.columns, other_layer.columns)
    other.load_state_dict(load_file(str(path)))
    assert torch.equal(other_layer.columns, layer.columns)
    assert torch.equal(other_layer.rows, layer.rows)
    x = inputs(model)
    assert torch.equal(other(x), model(x))


def test_curlora_draws_depend_on_the_seed_only():
    a, b = gpt(), gpt()
    adapters.wrap(a, "curlora", rank=4, seed=3)
    with torch.random.fork_rng():
        torch.manual_seed(99)  # the global stream is not what decides the draws
        adapters.wrap(b, "curlora", rank=4, seed=3)
    assert torch.equal(a.blocks[1].attn.proj.columns, b.blocks[1].attn.proj.columns)
    layer = a.blocks[1].attn.proj
    assert layer.columns.device == layer.base_layer.weight.device


def test_default_targets_per_built_in_model():
    assert adapters.default_targets(gpt()) == [
        "blocks.0.attn.qkv",
        "blocks.0.attn.proj",
        "blocks.1.attn.qkv",
        "blocks.1.attn.proj",
    ]
    assert adapters.default_targets(mlp()) == ["1", "3", "5"]
    assert adapters.default_targets(build_model("cnn", (1, 8, 8), 10)) == ["7", "9"]


def test_targets_and_options_are_checked():
    with pytest.raises(ConfigError, match="no linear layer"):
        adapters.wrap(gpt(), "curlora", targets=["nothing"])
    with pytest.raises(ConfigError, match="Linear and Conv1D layers only"):
        adapters.wrap(gpt(), "curlora", targets=["attn"])
    with pytest.raises(ConfigError, match="unknown adapter"):
        adapters.wrap(gpt(), "dora")
    with pytest.raises(ConfigError, match="rank"):
        adapters.wrap(gpt(), "curlora", rank=0)
    model = gpt()
    adapters.wrap(model, "curlora", targets=["mlp.fc"])
    assert [n for n, _ in adapters.adapter_layers(model)] == ["blocks.0.mlp.fc", "blocks.1.mlp.fc"]
    with pytest.raises(ConfigError, match="already has adapters"):
        adapters.wrap(model, "curlora")


def test_lora_without_peft_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r"forgetless\[adapters\]"):
        adapters.wrap(gpt(), "lora")
    adapters.wrap(gpt(), "curlora")  # needs nothing more


@pytest.mark.parametrize("method", METHODS)
def test_gpt2_conv1d_layers_are_wrapped(method):
    pytest.importorskip("transformers", reason="GPT-2's Conv1D comes with transformers")
    model = build_model("hf:gpt2", (12,), 30, [32, 32], seed=0).eval()
    x = torch.randint(0, 30, (3, 12))
    before = model(x)
    names = adapters.wrap(model, method, rank=4, seed=0)
    assert names == ["model.transformer.h.0.attn.c_attn", "model.transformer.h.1.attn.c_attn"]
    assert type(adapters.adapter_layers(model)[0][1].base_layer).__name__ == "Conv1D"
    assert torch.equal(model(x), before)
    train_steps_on(model, x)
    adapted = model(x)
    adapters.merge(model)
    assert torch.allclose(model(x), adapted, atol=1e-5)
    adapters.remove(model)  # a merged update is taken out again, then the adapters
    assert torch.allclose(model(x), before, atol=1e-5)


def train_steps_on(model, x, steps=3):
    opt = torch.optim.Adam(adapters.adapter_parameters(model), lr=0.05)
    for _ in range(steps):
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
