"""The CNN's fast paths: pooling before the ReLU computes the modules' order bit for bit, and
``memory_format="channels_last"`` trains the digits as well as the default layout, with the
state a run stores in the default layout (it loads into a default model)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from forgetless import ConfigError, FitConfig, train
from forgetless.experiment import RunConfig, config_hash, run
from forgetless.models import CNN, ResidualCNN, build_model
from forgetless.models.memory_format import use_memory_format
from forgetless.runs import RunStore, load_snapshot, save_snapshot
from forgetless.scenarios import make_stream


def _in_module_order(model: nn.Module) -> nn.Module:
    """``model`` computing ReLU, then max-pool, as its modules are listed (the order before
    the fast path)."""
    if isinstance(model, CNN):
        model.forward = lambda x: nn.Sequential.forward(model, x)
    else:

        def block(conv, x):
            shortcut = F.pad(x, (0, 0, 0, 0, 0, conv.out_channels - x.shape[-3]))
            return F.max_pool2d(F.relu(conv(x) + shortcut), 2)

        model._block = block
    return model


def _fit(**options):
    settings = dict(epochs=2, batch_size=32, optimizer="adam", lr=1e-3, progress=False)
    return FitConfig(**{**settings, **options})


@pytest.mark.parametrize("name", ["cnn", "cnn-skip"])
@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last"])
def test_pooling_before_the_relu_trains_the_same_weights_bit_for_bit(name, memory_format):
    stream = make_stream("split-digits", seed=0, protocol="domain")
    models, results = [], []
    for fast in (False, True):
        model = build_model(name, stream.input_shape, stream.num_outputs, seed=0)
        if not fast:
            model = _in_module_order(model)
        results.append(train(stream, model, "finetune", fit=_fit(memory_format=memory_format)))
        models.append(model)
    for (key, a), b in zip(
        models[0].state_dict().items(), models[1].state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), key
    assert results[0].accuracy_matrix == results[1].accuracy_matrix
    assert results[0].losses == results[1].losses
    assert min(results[1].accuracy_matrix[i][i] for i in range(len(stream))) > 0.8  # it learnt


def test_hooks_on_the_relu_see_its_output_before_pooling():
    torch.manual_seed(0)
    model = CNN((1, 12, 12), 10)
    x = torch.randn(5, 1, 12, 12)
    plain = model(x)
    seen = []
    handle = model[1].register_forward_hook(lambda _m, _i, out: seen.append(out))
    hooked = model(x)
    handle.remove()
    assert seen[0].shape == (5, 32, 12, 12)  # the conv's grid, not the pooled one
    assert torch.equal(seen[0], F.relu(model[0](x)))
    assert torch.equal(hooked, plain)


def test_channels_last_trains_the_digits_cnn_within_a_point_of_the_default_layout():
    learnt, weights = {}, {}
    for memory_format in ("contiguous", "channels_last"):
        stream = make_stream("split-digits", seed=0, protocol="domain")
        model = build_model("cnn", stream.input_shape, stream.num_outputs, seed=0)
        result = train(stream, model, "finetune", fit=_fit(memory_format=memory_format))
        matrix = result.accuracy_matrix
        learnt[memory_format] = sum(matrix[i][i] for i in range(len(stream))) / len(stream)
        weights[memory_format] = model[3].weight.detach().clone()
        conv = model[3].weight
        assert conv.is_contiguous(memory_format=torch.channels_last) == (
            memory_format == "channels_last"
        )
    assert learnt["contiguous"] > 0.9
    assert not torch.equal(weights["contiguous"], weights["channels_last"])  # other arithmetic
    assert learnt["channels_last"] == pytest.approx(learnt["contiguous"], abs=0.01)


def _config(**options):
    return RunConfig(
        scenario="split-digits",
        protocol="domain",
        model="cnn",
        strategy="ewc",
        strategy_params={"lam": 100.0},
        iterations=30,
        batch_size=32,
        optimizer="adam",
        lr=1e-3,
        threads=1,
        progress=False,
        **options,
    )


def _crash_after(task):
    def on_event(record):
        if record["event"] == "task" and record["task"] == task:
            raise KeyboardInterrupt

    return on_event


def test_a_channels_last_run_stores_default_layout_state_and_resumes_identically(tmp_path):
    config = _config(memory_format="channels_last")
    uninterrupted = run(config)
    store = RunStore(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        store.execute(config, on_event=_crash_after(2))
    assert store.index.find()[0]["tasks_done"] == 2
    (row,) = store.index.find()
    resumed = store.resume(store.folder(row["id"]))
    assert resumed.accuracy_matrix == uninterrupted.accuracy_matrix
    assert resumed.losses == uninterrupted.losses

    # The stored weights are in the default layout: a default model computes with them what
    # a channels-last one does, and scores the run's last row (bytes in channels-last order
    # read as the default layout would scramble every convolution).
    stream = make_stream("split-digits", seed=0, protocol="domain")
    state = load_file(store.folder(row["id"]) / "checkpoints" / "model-task-5.safetensors")
    default = build_model("cnn", stream.input_shape, stream.num_outputs)
    default.load_state_dict(state)
    fast = use_memory_format(
        build_model("cnn", stream.input_shape, stream.num_outputs), config.memory_format
    )
    fast.load_state_dict(state)
    assert fast[3].weight.is_contiguous(memory_format=torch.channels_last)
    default.eval(), fast.eval()
    with torch.no_grad():
        for j, task in enumerate(stream.tasks):
            x = task.test.inputs()
            logits = default(x)
            torch.testing.assert_close(logits, fast(x), rtol=1e-4, atol=1e-4)
            correct = int((logits.argmax(-1) == task.test.y).sum())
            assert abs(correct - uninterrupted.accuracy_matrix[-1][j] * len(x)) <= 1


@pytest.mark.parametrize(
    ("saved", "resumed"), [("contiguous", "channels_last"), ("channels_last", "contiguous")]
)
def test_a_snapshot_resumes_in_the_other_layout(tmp_path, saved, resumed):
    stream = make_stream("split-digits", seed=0, protocol="domain")[:3]
    path = tmp_path / "resume.safetensors"

    def keep(snapshot):
        if snapshot.task == 0:
            save_snapshot(snapshot, path)

    model = build_model("cnn", stream.input_shape, stream.num_outputs, seed=0)
    first = train(stream, model, "finetune", fit=_fit(memory_format=saved), on_task_end=keep)
    model = build_model("cnn", stream.input_shape, stream.num_outputs, seed=0)
    fit = _fit(memory_format=resumed)
    result = train(stream, model, "finetune", fit=fit, resume=load_snapshot(path))
    assert model[3].weight.is_contiguous(memory_format=torch.channels_last) == (
        resumed == "channels_last"
    )
    assert result.accuracy_matrix[0] == first.accuracy_matrix[0]  # restored, not retrained
    assert min(result.accuracy_matrix[i][i] for i in range(len(stream))) > 0.8
    for row, other in zip(result.accuracy_matrix, first.accuracy_matrix, strict=True):
        assert row == pytest.approx(other, abs=0.03)  # the layouts differ only in rounding


def test_memory_format_is_checked_refused_without_convolutions_and_hashed_only_when_set():
    with pytest.raises(ConfigError, match="memory_format must be one of"):
        FitConfig(memory_format="nhwc")
    assert FitConfig(memory_format=None).memory_format == "contiguous"
    plain = config_hash(RunConfig())
    assert config_hash(RunConfig(memory_format="contiguous")) == plain
    assert config_hash(RunConfig(memory_format="channels_last")) != plain
    assert RunConfig(memory_format="channels_last").fit_config().memory_format == "channels_last"
    stream = make_stream("split-digits", seed=0)
    mlp = build_model("mlp", stream.input_shape, stream.num_outputs, [16], seed=0)
    with pytest.raises(ConfigError, match="no 4-D parameter"):
        train(stream, mlp, "finetune", fit=_fit(memory_format="channels_last"))
    model = ResidualCNN(stream.input_shape, stream.num_outputs)
    use_memory_format(model, "channels_last")
    use_memory_format(model, "channels_last")
    assert len(model._forward_pre_hooks) == 1  # applied twice is applied once


def test_fused_fast_path_runs_adam_as_torchs_fused_kernel_at_other_rounding_only():
    """``fast_path="fused"`` with a named Adam builds ``torch.optim.Adam(fused=True)``: the
    CNN trains the digits as the default Adam does, its weights apart only at float32
    rounding; ``auto`` keeps the default for-loop Adam; and the run gets another id."""
    stream = make_stream("split-digits", seed=0, protocol="domain")
    models, results = {}, {}
    for fast_path in ("auto", "fused"):
        model = build_model("cnn", stream.input_shape, stream.num_outputs, seed=0)
        fit = _fit(fast_path=fast_path)
        assert bool(fit.make_optimizer(model).defaults.get("fused")) == (fast_path == "fused")
        results[fast_path] = train(stream, model, "finetune", fit=fit)
        models[fast_path] = model
    gaps = [
        (a - b).abs().max().item()
        for a, b in zip(
            models["auto"].state_dict().values(), models["fused"].state_dict().values(), strict=True
        )
    ]
    assert 0 < max(gaps) < 1e-3  # another kernel: other rounding, not another update
    final = [results[k].accuracy_matrix[-1] for k in ("auto", "fused")]
    assert max(abs(a - b) for a, b in zip(*final, strict=True)) <= 0.02
    assert min(results["fused"].accuracy_matrix[i][i] for i in range(len(stream))) > 0.8
    assert FitConfig(optimizer="adam", fast_path="fused", optimizer_options={"fused": False}
                     ).make_optimizer(models["auto"]).defaults["fused"] is False  # fmt: skip
    base = RunConfig(model="cnn", optimizer="adam")
    assert config_hash(base) != config_hash(RunConfig(model="cnn", optimizer="adam",
                                                      fast_path="fused"))  # fmt: skip
