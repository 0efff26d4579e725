"""Drift tests on synthetic Gaussians: no drift where there is none (p-values spread over
[0, 1]), drift where the mean shifts; the MMD statistic against its definition; KS via scipy;
a layer's features; the command's exit codes."""

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from forgetless import ConfigError, DataError
from forgetless.cli import main
from forgetless.production.drift import drift, ks_test, mmd_test
from forgetless.production.loading import save_weights


def _gauss(n, d=8, shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) + shift


def test_mmd_matches_its_definition():
    x, y = _gauss(30, seed=1).double(), _gauss(25, shift=0.5, seed=2).double()
    stat, p, sigma = mmd_test(x, y, permutations=200)
    k = lambda a, b: torch.exp(-(torch.cdist(a, b) ** 2) / (2 * sigma**2))  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    expected = (
        (kxx.sum() - kxx.trace()) / (30 * 29)
        + (kyy.sum() - kyy.trace()) / (25 * 24)
        - 2 * kxy.sum() / (30 * 25)
    )
    assert stat == pytest.approx(float(expected), rel=1e-5)
    pooled = torch.cat([x, y])
    assert sigma == pytest.approx(float(torch.pdist(pooled).median()), rel=1e-6)
    assert 1 / 201 <= p <= 1


def test_ks_uses_scipy_with_a_correction():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 3)), rng.normal(size=(150, 3))
    y[:, 1] += 1.0
    statistic, p, adjusted = ks_test(x, y)
    for j in range(3):
        ref = stats.ks_2samp(x[:, j], y[:, j])
        assert statistic[j] == pytest.approx(ref.statistic)
        assert p[j] == pytest.approx(ref.pvalue)
    np.testing.assert_allclose(adjusted, stats.false_discovery_control(p, method="bh"))
    _, _, bonferroni = ks_test(x, y, "bonferroni")
    np.testing.assert_allclose(bonferroni, np.minimum(3 * p, 1))


def test_constant_features_are_not_drift():
    x, y = np.zeros((50, 4)), np.zeros((60, 4))
    x[:, 0] = np.arange(50)
    y[:, 0] = np.arange(60)
    _, p, _ = ks_test(x, y)
    assert list(p[1:]) == [1.0, 1.0, 1.0]


def test_a_sample_from_the_same_gaussian_is_not_flagged():
    ps, verdicts = [], []
    for seed in range(1, 41):
        reference, batch = _gauss(300, seed=1000 + seed), _gauss(300, seed=seed)
        result = drift(reference, batch, permutations=199, seed=seed)
        ps.append(result.mmd_p)
        verdicts.append(result.verdict)
    assert verdicts.count("drift") <= 5  # alpha = 0.05 over both tests: about 2 of 40
    assert stats.kstest(ps, "uniform").pvalue > 0.01  # the p-values spread over [0, 1]


def test_a_mean_shift_is_flagged():
    result = drift(_gauss(300, seed=0), _gauss(300, shift=0.4, seed=1), permutations=199)
    assert result.verdict == "drift" and result.exit_code == 1
    assert result.mmd_p == pytest.approx(1 / 200)
    assert result.drifted_features >= 6  # of the 8 shifted features (power about 0.9 each)


def test_a_shift_in_one_feature_is_found_by_ks():
    batch = _gauss(400, seed=1)
    batch[:, 5] += 0.5
    result = drift(_gauss(400, seed=0), batch, permutations=99)
    assert result.verdict == "drift" and result.top_features[0] == 5


def test_a_layer_s_features():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 2))
    result = drift(_gauss(200), _gauss(200, shift=1.0, seed=1), model=model, layer="1",
                   permutations=99)  # fmt: skip
    assert result.features == 6 and result.space == "features of layer '1'"
    with pytest.raises(ConfigError, match="no layer 'head'"):
        drift(_gauss(50), _gauss(50, seed=1), model=model, layer="head")


def test_shapes_must_agree():
    with pytest.raises(DataError, match="one shape"):
        drift(_gauss(20, d=3), _gauss(20, d=4))


def test_the_command_exits_0_1_and_2(tmp_path, capsys):
    np.savez(tmp_path / "ref.npz", x=_gauss(200).numpy())
    np.savez(tmp_path / "same.npz", x=_gauss(200, seed=3).numpy())
    np.savez(tmp_path / "shifted.npz", x=_gauss(200, shift=0.5, seed=4).numpy())
    np.savez(tmp_path / "wide.npz", x=_gauss(200, d=9).numpy())
    ref = ["drift", "--reference", str(tmp_path / "ref.npz"), "--permutations", "199"]
    assert main([*ref, "--batch", str(tmp_path / "same.npz")]) == 0
    assert main([*ref, "--batch", str(tmp_path / "same.npz"), "--batch",
                 str(tmp_path / "shifted.npz"), "--json", str(tmp_path / "d.json")]) == 1  # fmt: skip
    capsys.readouterr()
    assert main([*ref, "--batch", str(tmp_path / "wide.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "one shape" in err
    # On a layer's features, with the user's model.
    (tmp_path / "m.py").write_text(
        "from torch import nn\ndef make():\n    return nn.Sequential(nn.Linear(8, 4), nn.ReLU())\n"
    )
    torch.manual_seed(0)
    save_weights(nn.Sequential(nn.Linear(8, 4), nn.ReLU()), tmp_path / "m.safetensors")
    layer = ["--features", "0", "--model", f"{tmp_path}/m.py:make", "--weights",
             str(tmp_path / "m.safetensors")]  # fmt: skip
    assert main([*ref, "--batch", str(tmp_path / "shifted.npz"), *layer]) == 1
