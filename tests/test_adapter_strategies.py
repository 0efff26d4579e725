"""Adapters in a stream: the lora, curlora, olora and head strategies, alone and in hybrids."""

from __future__ import annotations

import warnings

import pytest
import torch
from safetensors.torch import load_file

from forgetless import ConfigError, train
from forgetless.data.text import from_strings
from forgetless.experiment import RunConfig, run
from forgetless.models import adapters, build_model
from forgetless.models.adapters import TaskAdapters
from forgetless.runs import RunStore, load_snapshot, save_snapshot
from forgetless.scenarios import make_stream, text
from forgetless.strategies import EWC, Strategy, make_strategies

try:
    import peft  # noqa: F401

    HAS_PEFT = True
except ImportError:
    HAS_PEFT = False

needs_peft = pytest.mark.skipif(
    not HAS_PEFT, reason="lora goes through peft (forgetless[adapters])"
)
ADAPTERS = [pytest.param("lora", marks=needs_peft), "curlora"]
LOOP = dict(iterations=40, batch_size=32, optimizer="adam", lr=3e-3, progress=False)


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # short runs may learn little
        yield


def digits(protocol="task", tasks=3):
    return make_stream("split-digits", seed=0, protocol=protocol)[:tasks]


def mlp(stream, seed=0):
    return build_model("mlp", stream.input_shape, stream.num_outputs, hidden=[32], seed=seed)


class Probe(Strategy):
    """Records, per task, which parameters received gradients and the base weights at the end."""

    name = "probe"

    def __init__(self):
        self.graded: dict[int, set[str]] = {}
        self.trainable: dict[int, set[str]] = {}
        self.weights: dict[int, dict[str, torch.Tensor]] = {}
        self.adapters: dict[int, set[str]] = {}
        self.model = None

    def batch(self, learner, x, y, t):
        for p in learner.model.parameters():  # a frozen parameter keeps the last grad it had
            p.grad = None
        return x, y, t

    def after_backward(self, learner):
        names = {n for n, p in learner.model.named_parameters() if p.grad is not None}
        self.graded.setdefault(learner.task_index, set()).update(names)

    def after_task(self, learner, task):
        model = self.model = learner.model
        self.trainable[learner.task_index] = {
            n for n, p in model.named_parameters() if p.requires_grad
        }
        own = {id(p) for p in adapters.adapter_parameters(model)}
        self.adapters[learner.task_index] = adapter_names(model)
        self.weights[learner.task_index] = {
            _plain(n): p.detach().clone() for n, p in model.named_parameters() if id(p) not in own
        }


def _plain(name: str) -> str:
    """A base weight's name as in the unwrapped model (``body.1.base_layer.weight`` -> ``1.weight``)."""
    return name.removeprefix("body.").replace("base_layer.", "")


def adapter_names(model):
    own = {id(p) for p in adapters.adapter_parameters(model)}
    return {n for n, p in model.named_parameters() if id(p) in own}


# --- which parameters train -----------------------------------------------------------------


@pytest.mark.parametrize("method", ADAPTERS)
@pytest.mark.parametrize("policy", ["continue", "per-task", "merge"])
def test_after_the_first_task_only_adapters_train_and_the_backbone_is_bit_identical(method, policy):
    stream = digits()
    model = mlp(stream)
    probe = Probe()
    strategy = make_strategies(method, {"policy": policy, "rank": 4})[0]
    result = train(stream, model, [strategy, probe], seed=0, **LOOP)
    # The first task: the whole model (every parameter of the plain MLP).
    assert probe.graded[0] == probe.trainable[0] == {n for n, _ in mlp(stream).named_parameters()}
    for k in (1, 2):  # then the adapters alone
        assert probe.graded[k] == probe.trainable[k] == probe.adapters[k] != set()
    sizes = result.model_size
    assert sizes[1]["trainable"] == sizes[2]["trainable"] < sizes[0]["parameters"] // 2
    if policy == "merge":
        # the second task's adapter went into the weights: they moved, by the adapter only
        assert any(not torch.equal(probe.weights[2][n], w) for n, w in probe.weights[0].items())
    else:
        for k in (1, 2):  # frozen weights did not move by a bit
            for n, w in probe.weights[0].items():
                assert torch.equal(probe.weights[k][n], w), (k, n)
    R = result.accuracy_matrix
    if policy == "per-task":
        # each task answers with its own adapter, which nothing learnt later changes
        assert all(R[2][j] == R[j][j] for j in range(3))
        assert result.strategy_reports[method]["adapters"] == 2
    assert R[2][2] > 0.6  # the last task was learnt through the adapter


def test_per_task_adapters_answer_each_task_with_its_own_values():
    stream = digits()
    model = mlp(stream)
    strategy = make_strategies("curlora", {"policy": "per-task", "rank": 4})[0]
    probe = Probe()
    train(stream, model, [strategy, probe], seed=0, **LOOP)
    wrapped = probe.model
    assert isinstance(wrapped, TaskAdapters) and wrapped.body is model
    x = stream.tasks[0].test.inputs(torch.arange(16))
    with torch.no_grad():
        base = build_model("mlp", stream.input_shape, stream.num_outputs, hidden=[32])
        plain = {_plain(n): v for n, v in model.state_dict().items() if "base_layer" in n}
        base.load_state_dict(plain)
        # task 0 (learnt before the adapters) is the base model alone, bit for bit
        assert torch.equal(wrapped(x, 0), base(x))
        # a batch mixing tasks gives each row its own task's answer
        t = torch.tensor([0, 1, 2, 1] * 4)
        mixed = wrapped(x, t)
        for task in range(3):
            rows = t == task
            torch.testing.assert_close(mixed[rows], wrapped(x[rows], task), rtol=0, atol=0)
        assert not torch.equal(wrapped(x, 1), wrapped(x, 2))


def test_head_trains_the_output_layer_alone_and_keeps_the_backbone():
    stream = digits()
    model = mlp(stream)
    probe = Probe()
    result = train(stream, model, ["head", probe], seed=0, **LOOP)
    assert probe.graded[1] == probe.graded[2] == {"3.weight", "3.bias"}
    for n, w in probe.weights[0].items():
        if not n.startswith("3."):
            assert torch.equal(probe.weights[2][n], w)
    R = result.accuracy_matrix
    # task-IL: each task's units are its head, untouched by later tasks
    assert all(R[2][j] == R[j][j] for j in range(3))
    assert result.strategy_reports["head"]["head"] == "3"


def test_options_are_checked():
    with pytest.raises(ConfigError, match="policy must be one of"):
        make_strategies("lora", {"policy": "sometimes"})
    with pytest.raises(ConfigError, match="rank"):
        make_strategies("curlora", {"rank": 0})
    with pytest.raises(ConfigError, match="needs the task id"):
        train(
            digits("class"),
            mlp(digits("class")),
            make_strategies("curlora", {"policy": "per-task"}),
            **LOOP,
        )
    with pytest.raises(ConfigError, match="no linear layer"):
        train(digits(), mlp(digits()), make_strategies("curlora", {"targets": "nothing"}), **LOOP)


@needs_peft
def test_olora_keeps_each_new_subspace_orthogonal_to_the_earlier_ones():
    stream = digits(tasks=3)
    reports = {}
    for lam in (0.0, 0.5):
        model = mlp(stream)
        strategy = make_strategies("olora", {"orthogonal": lam, "rank": 4})[0]
        result = train(stream, model, strategy, seed=0, **LOOP)
        reports[lam] = result.strategy_reports["olora"]
    # the third task's A against the second's, summed over layers: pushed towards zero
    assert reports[0.5]["last_orthogonality_loss"] < 0.5 * reports[0.0]["last_orthogonality_loss"]
    assert reports[0.5]["adapters"] == 2  # the second task's LoRA merged, a new one trained
    # the penalty is lambda_1 * sum over layers of ||A_old A_new^T||_F^2, by hand
    expected = 0.0
    for name, layer in adapters.adapter_layers(model):
        a_old, a_new = strategy.earlier[name], layer.lora_A["default"].weight
        assert a_old.shape == a_new.shape == (4, a_new.shape[1])  # one earlier adapter
        expected += float(
            sum((a_old[i] @ a_new[j].detach()) ** 2 for i in range(4) for j in range(4))
        )
    learner = type("L", (), {"model": model})()
    penalty = strategy.penalty(learner, None, None, None, None)
    assert float(penalty) == pytest.approx(0.5 * expected, rel=1e-5)
    assert reports[0.5]["last_orthogonality_loss"] == pytest.approx(expected, rel=1e-5)


# --- hybrids --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ADAPTERS)
def test_adapters_compose_with_ewc_replay_and_lwf(method):
    stream = digits()
    alone = train(stream, mlp(stream), method, seed=0, **LOOP)
    ewc = EWC(lam=1000.0)
    with_ewc = train(stream, mlp(stream), [make_strategies(method)[0], ewc], seed=0, **LOOP)
    # EWC's importances cover the adapters learnt on task 2 and follow the wrapped base weights
    names = set(ewc.importance_by_name)
    assert any(n.startswith("1.base_layer.") for n in names)
    assert any(n in names for n in adapter_names(mlp_wrapped(method, stream)))
    assert with_ewc.accuracy_matrix[1] == alone.accuracy_matrix[1]  # nothing to protect yet
    assert with_ewc.accuracy_matrix[2] != alone.accuracy_matrix[2]  # the penalty acts
    for other in ("replay", "lwf"):
        result = train(stream, mlp(stream), f"{method}+{other}", seed=0, **LOOP)
        assert result.model_size[2]["trainable"] == alone.model_size[2]["trainable"]
        assert result.accuracy_matrix != alone.accuracy_matrix


def mlp_wrapped(method, stream):
    model = mlp(stream)
    adapters.wrap(model, method, rank=8)
    return model


# --- what a run stores, and resuming ------------------------------------------------------


def _config(strategy, **params):
    return RunConfig(
        scenario="split-digits",
        protocol="task",
        n_tasks=3,
        strategy=strategy,
        strategy_params=params,
        hidden=[32],
        iterations=20,
        optimizer="adam",
        lr=3e-3,
        threads=1,
        progress=False,
    )


def _crash_after(task):
    def on_event(record):
        if record["event"] == "task" and record["task"] == task:
            raise KeyboardInterrupt

    return on_event


@pytest.mark.parametrize(
    ("strategy", "params"),
    [
        pytest.param("lora", {"policy": "per-task"}, marks=needs_peft),
        ("curlora", {"policy": "merge"}),
        ("curlora+ewc", {"lam": 100.0}),
        pytest.param("olora", {}, marks=needs_peft),
        ("head", {}),
    ],
)
def test_a_run_stores_only_adapters_per_task_and_resumes_identically(tmp_path, strategy, params):
    uninterrupted = run(_config(strategy, **params))
    store = RunStore(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        store.execute(_config(strategy, **params), on_event=_crash_after(2))
    (row,) = store.index.find()
    assert row["tasks_done"] == 2  # killed after the second adapter task's evaluation
    resumed = store.resume(store.folder(row["id"]))
    assert resumed.accuracy_matrix == uninterrupted.accuracy_matrix
    assert resumed.losses == uninterrupted.losses
    assert resumed.strategy_reports == uninterrupted.strategy_reports
    checkpoints = store.folder(row["id"]) / "checkpoints"
    whole = load_file(checkpoints / "model-task-1.safetensors")
    model = load_snapshot(checkpoints / "resume.safetensors").model
    for k in (2, 3):
        part = load_file(checkpoints / f"model-task-{k}.safetensors")
        # only what the task trained: far less than the whole model, and all of it in it
        assert (
            0 < sum(v.numel() for v in part.values()) < sum(v.numel() for v in whole.values()) / 2
        )
        assert part.keys() < model.keys()
    last = load_file(checkpoints / "model-task-3.safetensors")
    for name, tensor in last.items():
        assert torch.equal(tensor, model[name])


@pytest.mark.parametrize("method", ADAPTERS)
def test_a_trained_start_adapts_from_the_first_new_task(method):
    stream = digits()
    model = mlp(stream)
    train(stream[:1], model, "finetune", seed=0, **LOOP)
    probe = Probe()
    result = train(stream, model, [method, probe], seed=0, trained_tasks=1, **LOOP)
    assert probe.trainable[1] == probe.adapters[1] != set()
    assert result.strategy_reports[method]["adapted_from_task"] == 1


def test_a_resumed_snapshot_rebuilds_per_task_slots(tmp_path):
    stream = digits(tasks=4)
    spec = {"policy": "per-task", "rank": 4}
    uninterrupted = train(stream, mlp(stream), make_strategies("curlora", spec), seed=2, **LOOP)
    path = tmp_path / "resume.safetensors"

    def keep(snapshot):
        if snapshot.task == 2:
            save_snapshot(snapshot, path)

    train(stream, mlp(stream), make_strategies("curlora", spec), seed=2, on_task_end=keep, **LOOP)
    resumed = train(
        stream,
        mlp(stream),
        make_strategies("curlora", spec),
        seed=2,
        resume=load_snapshot(path),
        **LOOP,
    )
    assert resumed.accuracy_matrix == uninterrupted.accuracy_matrix
    assert resumed.losses == uninterrupted.losses


# --- a language model -------------------------------------------------------------------------

TEXT_LOOP = dict(iterations=150, batch_size=32, optimizer="adam", lr=3e-3, progress=False, seed=0)


def gpt_for(stream):
    torch.manual_seed(0)
    vocab = len(stream.tasks[0].units)
    return build_model("gpt", stream.input_shape, stream.num_outputs, [32], vocab_size=vocab)


@pytest.mark.slow
def test_a_frozen_backbone_and_curlora_raise_the_general_perplexity_less_than_finetuning(
    two_domains, tmp_path, monkeypatch
):
    monkeypatch.setenv("FORGETLESS_CACHE", str(tmp_path))
    shared = text(from_strings(two_domains), sequence_length=32, cache=False)
    full = train(shared, gpt_for(shared), "finetune", **TEXT_LOOP)
    cur = train(shared, gpt_for(shared), "curlora", **TEXT_LOOP)
    P, C = full.perplexity_matrix, cur.perplexity_matrix
    assert P[0][0] == C[0][0]  # the same pretraining on the general text
    assert P[1][0] > 3 * P[0][0]  # fine-tuning on the second domain forgets the general one
    assert C[1][0] - C[0][0] < 0.2 * (P[1][0] - P[0][0])  # CURLoRA keeps most of it...
    assert C[1][1] < C[0][1]  # ...while learning something of the second domain
    assert C[1][1] > P[1][1]  # (less than fine-tuning: the other axis)
    assert cur.model_size[1]["trainable"] < full.model_size[1]["trainable"] / 50
    # With a head per domain (task-IL), the frozen backbone keeps the general text exactly.
    separate = text(from_strings(two_domains), sequence_length=32, cache=False, protocol="task")
    full = train(separate, gpt_for(separate), "finetune", **TEXT_LOOP)
    head = train(separate, gpt_for(separate), "head", **TEXT_LOOP)
    P, H = full.perplexity_matrix, head.perplexity_matrix
    assert P[1][0] > 1.1 * P[0][0]
    assert H[1][0] == H[0][0]
    assert H[1][1] < 0.6 * H[0][1]


@needs_peft
def test_lora_on_gpt_trains_the_attention_adapters_only(two_domains):
    stream = text(from_strings(two_domains), sequence_length=32, cache=False)
    probe = Probe()
    result = train(stream, gpt_for(stream), ["lora", probe], **dict(TEXT_LOOP, iterations=30))
    assert probe.graded[1] == probe.adapters[1]
    assert {n.split(".lora_")[0].split(".", 2)[-1] for n in probe.adapters[1]} == {
        "attn.qkv",
        "attn.proj",
    }
    assert result.perplexity_matrix[1][1] < result.perplexity_matrix[0][1]


def test_the_command_line_runs_adapters_and_refuses_bad_options(capsys):
    import json

    from forgetless.cli import main

    argv = ["run", "--scenario", "split-digits", "--protocol", "task", "--n-tasks", "3"]
    argv += ["--strategy", "curlora", "--rank", "4", "--policy", "per-task", "--iterations", "20"]
    argv += ["--optimizer", "adam", "--lr", "0.003", "--no-progress", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["config"]["strategy_params"] == {"rank": 4, "policy": "per-task"}
    assert result["strategy_reports"]["curlora"]["adapters"] == 2
    assert main(["run", "--strategy", "lora", "--policy", "sometimes"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("forgetless: error:") and "policy must be one of" in err
