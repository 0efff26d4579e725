"""The user's own arrays and datasets, and the synthetic competing tasks."""

import numpy as np
import pytest
import torch

from forgetless import train
from forgetless.data import from_arrays, from_dataset, two_task_binary
from forgetless.errors import ConfigError
from forgetless.scenarios import sequence, split


def test_from_arrays_feeds_a_scenario_and_the_loop():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + 2 * (x[:, 1] > 0).astype(int)
    source = from_arrays(x[:300], y[:300], x[300:], y[300:], name="mine")
    assert source.num_classes == 4 and source.train.shape == (6,)
    stream = split(source, n_tasks=2, protocol="task")
    model = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    result = train(stream, model, epochs=30, lr=0.1, batch_size=32, progress=False)
    assert min(result.accuracy_matrix[1]) > 0.7


def test_from_dataset_materialises_once():
    x, y = torch.randn(50, 3, 4, 4), torch.randint(0, 5, (50,))
    ds = torch.utils.data.TensorDataset(x, y)
    source = from_dataset(ds, ds, name="tensors")
    assert torch.equal(source.train.x, x) and torch.equal(source.train.y, y)


def test_bad_user_data_is_a_clear_error():
    with pytest.raises(ConfigError, match="one label per input"):
        from_arrays(np.zeros((5, 2)), np.zeros(4), np.zeros((2, 2)), np.zeros(2))
    with pytest.raises(ConfigError, match="integer class labels"):
        from_arrays(np.zeros((2, 2)), [0.5, 1], np.zeros((2, 2)), [0, 1])
    with pytest.raises(ConfigError, match=r"labels 0\.\.C-1"):
        from_arrays(np.zeros((2, 2)), [-1, 1], np.zeros((2, 2)), [0, 1])


def test_two_task_binary_rules_disagree_on_the_stated_fraction():
    a, b = two_task_binary(seed=0, n_train=20000, n_test=10, angle=90, noise=0.0)
    assert torch.equal(a.train.x, b.train.x) is False  # independent draws
    # Same generator rules applied to A's inputs: disagreement ~ angle / 180.
    a60, b60 = two_task_binary(seed=0, n_train=20000, n_test=10, angle=60, noise=0.0)
    for (ta, tb), angle in (((a, b), 90), ((a60, b60), 60)):
        # Fit each rule's direction from its labels, then count disagreement on A's inputs.
        wa = torch.linalg.lstsq(ta.train.x, ta.train.y.float() - 0.5).solution
        wb = torch.linalg.lstsq(tb.train.x, tb.train.y.float() - 0.5).solution
        cos = torch.nn.functional.cosine_similarity(wa, wb, dim=0).item()
        assert np.degrees(np.arccos(cos)) == pytest.approx(angle, abs=3)


def test_two_task_binary_noise_and_bounds():
    a, _ = two_task_binary(seed=1, n_train=20000, n_test=10, noise=0.1)
    w = torch.linalg.lstsq(a.train.x, a.train.y.float() - 0.5).solution
    agree = ((a.train.x @ w > 0).long() == a.train.y).float().mean().item()
    assert agree == pytest.approx(0.9, abs=0.02)
    with pytest.raises(ConfigError, match="noise"):
        two_task_binary(noise=0.5)
    stream = sequence(two_task_binary(seed=0), "domain")
    assert len(stream) == 2 and stream.num_outputs == 2
