"""A trained start (train(trained_tasks=k)): the learnt tasks are measured, not trained; the
strategies build their state from them (EWC's Fisher, replay's buffer) without a step on them;
and that state protects them where fine-tuning forgets."""

import copy
import warnings

import pytest
import torch

from forgetless import ConfigError, train
from forgetless.experiment import RunConfig, config_hash, run
from forgetless.models import build_model
from forgetless.production.loading import save_weights
from forgetless.scenarios import make_stream
from forgetless.strategies import EWC, Replay

# Rotated digits, two tasks (0 and a large rotation), one 10-way head: fine-tuning on the
# rotation keeps about half of the upright accuracy (0.50 at seed 0), EWC at lam 1e3 0.90.
FIT = dict(epochs=10, batch_size=32, optimizer="adam", lr=0.003, progress=False)


@pytest.fixture(scope="module")
def learnt():
    """The rotated-digits stream and a model trained on its first task only."""
    stream = make_stream("rotated-digits", seed=0, n_tasks=2)
    model = build_model("mlp", stream.input_shape, stream.num_outputs, hidden=[64, 64], seed=0)
    train(stream[:1], model, "finetune", seed=0, **FIT)
    return stream, model


def test_learnt_tasks_are_measured_not_trained(learnt):
    stream, trained = learnt
    model = copy.deepcopy(trained)
    given = {k: v.clone() for k, v in model.state_dict().items()}
    after_first = {}

    def keep(snapshot):
        if snapshot.task == 0:
            after_first.update({k: v.clone() for k, v in snapshot.model.items()})

    result = train(stream, model, "finetune", seed=0, trained_tasks=1, on_task_end=keep, **FIT)
    for name, value in given.items():  # no step on the learnt task
        assert torch.equal(after_first[name], value), name
    assert result.accuracy_matrix[0] == result.baseline  # its row is the given model's
    assert result.baseline[0] > 0.9  # the given model knows task 1 ...
    assert result.accuracy_matrix[1][1] > 0.85  # ... and the second task is trained
    assert result.accuracy_matrix[1][0] < 0.7  # fine-tuning forgets the first
    assert result.config["trained_tasks"] == 1
    assert not any(torch.equal(model.state_dict()[k], v) for k, v in given.items())


def test_ewc_from_a_learnt_task_protects_it(learnt):
    stream, trained = learnt
    finetune = train(stream, copy.deepcopy(trained), "finetune", seed=0, trained_tasks=1, **FIT)
    ewc = EWC(lam=1e3)
    anchors = []

    def after(snapshot):  # the penalty as it stands after the learnt task
        if snapshot.task == 0:
            anchors.extend(c.clone() for c in ewc.center)
            assert all(float(f.sum()) > 0 for f in ewc.importance_sum)

    protected = train(
        stream, copy.deepcopy(trained), ewc, seed=0, trained_tasks=1, on_task_end=after, **FIT
    )
    # The Fisher was measured on the learnt task, anchored at the given weights.
    for anchor, weight in zip(anchors, trained.parameters(), strict=True):
        assert torch.equal(anchor, weight.detach())
    old_finetune, old_ewc = finetune.accuracy_matrix[1][0], protected.accuracy_matrix[1][0]
    assert old_ewc - old_finetune > 0.2, (old_finetune, old_ewc)
    assert protected.accuracy_matrix[1][1] > 0.8  # and it still learns the rotation


def test_replay_remembers_a_learnt_task_without_training_on_it(learnt):
    stream, trained = learnt
    replay = Replay(buffer_size=100, store_new=False)
    result = train(stream, copy.deepcopy(trained), replay, seed=0, trained_tasks=1, **FIT)
    buffer = replay.buffer
    assert len(buffer) == 100 and buffer.seen == len(stream.tasks[0].train)
    assert torch.all(buffer.t[:100] == 0)  # only the learnt task, kept as it was
    # Each stored example is one of the learnt task's training examples.
    train_x = stream.tasks[0].train.inputs().flatten(1)
    stored = buffer.x[:100].flatten(1)
    assert torch.cdist(stored, train_x).min(dim=1).values.max() == 0
    finetune = train(stream, copy.deepcopy(trained), "finetune", seed=0, trained_tasks=1, **FIT)
    assert result.accuracy_matrix[1][0] - finetune.accuracy_matrix[1][0] > 0.15


def test_replay_keeps_storing_new_examples_by_default(learnt):
    stream, trained = learnt
    replay = Replay(buffer_size=50)
    train(stream, copy.deepcopy(trained), replay, seed=0, trained_tasks=1, **FIT)
    assert set(replay.buffer.t[:50].tolist()) == {0, 1}


def test_si_warns_that_a_learnt_task_has_no_path_integral(learnt):
    stream, trained = learnt
    with pytest.warns(RuntimeWarning, match="path integral"):
        si = train(stream, copy.deepcopy(trained), "si", seed=0, trained_tasks=1, **FIT)
    finetune = train(stream, copy.deepcopy(trained), "finetune", seed=0, trained_tasks=1, **FIT)
    assert si.accuracy_matrix == finetune.accuracy_matrix  # no importance: exactly fine-tuning


@pytest.mark.parametrize("name", ["gss", "icarl", "joint", "pnn", "packnet", "hat", "hypermask"])
def test_strategies_that_cannot_start_trained_say_why(name):
    protocol = "task" if name in ("pnn", "packnet", "hat", "hypermask") else None
    stream = make_stream("split-digits", seed=0, protocol=protocol)[:2]
    model = build_model("mlp", stream.input_shape, stream.num_outputs, hidden=[8], seed=0)
    with pytest.raises(ConfigError, match="cannot start from a trained model"):
        train(stream, model, name, trained_tasks=1, progress=False)


@pytest.mark.parametrize("value", [-1, 3, 1.0, True])
def test_trained_tasks_must_fit_the_stream(value):
    stream = make_stream("split-digits", seed=0)[:2]
    model = build_model("mlp", stream.input_shape, stream.num_outputs, hidden=[8], seed=0)
    with pytest.raises(ConfigError, match="trained_tasks"):
        train(stream, model, trained_tasks=value, progress=False)


def test_the_barely_learned_warning_does_not_call_a_given_model_random(learnt):
    stream, trained = learnt
    with pytest.warns(RuntimeWarning, match="barely learned") as caught:
        train(stream, copy.deepcopy(trained), seed=0, trained_tasks=1, lr=1e-6, progress=False)
    message = str(caught[0].message)
    assert "random initialisation" not in message and "the model as given" in message


def test_the_barely_learned_warning_names_weights_given_in_a_config_as_given(tmp_path, learnt):
    _, trained = learnt
    weights = save_weights(trained, tmp_path / "old.safetensors")
    common = dict(scenario="rotated-digits", n_tasks=2, hidden=[64, 64], iterations=2, lr=1e-6)
    with pytest.warns(RuntimeWarning, match="barely learned") as caught:
        run(RunConfig(weights=str(weights), progress=False, **common))
    assert "the model as given" in str(caught[0].message)
    assert "random" not in str(caught[0].message)
    with pytest.warns(RuntimeWarning, match="barely learned") as caught:
        run(RunConfig(progress=False, **common))  # drawn by the run itself: random
    assert "the randomly initialised model" in str(caught[0].message)


def test_a_run_config_starts_from_stored_weights(tmp_path, learnt):
    _, trained = learnt
    weights = save_weights(trained, tmp_path / "old.safetensors")
    config = RunConfig(scenario="rotated-digits", n_tasks=2, hidden=[64, 64], weights=str(weights),
                       trained_tasks=1, **FIT)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = run(config)
    assert result.accuracy_matrix[0] == result.baseline
    assert result.baseline[0] > 0.9  # the stored weights, not a fresh draw
    # The hash covers the weights' contents: other weights, another run.
    first = config_hash(config)
    changed = {k: v + 1 for k, v in trained.state_dict().items()}
    save_weights(changed, weights)
    assert config_hash(config) != first
    assert config_hash(RunConfig()) == config_hash(RunConfig(trained_tasks=0))
