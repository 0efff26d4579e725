"""Scenario builders on the bundled digits: labels, units, determinism, protocols."""

import pytest
import torch

from forgetless import data
from forgetless.errors import ConfigError
from forgetless.scenarios import Protocol, make_stream, permuted, rotated, sequence, split
from forgetless.scenarios.builders import standardized, training_statistics


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def test_split_deals_disjoint_classes_in_seeded_order(digits):
    stream = split(digits, n_tasks=5, protocol="class", seed=3)
    classes = [set(t.train.y.unique().tolist()) for t in stream]
    assert all(len(c) == 2 for c in classes)
    assert set().union(*classes) == set(range(10))
    assert sum(len(t.train) for t in stream) == len(digits.train)
    order = [c for t in stream for c in t.units]
    assert order == torch.randperm(10, generator=torch.Generator().manual_seed(3)).tolist()
    assert split(digits, 5, "class", seed=3).task_names == stream.task_names
    assert split(digits, 5, "class", seed=4).task_names != stream.task_names


def test_split_keeps_inputs_with_their_labels(digits):
    stream = split(digits, n_tasks=5, protocol="class", class_order=list(range(10)))
    first = stream[0]
    keep = digits.train.y < 2
    assert torch.equal(first.train.x, digits.train.x[keep])
    assert torch.equal(first.train.y, digits.train.y[keep])


def test_protocols_assign_units(digits):
    task_il = split(digits, 5, "task", class_order=list(range(10)))
    mask = task_il.output_mask()
    assert mask.shape == (5, 10) and mask.sum(dim=1).tolist() == [2] * 5
    assert mask[1].nonzero().flatten().tolist() == [2, 3]
    domain = split(digits, 5, "domain", class_order=list(range(10)))
    assert domain.num_outputs == 2 and domain.output_mask() is None
    assert set(domain[3].train.y.unique().tolist()) == {0, 1}


def test_domain_protocol_with_uneven_tasks_is_a_clear_error(digits):
    with pytest.raises(ConfigError, match="domain-incremental protocol needs the same classes"):
        split(digits, n_tasks=3, protocol="domain")


def test_bad_class_order_and_task_count(digits):
    with pytest.raises(ConfigError, match="distinct classes"):
        split(digits, 2, class_order=[0, 0, 1])
    with pytest.raises(ConfigError, match="more than the 10 classes"):
        split(digits, 11)
    with pytest.raises(ConfigError, match="unknown protocol"):
        split(digits, 5, protocol="sideways")


def test_permuted_tasks_shuffle_pixels_with_fixed_permutations(digits):
    stream = permuted(digits, n_tasks=3, seed=0)
    assert torch.equal(stream[0].train.x, digits.train.x)
    flat0 = stream[0].train.x.flatten(1)
    flat2 = stream[2].train.x.flatten(1)
    assert not torch.equal(flat0, flat2)
    # The same permutation for every image of a task: sorted pixel values are unchanged.
    assert torch.equal(flat0.sort(dim=1).values, flat2.sort(dim=1).values)
    perm_test = permuted(digits, n_tasks=3, seed=0)[2].test.x.flatten(1)
    assert torch.equal(perm_test, permuted(digits, n_tasks=3, seed=0)[2].test.x.flatten(1))
    assert not torch.equal(perm_test, permuted(digits, n_tasks=3, seed=1)[2].test.x.flatten(1))


def test_permuted_protocols(digits):
    assert permuted(digits, 3, "domain").num_outputs == 10
    task_il = permuted(digits, 3, "task")
    assert task_il.num_outputs == 30
    assert task_il[2].units == tuple(range(20, 30))
    assert int(task_il[2].train.y.min()) >= 20


def test_rotated_zero_is_identity_and_rotation_moves_mass(digits):
    stream = rotated(digits, angles=[0, 90, 180])
    assert torch.equal(stream[0].train.x, digits.train.x)
    img = digits.train.x[:50].float()
    turned = stream[2].train.x[:50].float()
    # 180 degrees on an even grid is an exact flip of both axes.
    assert torch.allclose(turned, img.flip(-1).flip(-2), atol=1)
    quarter = stream[1].train.x[:50].float()
    assert torch.allclose(quarter, torch.rot90(img, k=1, dims=(-2, -1)), atol=1) or torch.allclose(
        quarter, torch.rot90(img, k=-1, dims=(-2, -1)), atol=1
    )


def test_sequence_of_sources_shares_or_separates_outputs():
    a, b = data.two_task_binary(seed=0)
    assert sequence([a, b], "domain").num_outputs == 2
    cls = sequence([a, b], "class")
    assert cls.num_outputs == 4 and set(cls[1].train.y.unique().tolist()) == {2, 3}


def test_stream_is_sliceable_and_printable(digits):
    stream = make_stream("split-digits", seed=0)
    head = stream[:3]
    assert len(head) == 3 and head.tasks == stream.tasks[:3]
    assert head.protocol is Protocol.CLASS
    text = repr(stream)
    assert "split-digits" in text and "protocol=class" in text and text.count("\n") == 5


def test_presets_errors():
    with pytest.raises(ConfigError, match="did you mean 'split-digits'"):
        make_stream("split-digit")
    with pytest.raises(ConfigError, match="exactly 2 tasks"):
        make_stream("two-task-binary", n_tasks=3)
    with pytest.raises(ConfigError, match="class order"):
        make_stream("permuted-digits", class_order=[1, 0])


def test_digits_read_directly_equal_scikit_learns_loader():
    from sklearn.datasets import load_digits

    from forgetless.data.digits import _read_bundled

    images, labels = _read_bundled()
    reference = load_digits()
    assert images.shape == (1797, 1, 8, 8)
    assert (images[:, 0] == reference.images).all() and (labels == reference.target).all()


def test_standardized_streams_have_zero_mean_unit_std_inputs_without_copying_them():
    plain = make_stream("split-digits")
    stream = make_stream("split-digits", standardize="train")
    pixels = torch.cat([task.train.inputs() for task in plain]).double()
    mean, std = pixels.mean().item(), pixels.std(unbiased=False).item()
    assert training_statistics(plain) == pytest.approx((mean, std), rel=1e-12)
    inputs = torch.cat([task.train.inputs() for task in stream]).double()
    assert inputs.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert inputs.std(unbiased=False).item() == pytest.approx(1.0, rel=1e-6)
    for before, after, shared in zip(plain, stream, standardized(plain, mean, std), strict=True):
        assert shared.train.x is before.train.x and shared.test.x is before.test.x  # no copy
        assert torch.equal(shared.test.inputs(), after.test.inputs())
        expected = (before.test.inputs() - mean) / std
        assert torch.allclose(after.test.inputs(), expected, atol=1e-5)
        assert torch.equal(after.train.y, before.train.y)
    # Given numbers, and a float input reading (which must not change the stored floats).
    given = make_stream("split-digits", standardize="0.5,0.25")
    assert torch.allclose(
        given[0].train.inputs(), (plain[0].train.inputs() - 0.5) / 0.25, atol=1e-6
    )
    floats = data.ArraySet(torch.tensor([[1.0, 3.0]]), torch.tensor([0]))
    assert floats.standardized(2.0, 0.5).inputs().tolist() == [[-2.0, 2.0]]
    assert floats.x.tolist() == [[1.0, 3.0]]


def test_standardize_errors_are_clear():
    with pytest.raises(ConfigError, match="split-digits has no published input statistics"):
        make_stream("split-digits", standardize="dataset")
    for bad in ("zscore", "0.1", "0.1,0", "0.1,nan"):
        with pytest.raises(ConfigError, match="standardize"):
            make_stream("split-digits", standardize=bad)
    with pytest.raises(ConfigError, match="token ids cannot be standardised"):
        make_stream("text", standardize="train", data_dir=".")


def test_standardize_is_recorded_in_the_run_config_and_reaches_the_model():
    from forgetless.experiment import RunConfig, config_hash, run

    config = RunConfig(standardize="0.3,0.4", epochs=1, iterations=2, progress=False)
    assert config.standardize == "0.3,0.4"
    result = run(config)
    assert result.config["standardize"] == "0.3,0.4"
    assert config_hash(config) != config_hash(RunConfig(epochs=1, iterations=2, progress=False))
    assert RunConfig(standardize="none").standardize is None
