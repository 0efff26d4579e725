"""The contract for models that change: task ids reach the model, the optimiser follows the
parameters, regularisers match by name, reset and resume work after the model grew."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from forgetless import ConfigError, train
from forgetless.learner import Learner
from forgetless.models import build_model
from forgetless.runs import load_snapshot, save_snapshot
from forgetless.scenarios import make_stream
from forgetless.state import unpack
from forgetless.strategies import EWC, GSS, SI, Strategy

LOOP = dict(iterations=12, optimizer="adam", lr=0.01, progress=False)


class HeadPerTask(nn.Module):
    """A shared body plus one output bias per task: the smallest model that grows."""

    takes_task_id = True

    def __init__(self, body: nn.Module, outputs: int):
        super().__init__()
        self.body = body
        self.outputs = outputs
        self.heads = nn.ParameterList()

    def add_head(self) -> None:
        self.heads.append(nn.Parameter(torch.zeros(self.outputs)))

    def forward(self, x, t):
        bias = torch.stack(list(self.heads))
        t = torch.as_tensor(t, device=bias.device).clamp(max=len(self.heads) - 1)
        return self.body(x) + bias[t]


class GrowHeads(Strategy):
    """Wraps the model at the first task, then adds a head per task and freezes the old ones."""

    name = "grow-heads"
    needs_task_id = True

    def __init__(self):
        self.heads = 0

    def change_model(self, learner, task):
        if not isinstance(learner.model, HeadPerTask):
            learner.model = HeadPerTask(learner.model, learner.stream.num_outputs)
        for head in learner.model.heads:
            head.requires_grad_(False)
        learner.model.add_head()
        self.heads += 1

    def rebuild(self, learner, state):
        heads = unpack(state)["heads"]
        learner.model = HeadPerTask(learner.model, learner.stream.num_outputs)
        for _ in range(heads):
            learner.model.add_head()
        for head in learner.model.heads[:-1]:
            head.requires_grad_(False)


class GrowHeadsNoRebuild(GrowHeads):
    name = "grow-heads-no-rebuild"

    def rebuild(self, learner, state):
        pass


class Wrapper(nn.Module):
    """The same function under other parameter names (``inner.``), as adapters rename."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


class WrapAtSecondTask(Strategy):
    name = "wrap"

    def change_model(self, learner, task):
        if learner.task_index == 1:
            learner.model = Wrapper(learner.model)


def _stream(protocol="task", tasks=3):
    return make_stream("split-digits", seed=0, protocol=protocol)[:tasks]


def _mlp(stream, seed=0):
    return build_model("mlp", stream.input_shape, stream.num_outputs, hidden=[16], seed=seed)


@pytest.mark.filterwarnings("ignore:the model barely learned:RuntimeWarning")  # 2 steps: on purpose
def test_a_model_that_takes_the_task_id_gets_the_batch_ids_in_training_and_the_task_in_evaluation():
    calls = []

    class Recording(nn.Module):
        takes_task_id = True

        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, x, t):
            calls.append((self.training, t if isinstance(t, int) else t.tolist()))
            return self.body(x)

    stream = _stream(tasks=2)
    train(stream, Recording(_mlp(stream)), "finetune", iterations=2, batch_size=8, progress=False)
    training = [t for mode, t in calls if mode]
    evaluation = {t for mode, t in calls if not mode}
    assert training == [[0] * 8, [0] * 8, [1] * 8, [1] * 8]  # the batch's task ids
    assert evaluation == {0, 1}  # each evaluated task's id


def test_wrong_protocol_pairings_are_clear_errors():
    stream = _stream("class", tasks=2)
    with pytest.raises(ConfigError, match=r"grow-heads needs the task id at test time.*class"):
        train(stream, _mlp(stream), GrowHeads(), **LOOP)
    model = HeadPerTask(_mlp(stream), stream.num_outputs)
    with pytest.raises(ConfigError, match=r"the model .*HeadPerTask.* needs the task id"):
        train(stream, model, "finetune", **LOOP)

    class Router(Strategy):
        name = "router"
        infers_task = True

    train(stream, _mlp(stream), [GrowHeads(), Router()], **LOOP)  # a router lifts the refusal
    task_il = _stream("task", tasks=2)
    with pytest.raises(ConfigError, match="gss calls the model without task ids"):
        train(task_il, _mlp(task_il), [GrowHeads(), GSS(buffer_size=20)], **LOOP)


@pytest.mark.parametrize("reset_optimizer", [True, False])
def test_the_result_records_the_model_size_as_it_grows(reset_optimizer):
    stream = _stream()
    result = train(
        stream, _mlp(stream), GrowHeads(), reset_optimizer=reset_optimizer, seed=0, **LOOP
    )
    assert [s["parameters"] - result.model_size[0]["parameters"] for s in result.model_size] == [
        0,
        stream.num_outputs,
        2 * stream.num_outputs,
    ]


def test_with_one_optimiser_new_parameters_are_trained_and_old_state_carries():
    stream = _stream()
    grow = GrowHeads()
    seen = []
    model = _mlp(stream)
    result = train(
        stream,
        model,
        [grow, _Spy(seen)],
        reset_optimizer=False,
        seed=0,
        **LOOP,
    )
    grown = seen[-1]["model"]
    for k, head in enumerate(grown.heads):
        assert bool(head.abs().sum() > 0), f"head {k} was never trained"
    optimizer = seen[-1]["optimizer"]
    steps = {int(optimizer.state[p]["step"]) for p in grown.body.parameters()}
    assert steps == {3 * LOOP["iterations"]}  # Adam's state carried across the rebuilds
    assert int(optimizer.state[grown.heads[2]]["step"]) == LOOP["iterations"]
    assert grown.heads[0] not in optimizer.state  # frozen: no longer updated
    assert result.model_size[-1]["trainable"] == result.model_size[0]["trainable"]


class _Spy(Strategy):
    name = "spy"

    def __init__(self, seen):
        self._seen = seen

    def after_task(self, learner, task):
        self._seen.append({"model": learner.model, "optimizer": learner.optimizer})

    def state_dict(self):
        return {}

    def load_state_dict(self, state, learner):
        pass


def test_reset_model_restores_initial_values_after_the_model_grew():
    stream = _stream()
    model = _mlp(stream)
    learner = Learner(
        model,
        stream,
        lambda m: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1),
        torch.device("cpu"),
        torch.Generator().manual_seed(0),
    )
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    learner.model = HeadPerTask(model, stream.num_outputs)
    learner.model.add_head()
    with torch.no_grad():
        learner.model.heads[0].fill_(0.5)  # its value when first seen
    learner.record_initial_values()
    with torch.no_grad():
        for p in learner.model.parameters():
            p.add_(1.0)
    learner.reset_model()
    assert torch.equal(learner.model.heads[0], torch.full((stream.num_outputs,), 0.5))
    for name, value in learner.model.body.state_dict().items():
        assert torch.equal(value, initial[name])


def test_ewc_on_a_grown_model_ignores_added_parameters_and_skips_frozen_ones():
    warnings.simplefilter("ignore", RuntimeWarning)
    stream = _stream()
    ewc = EWC(lam=100.0)
    seen = []
    train(stream, _mlp(stream), [GrowHeads(), ewc, _Spy(seen)], seed=0, **LOOP)
    model = seen[-1]["model"]
    names = list(ewc.importance_by_name)
    body = [f"body.{n}" for n, _ in model.body.named_parameters()]
    # Each head got an importance at the end of its own task; the body at every task.
    assert sorted(names) == sorted([*body, "heads.0", "heads.1", "heads.2"])
    learner = Learner(model, stream, lambda m: None, torch.device("cpu"), torch.Generator())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    omega, center = ewc.importance_by_name, dict(zip(names, ewc.center, strict=True))
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    expected = 50.0 * sum((omega[n] * (p - center[n]) ** 2).sum() for n, p in trainable.items())
    expected = expected + 50.0 * ewc._merged.const
    got = ewc.penalty(learner, None, None, None, None)
    torch.testing.assert_close(got, expected)  # heads.0 and heads.1 are frozen: left out


def test_a_wrapped_model_keeps_its_importances_under_the_new_names():
    warnings.simplefilter("ignore", RuntimeWarning)
    stream = _stream()
    plain, wrapped = EWC(lam=1000.0), EWC(lam=1000.0)
    reference = train(stream, _mlp(stream), plain, seed=0, **LOOP)
    result = train(stream, _mlp(stream), [WrapAtSecondTask(), wrapped], seed=0, **LOOP)
    # The wrapper changes no function: a penalty that followed the renamed tensors gives the
    # very same run; one that lost them would be fine-tuning.
    assert result.accuracy_matrix == reference.accuracy_matrix
    assert result.losses == reference.losses
    assert all(name.startswith("inner.") for name in wrapped.importance_by_name)
    assert [o.shape for o in wrapped.importance_sum] == [o.shape for o in plain.importance_sum]


def test_a_named_parameter_that_changed_shape_is_a_clear_error():
    stream = _stream()
    model = _mlp(stream)

    class Grow(Strategy):
        name = "grow-layer"

        def change_model(self, learner, task):
            if learner.task_index == 1:
                layer = learner.model[1]  # Linear(64, 16): now 20 units under the same name
                learner.model[1] = nn.Linear(layer.in_features, 20)
                learner.model[3] = nn.Linear(20, learner.model[3].out_features)

    with pytest.raises(ConfigError, match=r"parameter '1.weight' has shape \(20, 64\).*\(16, 64\)"):
        train(stream, model, [Grow(), EWC(lam=1.0)], **LOOP)


@pytest.mark.parametrize("reset_optimizer", [True, False])
def test_a_grown_model_resumes_from_a_checkpoint_with_the_same_numbers(tmp_path, reset_optimizer):
    warnings.simplefilter("ignore", RuntimeWarning)
    stream = _stream(tasks=4)
    loop = dict(LOOP, reset_optimizer=reset_optimizer, seed=3)
    uninterrupted = train(stream, _mlp(stream, 3), [GrowHeads(), EWC(lam=10.0), SI()], **loop)
    path = tmp_path / "resume.safetensors"

    def keep_second(snapshot):
        if snapshot.task == 1:
            save_snapshot(snapshot, path)

    train(
        stream, _mlp(stream, 3), [GrowHeads(), EWC(lam=10.0), SI()], on_task_end=keep_second, **loop
    )
    resumed = train(
        stream,
        _mlp(stream, 3),
        [GrowHeads(), EWC(lam=10.0), SI()],
        resume=load_snapshot(path),
        **loop,
    )
    assert resumed.accuracy_matrix == uninterrupted.accuracy_matrix
    assert resumed.losses == uninterrupted.losses
    assert resumed.model_size == uninterrupted.model_size


def test_a_strategy_that_grows_without_rebuild_cannot_resume_and_says_why(tmp_path):
    stream = _stream()
    path = tmp_path / "resume.safetensors"

    def keep_first(snapshot):
        if snapshot.task == 0:
            save_snapshot(snapshot, path)

    train(stream, _mlp(stream), GrowHeadsNoRebuild(), on_task_end=keep_first, **LOOP)
    with pytest.raises(ConfigError, match="rebuild its structure"):
        train(stream, _mlp(stream), GrowHeadsNoRebuild(), resume=load_snapshot(path), **LOOP)


def test_a_checkpoint_of_a_penalty_kept_by_position_still_loads():
    warnings.simplefilter("ignore", RuntimeWarning)
    stream = _stream()
    model = _mlp(stream)
    ewc = EWC(lam=100.0)
    train(stream, model, ewc, seed=0, **LOOP)
    learner = Learner(model, stream, lambda m: None, torch.device("cpu"), torch.Generator())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    expected = ewc.penalty(learner, None, None, None, None)
    # The layout of checkpoints written before terms were keyed by name: lists in order.
    merged = ewc._merged
    merged.omega, merged.center = list(merged.omega.values()), list(merged.center.values())
    merged._scratch = None
    restored = EWC(lam=100.0)
    restored.load_state_dict(ewc.state_dict(), learner)
    assert list(restored.importance_by_name) == [n for n, _ in model.named_parameters()]
    torch.testing.assert_close(restored.penalty(learner, None, None, None, None), expected)


class CURLoRAFromSecondTask(Strategy):
    """Adapters from the second task on: the first task trains the whole model."""

    name = "curlora-later"

    def change_model(self, learner, task):
        if learner.task_index == 1:
            self._wrap(learner)

    def rebuild(self, learner, state):
        if learner.task_index >= 1:
            self._wrap(learner)

    @staticmethod
    def _wrap(learner):
        from forgetless.models import adapters

        adapters.wrap(learner.model, "curlora", rank=4, seed=learner.generator.initial_seed())


def test_adapters_from_the_second_task_on_train_alone_keep_ewc_and_resume(tmp_path):
    warnings.simplefilter("ignore", RuntimeWarning)
    stream = _stream(tasks=3)
    loop = dict(LOOP, seed=1, reset_optimizer=False)
    ewc = EWC(lam=10.0)
    result = train(stream, _mlp(stream, 1), [CURLoRAFromSecondTask(), ewc], **loop)
    sizes = result.model_size
    assert sizes[0]["trainable"] == sizes[0]["parameters"]  # the first task: the whole model
    assert 0 < sizes[1]["trainable"] < sizes[0]["parameters"] // 10  # then the adapters' U
    # The first task's importances followed the base weights into their wrappers.
    assert "1.base_layer.weight" in ewc.importance_by_name
    assert "1.weight" not in ewc.importance_by_name
    path = tmp_path / "resume.safetensors"

    def keep_second(snapshot):
        if snapshot.task == 1:
            save_snapshot(snapshot, path)

    strategies = [CURLoRAFromSecondTask(), EWC(lam=10.0)]
    train(stream, _mlp(stream, 1), strategies, on_task_end=keep_second, **loop)
    resumed = train(
        stream,
        _mlp(stream, 1),
        [CURLoRAFromSecondTask(), EWC(lam=10.0)],
        resume=load_snapshot(path),
        **loop,
    )
    assert resumed.accuracy_matrix == result.accuracy_matrix
    assert resumed.losses == result.losses
