"""The engine's fast paths do the arithmetic of a plain PyTorch loop, exactly: optimisers built
and stepped without torch._dynamo, batches gathered with index_select; and bfloat16 steps
(``precision="bfloat16"``) train the digits about as well as float32."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from forgetless import ConfigError, FitConfig, train
from forgetless.experiment import RunConfig, config_hash
from forgetless.models import build_model
from forgetless.optimizers import build_optimizer, clear_grads, take_step
from forgetless.scenarios import make_stream

OPTIMIZERS = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.05),
    "sgd-momentum": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
    "adam": lambda params: torch.optim.Adam(params, lr=0.003),
}
FIT = {
    "sgd": dict(optimizer="sgd", lr=0.05),
    "sgd-momentum": dict(optimizer="sgd", lr=0.05, momentum=0.9),
    "adam": dict(optimizer="adam", lr=0.003),
}


def bare_loop(stream, model, make_optimizer, seed, epochs, batch_size):
    """Fine-tuning written out by hand: a fresh optimiser per task, one randperm per epoch from
    a generator seeded like the engine's, the public zero_grad and step."""
    generator = torch.Generator().manual_seed(seed)
    for task in stream.tasks:
        optimizer = make_optimizer(model.parameters())
        x_all, y_all = task.train.x, task.train.y
        for _ in range(epochs):
            for idx in torch.randperm(len(x_all), generator=generator).split(batch_size):
                x = x_all[idx].float() * task.train.scale
                loss = F.cross_entropy(model(x), y_all[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return model


@pytest.mark.parametrize("fast_path", ["auto", "off"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_the_engine_ends_with_the_weights_of_a_bare_loop(name, fast_path):
    stream = make_stream("split-digits", seed=0)
    engine_model = build_model("mlp", stream.input_shape, stream.num_outputs, [32], seed=0)
    bare_model = build_model("mlp", stream.input_shape, stream.num_outputs, [32], seed=0)
    fit = FitConfig(epochs=2, batch_size=32, progress=False, fast_path=fast_path, **FIT[name])
    train(stream, engine_model, "finetune", fit=fit, seed=3)
    bare_loop(stream, bare_model, OPTIMIZERS[name], seed=3, epochs=2, batch_size=32)
    for (key, a), b in zip(
        engine_model.state_dict().items(), bare_model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), key
    # Autograd leaves the last step's gradients; SGD under "auto" took the hand-written step.
    took_autograd = fast_path == "off" or name == "adam"
    assert (engine_model[1].weight.grad is not None) == took_autograd


def test_a_run_never_imports_torch_dynamo():
    code = (
        "import sys, warnings; warnings.simplefilter('ignore')\n"
        "from forgetless import train\n"
        "from forgetless.models import build_model\n"
        "from forgetless.scenarios import make_stream\n"
        "s = make_stream('split-digits', seed=0)\n"
        "for opt in ('sgd', 'adam', 'adamw'):\n"
        "    m = build_model('mlp', s.input_shape, s.num_outputs, [16], seed=0)\n"
        "    train(s, m, 'ewc+replay', optimizer=opt, epochs=1, progress=False)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_stored_run_and_its_resume_never_import_torch_dynamo(tmp_path):
    # The store reads the optimiser's state after every task and loads it to resume: both
    # without dynamo, and the resumed run ends with the uninterrupted one's numbers.
    code = (
        "import sys, json, warnings; warnings.simplefilter('ignore')\n"
        "from forgetless.experiment import RunConfig\n"
        "from forgetless.runs import RunStore\n"
        "c = RunConfig(scenario='split-digits', strategy='ewc', optimizer='adam', lr=0.003,\n"
        "              iterations=20, hidden=[16], seed=0, threads=1, progress=False)\n"
        "whole = RunStore(sys.argv[1] + '/whole').execute(c).accuracy_matrix\n"
        "store = RunStore(sys.argv[1] + '/cut')\n"
        "def stop(record):\n"
        "    if record['event'] == 'task' and record['task'] == 3:\n"
        "        raise KeyboardInterrupt\n"
        "try:\n"
        "    store.execute(c, on_event=stop)\n"
        "except KeyboardInterrupt:\n"
        "    pass\n"
        "resumed = RunStore(sys.argv[1] + '/cut').execute(c).accuracy_matrix\n"
        "(events,) = __import__('pathlib').Path(sys.argv[1], 'cut').glob('*/events.jsonl')\n"
        "again = '\"resume\"' in events.read_text()\n"
        "print(json.dumps(['torch._dynamo' in sys.modules, whole == resumed, again]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[false, true, true]"


def test_the_optimiser_state_without_dynamo_is_the_public_methods_state():
    model = torch.nn.Linear(4, 2)
    optimizer = build_optimizer(torch.optim.Adam, model.parameters(), lr=0.01)
    model(torch.randn(3, 4)).sum().backward()
    take_step(optimizer)
    mine = optimizer.state_dict()
    public = torch.optim.Optimizer.state_dict(optimizer)
    assert mine["param_groups"] == public["param_groups"]
    for key, value in public["state"].items():
        for name, tensor in value.items():
            assert torch.equal(mine["state"][key][name], tensor)
    other = build_optimizer(torch.optim.Adam, torch.nn.Linear(4, 2).parameters(), lr=0.5)
    other.load_state_dict(mine)
    assert other.param_groups[0]["lr"] == 0.01


def test_hooks_and_schedulers_take_the_public_step():
    torch.manual_seed(0)
    models = [torch.nn.Linear(4, 2) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    optimizers = [build_optimizer(torch.optim.SGD, m.parameters(), lr=0.1) for m in models]
    assert type(optimizers[0]) is torch.optim.SGD  # the class itself, not a stand-in
    calls = []
    optimizers[0].register_step_post_hook(lambda *_: calls.append(1))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizers[1], 1, gamma=0.5)
    x = torch.randn(8, 4)
    for _ in range(3):
        for model, optimizer in zip(models, optimizers, strict=True):
            clear_grads(optimizer)
            model(x).pow(2).sum().backward()
            take_step(optimizer)
        scheduler.step()
    assert calls == [1, 1, 1]  # the hook ran at every step
    assert optimizers[1].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)
    assert not torch.equal(models[0].weight, models[1].weight)  # different rates, both moved


def test_bfloat16_steps_train_the_digits_within_two_points_of_float32():
    finals, weights = {}, {}
    for precision in ("float32", "bfloat16"):
        stream = make_stream("split-digits", seed=0, protocol="domain")
        model = build_model("mlp", stream.input_shape, stream.num_outputs, [64], seed=0)
        fit = FitConfig(
            epochs=4, batch_size=32, optimizer="adam", lr=3e-3, progress=False,
            precision=precision,
        )  # fmt: skip
        result = train(stream, model, "finetune", fit=fit, seed=0)
        learnt = [result.accuracy_matrix[i][i] for i in range(len(stream))]
        assert min(learnt) > 0.8, (precision, learnt)  # each task is learnt
        finals[precision] = sum(result.accuracy_matrix[-1]) / len(stream)
        weights[precision] = model[1].weight.detach().clone()
        assert model[1].weight.dtype == torch.float32  # autocast leaves the weights float32
    assert not torch.equal(weights["float32"], weights["bfloat16"])  # other arithmetic
    assert finals["bfloat16"] == pytest.approx(finals["float32"], abs=0.02)


def test_precision_is_checked_and_hashed_only_when_not_float32():
    with pytest.raises(ConfigError, match="precision must be one of"):
        FitConfig(precision="float16")
    plain = config_hash(RunConfig())
    assert config_hash(RunConfig(precision="float32")) == plain
    assert config_hash(RunConfig(precision="bfloat16")) != plain
    assert RunConfig(precision="bfloat16").fit_config().precision == "bfloat16"
    assert RunConfig().fit_config().precision == "float32"


@pytest.mark.parametrize("units", [False, True])
def test_bfloat16_warns_only_on_a_cpu_that_would_emulate_it(monkeypatch, units):
    """On a CPU without AVX512-BF16 or AMX, bfloat16 is emulated (6x slower on AVX2): the run
    says so; with the units, or in float32, it says nothing."""
    import warnings

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: units)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    stream = make_stream("split-digits", seed=0, protocol="domain")
    for precision in ("float32", "bfloat16"):
        model = build_model("mlp", stream.input_shape, stream.num_outputs, [16], seed=0)
        fit = FitConfig(iterations=2, progress=False, precision=precision)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train(stream, model, "finetune", fit=fit, seed=0)
        emulated = [w for w in caught if "without bfloat16 instructions" in str(w.message)]
        assert len(emulated) == (precision == "bfloat16" and not units)
