"""Rehearsal on the digits: replay, DER and DER++ lift class-IL accuracy, A-GEM projects."""

import pytest
import torch

from forgetless import ConfigError, train
from forgetless.experiment import run
from forgetless.models import build_model
from forgetless.scenarios import make_stream
from forgetless.strategies import STRATEGIES, Strategy
from forgetless.strategies.agem import AGEM
from forgetless.strategies.der import DER, DERPP
from forgetless.strategies.replay import Replay

# The settings of test_engine.py: each task is learnt almost perfectly, then overwritten.
FIT = dict(epochs=10, batch_size=32, lr=0.1, progress=False)


def fit(strategy, protocol="class", tasks=None, seed=0, **options):
    stream = make_stream("split-digits", protocol=protocol, seed=seed)
    stream = stream if tasks is None else stream[:tasks]
    model = build_model("mlp", stream.input_shape, stream.num_outputs, hidden=[64, 64], seed=seed)
    return train(stream, model, strategy, seed=seed, **{**FIT, **options})


@pytest.fixture(scope="module")
def finetune():
    return {p: fit("finetune", p).metrics for p in ("class", "task")}


def test_replay_lifts_class_incremental_accuracy_far_above_finetuning(finetune):
    replay = Replay(buffer_size=200)
    result = fit(replay)
    assert finetune["class"]["acc"] < 0.3
    assert result.metrics["acc"] > 0.6
    assert result.metrics["bwt"] > finetune["class"]["bwt"] + 0.5
    # Only the incoming examples were offered to the buffer, each once per epoch.
    stream = make_stream("split-digits")
    assert replay.buffer.seen == FIT["epochs"] * sum(len(task.train) for task in stream)
    assert len(replay.buffer) == 200
    assert set(replay.buffer.t.tolist()) == set(range(5))  # every task is represented


class BufferProbe(Strategy):
    """Records, for each task, the task ids in the replay buffer when the task starts and at
    its end, and the task ids of every replayed row."""

    name = "buffer-probe"

    def __init__(self, replay: Replay):
        self.replay = replay
        self.at_start, self.at_end, self.replayed = [], [], []

    def before_task(self, learner, task):
        self.replayed.append(set())
        if learner.task_index > 0:  # the buffer is made by replay's first before_task
            self.at_start.append(self._tasks())

    def batch(self, learner, x, y, t):
        self.replayed[-1] |= set(t[learner.new_examples :].tolist())
        return x, y, t

    def after_task(self, learner, task):
        self.at_end.append(self._tasks())

    def _tasks(self):
        buffer = self.replay.buffer
        return buffer.t[: len(buffer)].bincount(minlength=5).tolist()


def balanced(capacity: int, groups: int) -> list[int]:
    """Equal slots per group, the remainder one each to some: sorted, as a multiset."""
    share, extra = divmod(capacity, groups)
    return sorted([share + 1] * extra + [share] * (groups - extra))


@pytest.mark.parametrize("policy", ["reservoir", "task-balanced", "class-balanced"])
@pytest.mark.parametrize("update", ["step", "task"])
def test_each_buffer_policy_keeps_its_composition_and_reduces_forgetting(finetune, policy, update):
    replay = Replay(buffer_size=200, buffer_policy=policy, buffer_update=update)
    probe = BufferProbe(replay)
    result = fit([replay, probe])
    assert result.metrics["bwt"] > finetune["class"]["bwt"] + 0.4
    assert result.metrics["acc"] > finetune["class"]["acc"] + 0.4
    stream = make_stream("split-digits")
    for k, counts in enumerate(probe.at_end):
        held = [c for c in counts if c]
        assert sum(held) == 200 and counts[k + 1 :] == [0] * (4 - k)
        if policy == "task-balanced":
            assert sorted(held) == balanced(200, k + 1)
    if policy == "class-balanced":
        labels = replay.buffer.y.bincount(minlength=10).tolist()
        assert labels == [20] * 10  # every class of the five tasks, exactly
    if update == "task":
        # A task trains beside past tasks only, and the buffer changes at task ends only.
        assert probe.replayed[0] == set()
        for k in range(1, 5):
            assert probe.replayed[k] == set(range(k))
            assert probe.at_start[k - 1] == probe.at_end[k - 1]
        assert replay.buffer.seen == sum(len(task.train) for task in stream)
    else:
        assert all(k in probe.replayed[k] for k in range(5))  # the current task replayed too
        assert replay.buffer.seen == FIT["epochs"] * sum(len(task.train) for task in stream)


@pytest.mark.filterwarnings("ignore:the model barely learned")  # only the buffer counts here
def test_class_balanced_task_updates_split_the_buffer_over_the_classes_seen():
    replay = Replay(buffer_size=200, buffer_policy="class-balanced", buffer_update="task")
    sizes = []

    class Counts(Strategy):
        name = "counts"

        def after_task(self, learner, task):
            counts = replay.buffer.y[: len(replay.buffer)].bincount()
            sizes.append(sorted(c for c in counts.tolist() if c))

    fit([replay, Counts()], epochs=1)
    assert sizes == [balanced(200, 2 * (k + 1)) for k in range(5)]


def test_passes_draw_every_stored_example_once_per_pass():
    replay = Replay(buffer_size=50, buffer_update="task", replay_draw="passes")
    drawn = []

    class Draws(Strategy):
        name = "draws"

        def batch(self, learner, x, y, t):
            if learner.task_index == 1:
                drawn.append(len(x) - learner.new_examples)
            return x, y, t

    original = replay.sample
    slots = []
    replay.sample = lambda learner: slots.append(original(learner)) or slots[-1]
    fit([replay, Draws()], tasks=2, batch_size=16, epochs=2)
    # A full batch of 16 beside each new batch, the last of each pass of 50 holding the 2 left.
    assert drawn[:8] == [16, 16, 16, 2, 16, 16, 16, 2]
    assert sorted(torch.cat(slots[:4]).tolist()) == list(range(50))


@pytest.mark.parametrize(
    ("name", "value"),
    [("buffer_policy", "balanced"), ("buffer_update", "epoch"), ("replay_draw", "cycled")],
)
def test_unknown_buffer_options_are_clear_errors(name, value):
    with pytest.raises(ConfigError, match=f"replay: {name} must be one of"):
        Replay(**{name: value})
    with pytest.raises(ConfigError, match=f"{name} must be one of"):
        run(strategy="replay", strategy_params={name: value}, epochs=1, progress=False)


@pytest.mark.parametrize("strategy", [DER(buffer_size=200), DERPP(buffer_size=200)])
def test_dark_experience_replay_beats_finetuning(finetune, strategy):
    result = fit(strategy)
    assert result.metrics["acc"] > finetune["class"]["acc"] + 0.3
    assert strategy.buffer.logits is not None and len(strategy.buffer) == 200


def test_der_stores_raw_logits_under_task_incremental_learning():
    der = DERPP(buffer_size=50)
    fit(der, protocol="task", tasks=2, epochs=1)
    stored = der.buffer.logits[: len(der.buffer)]
    # Task-IL training masks the logits outside each task with -inf; DER keeps the raw ones.
    assert torch.isfinite(stored).all()
    assert (stored != 0).all()


def test_agem_does_no_harm_and_reduces_forgetting_in_task_incremental(finetune):
    agem = AGEM(buffer_size=200)
    result = fit(agem, protocol="task")
    assert result.metrics["acc"] >= finetune["task"]["acc"] - 0.01
    assert result.metrics["bwt"] > finetune["task"]["bwt"]
    assert agem.projections > 0
    # An equal share per task, filled at each task's end.
    assert len(agem.buffer) == 200 and agem.buffer.t.bincount().tolist() == [40] * 5


class GradientProbe(Strategy):
    """Records the flattened gradient each time its ``after_backward`` runs."""

    name = "probe"

    def __init__(self):
        self.gradients = []

    def after_backward(self, learner):
        self.gradients.append(torch.cat([p.grad.flatten() for p in learner.model.parameters()]))


class RecordingAGEM(AGEM):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.references = []

    def reference_gradient(self, learner, params):
        reference = super().reference_gradient(learner, params)
        self.references.append(torch.cat([r.flatten() for r in reference]))
        return reference


def test_agem_projected_gradient_never_conflicts_with_the_memory():
    before, agem, after = GradientProbe(), RecordingAGEM(buffer_size=100), GradientProbe()
    steps = 40
    fit([before, agem, after], tasks=2, iterations=steps, epochs=1)
    assert len(agem.references) == steps  # the memory is empty during the first task
    conflicts = 0
    for g, r, applied in zip(
        before.gradients[steps:], agem.references, after.gradients[steps:], strict=True
    ):
        tolerance = 1e-5 * applied.norm() * r.norm()
        assert applied @ r >= -tolerance
        if g @ r < 0:
            conflicts += 1
            assert abs(applied @ r) <= tolerance  # projected onto the plane g . g_ref = 0
        else:
            assert torch.equal(applied, g)
    assert conflicts == agem.projections > 0


@pytest.mark.parametrize("strategy", [Replay(), AGEM(), DER(), DERPP()], ids=lambda s: s.name)
def test_retention_policy_refuses_rehearsal(strategy):
    with pytest.raises(ConfigError, match="data-retention policy"):
        fit(strategy, retain_raw_data=False)


@pytest.mark.parametrize("name", ["replay", "agem", "der", "derpp"])
def test_retention_policy_refuses_rehearsal_by_name(name):
    assert STRATEGIES[name].stores_raw_data
    with pytest.raises(ConfigError, match="data-retention policy"):
        run(strategy=name, retain_raw_data=False, epochs=1, progress=False)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Replay(buffer_size=0), "buffer_size must be a positive integer"),
        (lambda: Replay(buffer_size=2.5), "buffer_size must be a positive integer"),
        (lambda: Replay(replay_batch_size=-1), "replay_batch_size must be a positive integer"),
        (lambda: AGEM(buffer_size=0), "buffer_size must be a positive integer"),
        (lambda: DER(alpha=-0.1), r"alpha must be in \[0, inf\)"),
        (lambda: DER(buffer_size=-5), "buffer_size must be a positive integer"),
        (lambda: DERPP(alpha=-1), r"alpha must be in \[0, inf\)"),
        (lambda: DERPP(beta=-0.5), r"beta must be in \[0, inf\)"),
        (lambda: DERPP(beta=float("nan")), "beta must be in"),
    ],
)
def test_invalid_parameters_are_clear_errors(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_agem_needs_room_for_every_task():
    with pytest.raises(ConfigError, match="at least the number of tasks"):
        fit(AGEM(buffer_size=3), epochs=1)


def test_parameters_from_the_command_line_are_converted():
    assert Replay(buffer_size="500", replay_batch_size="64").params() == {
        "buffer_size": 500,
        "replay_batch_size": 64,
        "store_new": True,
        "buffer_policy": "reservoir",
        "buffer_update": "step",
        "replay_draw": "uniform",
    }
    assert DERPP(alpha="0.2", beta="1").params() == {
        "buffer_size": 200,
        "replay_batch_size": None,
        "alpha": 0.2,
        "beta": 1.0,
    }
