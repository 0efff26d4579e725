"""The masked layers shared by PackNet, HAT and HyperMask, and the conversion of our models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from forgetless import ConfigError
from forgetless.models import (
    LayerMask,
    MaskedConv2d,
    MaskedLinear,
    MaskedNet,
    build_model,
    masked_layers,
    to_masked,
)


def test_a_masked_layer_applies_weight_bias_and_unit_masks_as_stated():
    torch.manual_seed(0)
    linear = nn.Linear(5, 3)
    x = torch.randn(4, 5)
    masked = MaskedLinear.from_layer(linear)
    assert masked.weight is linear.weight and masked.bias is linear.bias
    assert torch.equal(masked(x), linear(x))  # no mask: the layer itself
    w_mask, b_mask, gates = torch.rand(3, 5) > 0.5, torch.tensor([1.0, 0.0, 1.0]), torch.rand(3)
    masked.mask = LayerMask(w_mask, b_mask, gates)
    expected = (x @ (linear.weight * w_mask).T + linear.bias * b_mask) * gates
    torch.testing.assert_close(masked(x), expected)

    conv = nn.Conv2d(2, 4, 3, padding=1)
    images = torch.randn(2, 2, 6, 6)
    masked_conv = MaskedConv2d.from_layer(conv)
    assert torch.equal(masked_conv(images), conv(images))
    w_mask, gates = torch.rand(4, 2, 3, 3), torch.rand(4)
    masked_conv.mask = LayerMask(weight=w_mask, units=gates)
    expected = F.conv2d(images, conv.weight * w_mask, conv.bias, padding=1) * gates.view(-1, 1, 1)
    torch.testing.assert_close(masked_conv(images), expected)


def test_gradients_flow_into_a_real_valued_mask():
    # HyperMask trains the hypernetwork that makes the masks; HAT its gates' embeddings.
    torch.manual_seed(0)
    layer = MaskedLinear.from_layer(nn.Linear(4, 2))
    logits = torch.zeros(2, 4, requires_grad=True)
    gates = torch.zeros(2, requires_grad=True)
    layer.mask = LayerMask(weight=torch.sigmoid(logits), units=torch.sigmoid(gates))
    layer(torch.randn(3, 4)).sum().backward()
    assert logits.grad.abs().sum() > 0 and gates.grad.abs().sum() > 0
    assert layer.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["mlp", "cnn", "cnn-skip"])
def test_our_models_convert_to_masked_form_keeping_weights_names_and_outputs(name):
    model = build_model(name, (1, 8, 8), 10, hidden=[16] if name == "mlp" else None, seed=0)
    x = torch.randn(3, 1, 8, 8)
    expected = model(x)
    before = dict(model.named_parameters())
    masked = to_masked(model)
    assert masked is model
    after = dict(masked.named_parameters())
    assert after.keys() == before.keys() and all(after[n] is before[n] for n in before)
    layers = masked_layers(masked)
    kinds = {type(m) for m in masked.modules()}
    assert nn.Linear not in kinds and nn.Conv2d not in kinds  # every layer converted
    assert len(layers) == (2 if name == "mlp" else 4)
    assert torch.equal(masked(x), expected)


class _Halves(nn.Module):
    """Task t keeps the weights of row parity t of every layer (a toy mask source)."""

    def __init__(self, layers):
        super().__init__()
        self.shapes = {name: layer.weight.shape for name, layer in layers.items()}

    def forward(self, task):
        masks = {}
        for name, shape in self.shapes.items():
            rows = torch.arange(shape[0]) % 2 == task % 2
            masks[name] = LayerMask(weight=rows.view(-1, *[1] * (len(shape) - 1)).float())
        return masks


def test_a_masked_network_answers_each_task_with_its_masks_even_in_a_mixed_batch():
    model = build_model("mlp", (1, 8, 8), 10, hidden=[16], seed=0)
    net = MaskedNet(model, _Halves(masked_layers(to_masked(model))))
    x = torch.randn(6, 1, 8, 8)
    t = torch.tensor([0, 1, 1, 0, 2, 1])
    mixed = net(x, t)
    for task in (0, 1, 2):
        rows = t == task
        torch.testing.assert_close(mixed[rows], net(x[rows], task), rtol=0, atol=0)
    assert not torch.equal(net(x, 0), net(x, 1))
    assert all(layer.mask is None for layer in net.layers.values())  # masks set per call only


def test_a_model_without_layers_to_mask_is_a_clear_error():
    with pytest.raises(ConfigError, match="no linear or convolutional layer"):
        MaskedNet(nn.Sequential(nn.Flatten(), nn.ReLU()), nn.Module())
