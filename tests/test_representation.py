"""Representation measures on matrices with known answers, and layer activations of a model."""

import math

import pytest
import torch
from torch import nn

from forgetless.analysis.representation import (
    active_fraction,
    dormant_fraction,
    effective_rank,
    layer_activations,
    linear_cka,
    mean_weight_magnitude,
    overlap,
)
from forgetless.errors import ConfigError
from forgetless.models import CNN, MLP


def test_effective_rank_known_values():
    torch.manual_seed(0)
    assert effective_rank(torch.eye(7)) == pytest.approx(7.0)
    # Rank one: a single non-zero singular value.
    u, v = torch.randn(20, 1, dtype=torch.float64), torch.randn(1, 9, dtype=torch.float64)
    assert effective_rank(u @ v) == pytest.approx(1.0, abs=1e-9)
    # Singular values (3, 1): p = (3/4, 1/4), erank = exp(-(3/4 log 3/4 + 1/4 log 1/4)).
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert effective_rank(torch.diag(torch.tensor([3.0, 1.0, 0.0]))) == pytest.approx(expected)
    # Orthogonal rotations keep the singular values, so the effective rank.
    q1, _ = torch.linalg.qr(torch.randn(6, 6))
    q2, _ = torch.linalg.qr(torch.randn(4, 4))
    m = torch.diag(torch.tensor([5.0, 2.0, 1.0, 0.5]))
    m = torch.cat([m, torch.zeros(2, 4)])
    assert effective_rank(q1 @ m @ q2) == pytest.approx(effective_rank(m), rel=1e-6)
    assert effective_rank(torch.zeros(5, 3)) == 0.0


def test_dormant_fraction_known_values():
    acts = torch.zeros(100, 5)
    acts[:, 0] = 1.0  # always active
    acts[0, 1] = 2.0  # active on 1 input of 100
    acts[:10, 2] = 0.5  # active on 10%
    acts[:, 3] = -1.0  # negative: never above tau = 0
    # Unit 4 is zero everywhere: dead.
    assert dormant_fraction(acts) == pytest.approx(2 / 5)  # units 3 and 4
    assert dormant_fraction(acts, max_rate=0.01) == pytest.approx(3 / 5)  # and unit 1
    assert dormant_fraction(acts, max_rate=0.1) == pytest.approx(4 / 5)
    assert dormant_fraction(acts, tau=-2.0) == pytest.approx(0.0)
    # A dict of layers pools the units: 2 dormant of 5, plus 3 of 3.
    assert dormant_fraction({"a": acts, "b": torch.zeros(4, 3)}) == pytest.approx(5 / 8)
    assert active_fraction(acts).tolist() == pytest.approx([1.0, 0.01, 0.1, 0.0, 0.0])
    with pytest.raises(ConfigError, match="max_rate"):
        dormant_fraction(acts, max_rate=1.0)


def test_linear_cka_identity_and_invariances():
    torch.manual_seed(0)
    x = torch.randn(300, 20) @ torch.randn(20, 20)  # correlated features
    assert linear_cka(x, x) == pytest.approx(1.0)
    q, _ = torch.linalg.qr(torch.randn(20, 20))
    assert linear_cka(x, x @ q) == pytest.approx(1.0)  # orthogonal transform
    assert linear_cka(x, 7.5 * x) == pytest.approx(1.0)  # isotropic scaling
    assert linear_cka(x, x + 3.0) == pytest.approx(1.0)  # centred: shifts do not matter
    # Not invariant to an arbitrary invertible linear map: stretching one direction by 30
    # changes the value, so the tests above could fail.
    stretch = torch.eye(20)
    stretch[0, 0] = 30.0
    assert linear_cka(x, x @ stretch) < 0.9
    # Independent representations are far from 1; the value is symmetric.
    y = torch.randn(300, 15)
    assert linear_cka(x, y) < 0.2
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x))


def test_linear_cka_gram_and_feature_forms_agree():
    torch.manual_seed(1)
    x, y = torch.randn(10, 50), torch.randn(10, 40)  # few inputs: the Gram form is used
    # Reference value written out with centred Gram matrices (Kornblith et al. 2019, Eq. 5).
    h = torch.eye(10) - torch.full((10, 10), 0.1)
    kx, ky = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    expected = (kx * ky).sum() / (kx.norm() * ky.norm())
    assert linear_cka(x, y) == pytest.approx(float(expected), rel=1e-6)
    x2, y2 = torch.randn(500, 3), torch.randn(500, 4)  # many inputs: the feature form
    h = torch.eye(500) - torch.full((500, 500), 1 / 500)
    kx, ky = h @ (x2 @ x2.T) @ h, h @ (y2 @ y2.T) @ h
    expected = (kx * ky).sum() / (kx.norm() * ky.norm())
    assert linear_cka(x2, y2) == pytest.approx(float(expected), rel=1e-5)


def test_linear_cka_errors_and_constant_input():
    with pytest.raises(ConfigError, match="same inputs"):
        linear_cka(torch.randn(5, 2), torch.randn(6, 2))
    with pytest.raises(ConfigError, match="2-D"):
        linear_cka(torch.randn(5), torch.randn(5, 2))
    assert math.isnan(linear_cka(torch.zeros(5, 3), torch.randn(5, 2)))


def test_overlap_on_constructed_activations():
    n = 50
    a = torch.zeros(n, 6)
    b = torch.zeros(n, 6)
    a[:, [0, 1, 2, 3]] = 1.0  # task A uses units 0-3
    b[:, [2, 3, 4]] = 1.0  # task B uses units 2-4
    b[: n // 10, 0] = 1.0  # unit 0 fires on 10% of B's inputs: below the rate of 0.5
    assert overlap(a, b) == pytest.approx(2 / 5)  # both {2, 3}, either {0, 1, 2, 3, 4}
    assert overlap(a, b, over="units") == pytest.approx(2 / 6)
    assert overlap(a, b, rate=0.1) == pytest.approx(3 / 5)  # unit 0 now counts for B
    assert overlap(a, a) == 1.0
    # Weighted: rates A (1, 1, 1, 1, 0, 0), B (0.1, 0, 1, 1, 1, 0): min 2.1, max 5.
    assert overlap(a, b, over="weighted") == pytest.approx(2.1 / 5)
    assert math.isnan(overlap(torch.zeros(4, 3), torch.zeros(5, 3)))
    with pytest.raises(ConfigError, match="same layer"):
        overlap(a, torch.zeros(n, 5))
    with pytest.raises(ConfigError, match="rate"):
        overlap(a, b, rate=0.0)
    with pytest.raises(ConfigError, match="over"):
        overlap(a, b, over="all")


def test_layer_activations_match_a_manual_forward():
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10, hidden=(16, 12))
    model.train()
    x = torch.randn(37, 1, 8, 8)
    acts = layer_activations(model, x, batch_size=10)
    assert list(acts) == ["2", "4"]
    h1 = torch.relu(model[1](x.flatten(1)))
    h2 = torch.relu(model[3](h1))
    torch.testing.assert_close(acts["2"], h1.detach())
    torch.testing.assert_close(acts["4"], h2.detach())
    assert model.training  # mode restored
    assert not model[2]._forward_hooks  # hooks removed
    chosen = layer_activations(model, x, layers=["1"])  # any module: pre-activations here
    torch.testing.assert_close(chosen["1"], model[1](x.flatten(1)).detach())
    with pytest.raises(ConfigError, match="not modules"):
        layer_activations(model, x, layers=["nope"])


def test_layer_activations_average_conv_maps_and_reused_modules():
    torch.manual_seed(0)
    cnn = CNN((1, 8, 8), 10, hidden=16)
    x = torch.randn(5, 1, 8, 8)
    acts = layer_activations(cnn, x)
    assert [a.shape[1] for a in acts.values()] == [32, 64, 16]
    conv = torch.relu(cnn[0](x))
    torch.testing.assert_close(acts["1"], conv.mean(dim=(2, 3)).detach())

    class Reuse(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.act = nn.Linear(3, 4), nn.Linear(4, 2), nn.ReLU()

        def forward(self, x):
            return self.act(self.b(self.act(self.a(x))))

    acts = layer_activations(Reuse(), torch.randn(6, 3), batch_size=4)
    assert {k: v.shape for k, v in acts.items()} == {"act": (6, 4), "act#1": (6, 2)}


def test_mean_weight_magnitude():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    with torch.no_grad():
        model[0].weight.fill_(2.0)
        model[0].bias.fill_(100.0)
        model[2].weight.fill_(-1.0)
        model[2].bias.fill_(100.0)
    assert mean_weight_magnitude(model) == pytest.approx((6 * 2 + 3 * 1) / 9)
    assert mean_weight_magnitude(model, include_biases=True) == pytest.approx(
        (6 * 2 + 3 * 1 + 400) / 13
    )
