"""The one training loop: fit each task, evaluate every task, fill the accuracy matrix."""

from __future__ import annotations

import math
import platform
import resource
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from forgetless.data.arrays import ArraySet, rows
from forgetless.errors import ConfigError, TrainingError
from forgetless.learner import Learner, TrainingData, call_model, takes_task_id
from forgetless.losses import cross_entropy
from forgetless.metrics import BARELY_LEARNED
from forgetless.mlp_step import (
    MLPStep,
    check_fast_path,
    closed_form_penalty,
    mlp_layers,
    refusal,
)
from forgetless.models.memory_format import check_memory_format, use_memory_format
from forgetless.names import OPTIMIZERS, PRECISIONS
from forgetless.optimizers import build_optimizer, clear_grads, take_step
from forgetless.result import Result
from forgetless.scenarios.stream import Protocol, Stream
from forgetless.strategies import make_strategies
from forgetless.strategies.base import HOOKS, Strategy
from forgetless.validation import available_device, check_device_name, check_range

# Most logits one evaluation forward pass may produce (64 MB of float32): a language model's
# [rows, T, V] outputs would otherwise take gigabytes at the usual eval batch size. Changes
# only how evaluation is chunked, never what it counts.
EVAL_LOGITS = 2**24
# Most bytes of model-ready (float) test inputs a run keeps, all tasks together: below it each
# test set is converted from its storage (uint8 images) once per run instead of at every
# evaluation, the same values by the same operations (MNIST's 10,000 test images: 31 MB).
EVAL_INPUT_BYTES = 2**28


@dataclass(frozen=True)
class FitConfig:
    """How each task is fitted and evaluated.

    Attributes:
        epochs: passes over each task's training data (ignored when ``iterations`` is set).
        iterations: optimiser steps per task, instead of epochs (van de Ven's protocols).
        batch_size: examples per step.
        optimizer: a name (``"sgd"``, ``"adam"``, ``"adamw"``), or an optimiser class or
            factory called as ``optimizer(params, lr=lr, **optimizer_options)``
            (``torch.optim.AdamW``, ``functools.partial(torch.optim.RMSprop, alpha=0.9)``).
        lr: learning rate.
        momentum: SGD momentum (for ``"sgd"`` by name; pass it in ``optimizer_options`` to a
            class).
        optimizer_options: further keyword arguments of the optimiser (``{"weight_decay":
            0.01}``).
        loss: the training loss, ``loss(logits, targets) -> scalar tensor`` (e.g.
            ``torch.nn.CrossEntropyLoss(label_smoothing=0.1)``); ``None``: cross-entropy. A
            strategy's ``loss`` hook still replaces it; penalties are added to it. Under
            task-incremental learning the logits of other tasks' units are ``-inf`` (the
            task's mask), which a loss must allow (label smoothing does not).
        scheduler: a learning-rate schedule, ``scheduler(optimizer) -> LRScheduler`` (e.g.
            ``lambda opt: torch.optim.lr_scheduler.StepLR(opt, 50)``): built at the start of
            each task, after its optimiser, and stepped after every optimiser step.
        reset_optimizer: build a fresh optimiser at each task (the usual protocol). If False,
            one optimiser is kept; it is still rebuilt when a strategy changed the model's
            trainable parameters, carrying the state of those that persist.
        eval_every: evaluate all tasks every this many steps (within-task curves); ``None``: off.
        log_every: with an event sink (``on_event``), report the mean training loss every this
            many steps.
        eval_batch_size: examples per evaluation forward pass.
        device: ``"cpu"``, ``"cuda"``, ...
        threads: CPU threads for torch (``torch.set_num_threads``, process-wide); ``None``
            leaves torch's default. Small models train fastest on 1 thread, and on a shared
            machine more threads than free cores slow every step down many times over.
        progress: show a progress bar (only on a terminal).
        retain_raw_data: the data-retention policy. False declares that raw past inputs must
            not be kept (privacy rules such as GDPR or HIPAA): strategies that store them
            (replay, joint, ...) are refused before training; regularisers still run.
        precision: the arithmetic of training steps: ``"float32"`` (``None`` means it), or
            ``"bfloat16"``: each step's forward pass runs under ``torch.autocast`` in bfloat16
            (matrix products and convolutions; weights, gradients, the optimiser and the loss
            stay float32), faster on CPUs with bfloat16 units (AVX512-BF16, AMX) and GPUs,
            at some cost in accuracy (BENCHMARKS.md measures it). Evaluation stays float32.
        fast_path: the training step without autograd (:mod:`forgetless.mlp_step`), for the
            case that dominates: fine-tuning or replay of the MLP with cross-entropy and SGD
            on the CPU in float32, alone or with one quadratic penalty (EWC, online EWC, L2,
            MAS: its gradient added in closed form; elsewhere the step is autograd's).
            ``"auto"``: wherever it applies, with autograd's arithmetic operation for
            operation, so the numbers are
            bit for bit the same and only the time changes (1.3-1.6x less at batch 128);
            ``"off"``: always autograd; ``"fused"``: fewer, fused kernels, the weights
            differing at float32 rounding: on the MLP step, plain SGD's update folded into
            the weight-gradient product; with a named ``adam`` or ``adamw``, torch's fused
            Adam kernel (``fused=True``; CNNs gain most, BENCHMARKS.md "The CNN of seed
            article 2"). ``None`` means ``"auto"``.
        memory_format: the layout of a convolutional model's 4-D weights and image batches:
            ``"contiguous"`` (``None`` means it), or ``"channels_last"``, faster for CNNs on
            CPUs (oneDNN) and GPUs, not bit-identical (see
            :mod:`forgetless.models.memory_format`); refused for models without 4-D weights.
    """

    epochs: int = 1
    iterations: int | None = None
    batch_size: int = 128
    optimizer: str | Callable[..., torch.optim.Optimizer] = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    optimizer_options: dict[str, Any] | None = None
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    scheduler: Callable[[torch.optim.Optimizer], Any] | None = None
    reset_optimizer: bool = True
    eval_every: int | None = None
    log_every: int = 50
    eval_batch_size: int = 1024
    device: str = "cpu"
    threads: int | None = None
    progress: bool = True
    retain_raw_data: bool = True
    precision: str | None = "float32"
    fast_path: str | None = "auto"
    memory_format: str | None = "contiguous"

    def __post_init__(self) -> None:
        object.__setattr__(self, "memory_format", check_memory_format(self.memory_format))
        if self.precision is None:
            object.__setattr__(self, "precision", "float32")
        if self.fast_path is None:
            object.__setattr__(self, "fast_path", "auto")
        check_fast_path(self.fast_path)
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "eval_batch_size": self.eval_batch_size,
            "log_every": self.log_every,
        }
        for key in ("iterations", "eval_every", "threads"):
            if getattr(self, key) is not None:
                positive[key] = getattr(self, key)
        for key, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{key} must be a positive integer, got {value!r}")
        check_range("lr", self.lr, 0.0, low_open=True)  # finite: lr = inf diverges at once
        check_range("momentum", self.momentum, 0.0, 1.0, high_open=True)
        check_device_name(self.device)
        if not callable(self.optimizer) and self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, or an optimiser class or "
                f"factory such as torch.optim.AdamW; got {self.optimizer!r}"
            )
        options = self.optimizer_options
        if options is not None and (
            not isinstance(options, dict) or not all(isinstance(k, str) for k in options)
        ):
            raise ConfigError(
                f"optimizer_options must be a dict of keyword arguments, got {options!r}"
            )
        for name in ("loss", "scheduler"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise ConfigError(f"{name} must be a callable or None, got {value!r}")

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """A fresh optimiser over ``model``'s trainable parameters."""
        params = [p for p in model.parameters() if p.requires_grad]
        options = dict(self.optimizer_options or {})
        if callable(self.optimizer):
            try:
                return self.optimizer(params, **{"lr": self.lr, **options})
            except TypeError as err:
                raise ConfigError(
                    f"the optimizer {describe_callable(self.optimizer)} could not be built as "
                    f"optimizer(params, lr=..., **optimizer_options): {err}"
                ) from None
        # Built without the one-second torch._dynamo import (see forgetless.optimizers).
        if self.fast_path == "fused" and self.optimizer in ("adam", "adamw"):
            # One kernel per parameter group for the whole update instead of a dozen ops per
            # tensor; other rounding, hence only on request (optimizer_options may say no).
            options.setdefault("fused", True)
        if self.optimizer == "adam":
            return build_optimizer(torch.optim.Adam, params, lr=self.lr, **options)
        if self.optimizer == "adamw":
            return build_optimizer(torch.optim.AdamW, params, lr=self.lr, **options)
        options = {"momentum": self.momentum, **options}
        return build_optimizer(torch.optim.SGD, params, lr=self.lr, **options)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain data (a callable by its dotted name), as a result records
        them."""
        data = asdict(self)
        for name in ("optimizer", "loss", "scheduler"):
            if callable(data[name]):
                data[name] = describe_callable(data[name])
        return data


def describe_callable(obj: Any) -> str:
    """``module.qualname`` of a class or function, else its ``repr`` (a partial, a loss
    object): what a result records of a callable setting."""
    name = getattr(obj, "__qualname__", None)
    module = getattr(obj, "__module__", None)
    if name and module:
        return f"{module}.{name}"
    return repr(obj)


@dataclass
class Snapshot:
    """A run's state after a completed task: enough to continue it and end with the same
    numbers as a run that was never stopped.

    :func:`train` passes one to ``on_task_end`` after each task, and continues from one given
    as ``resume``. Tensors are the live ones (not copies): save it (see
    :mod:`forgetless.runs`) before training goes on.

    Attributes:
        task: index of the last completed task (of the last completed phase, with a schedule).
        step: optimiser steps taken so far.
        model: the model's ``state_dict``.
        optimizer: the optimiser's ``state_dict``.
        generator: the state of the run's random generator (batch order, sampling).
        strategies: each strategy's :meth:`~forgetless.strategies.Strategy.state_dict`.
        progress: what the result has so far: ``baseline``, ``matrix``, ``task_aware``,
            ``losses``, ``curves``, ``train_times``, ``eval_times``, ``routing`` (with a
            router), ``baseline_eval``,
            ``elapsed`` (wall seconds of the runs so far).
        task_weights: the part of ``model`` a run store keeps as this task's weights when a
            strategy says it is less than the whole model (adapters: only theirs; see
            :meth:`~forgetless.strategies.Strategy.task_weights`); ``None``: all of ``model``.
            Not part of a resume checkpoint.
    """

    task: int
    step: int
    model: dict[str, torch.Tensor]
    optimizer: Any
    generator: torch.Tensor
    strategies: list[Any]
    progress: dict[str, Any]
    task_weights: dict[str, torch.Tensor] | None = None


def train(
    stream: Stream,
    model: nn.Module,
    strategy: str | Strategy | Sequence[Strategy | str] = "finetune",
    fit: FitConfig | None = None,
    seed: int | torch.Generator = 0,
    config: dict | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    on_task_end: Callable[[Snapshot], None] | None = None,
    resume: Snapshot | None = None,
    trained_tasks: int = 0,
    schedule: Sequence[int] | None = None,
    router: str | Strategy | None = None,
    **fit_options,
) -> Result:
    """Train ``model`` on ``stream`` task by task and measure the accuracy matrix.

    For each task ``i``: the strategies' ``before_task`` hooks run, the model fits the task's data
    (``training_data`` hooks may widen it), ``after_task`` hooks run, then every task of the
    stream is evaluated, giving row ``i`` of ``R``. The untrained model is evaluated first (the
    FWT baseline).

    Args:
        stream: the tasks, e.g. from :func:`forgetless.scenarios.make_stream`.
        model: any ``nn.Module`` mapping a batch of inputs to ``stream.num_outputs`` logits. A
            model with ``takes_task_id = True`` is called as ``model(x, t)``: ``t`` the batch's
            task ids (an int64 tensor) in training, the evaluated task's index (an ``int``) in
            evaluation. Strategies may grow, wrap or replace it (``docs/architecture.md``).
        strategy: a name (``"finetune"``), ``"a+b"``, an instance, or a list (a hybrid).
        fit: loop settings; or pass them as keywords (``epochs=1, lr=0.1``).
        seed: seeds batch order and strategy sampling (seed the model's init yourself, or use
            :func:`forgetless.experiment.run`, which does): an int, or a ``torch.Generator``,
            from which the run's seed is drawn (the same generator state, the same numbers).
        config: recorded in the result as is.
        on_event: called with plain-data records as training goes: ``{"event": "start",
            "baseline"}``, ``"loss"`` (``task``, ``step``, mean ``loss`` over the last
            ``log_every`` steps), ``"curve"`` (with ``eval_every``), ``"task"`` after each task
            (``task``, ``step``, ``accuracy`` row, ``task_aware`` row or None,
            ``train_seconds``, ``eval_seconds``; for sequence streams also the
            ``perplexity`` row, as in ``"start"`` the ``baseline_perplexity``).
        on_task_end: called with a :class:`Snapshot` after each task (for checkpoints).
        resume: continue from this snapshot, taken from a run with the same stream, model
            initialisation, strategies, loop settings and seed; tasks up to
            ``resume.task`` are not trained again.
        trained_tasks: a trained start: the first ``trained_tasks`` tasks are already learnt
            by the given model. They are evaluated, not trained (their rows of ``R`` are the
            given model's accuracies, like the baseline), and the strategies' ``after_task``
            hooks run on them with ``learner.task_learnt_before`` set, so that EWC's Fisher,
            MAS importances, LwF's old model and replay buffers are built from the old data
            without a step on it. Strategies that cannot start so say why before anything runs
            (see :attr:`~forgetless.strategies.Strategy.trained_start_refusal`).
        schedule: a stream that revisits tasks: the task (index into ``stream.tasks``, from 0)
            to train in each phase, e.g. ``[0, 1, 0, 1]``; every task at least once. The
            matrices get a row per phase (``Result.schedule``; metrics as in
            :mod:`forgetless.metrics`), and snapshots count phases. ``None``: each task once,
            in order.
        router: infer each test input's task (``"entropy"``, ``"mahalanobis"``, ``"ncm"``, or
            a :class:`~forgetless.routing.Router`), so that a method that needs the task id
            runs under class- or domain-IL (see :mod:`forgetless.routing`). It joins the
            strategies last (its ``after_task`` sees each task's final model); the result then
            holds ``routing_accuracy``, and its ``task_aware_matrix`` is the accuracy with the
            true task given to the model.

    Returns:
        A :class:`Result` with the matrix, the baseline, curves, losses and timings; for
        streams of token sequences (text) the accuracy is next-token accuracy over every
        position, and the result also holds the perplexity matrix.
    """
    fit = _fit_config(fit, fit_options)
    seed = _seed(seed)
    strategies = make_strategies(strategy)
    strategy_name = "+".join(s.name for s in strategies)
    if router is not None:
        strategies.append(_router(router, stream, strategies, model))
    _check_trained_tasks(trained_tasks, stream, strategies)
    phases = _check_schedule(schedule, stream, strategies, trained_tasks)
    for s in strategies:
        if s.stores_raw_data and not fit.retain_raw_data:
            raise ConfigError(
                f"strategy {s.name!r} keeps raw past inputs, which the data-retention policy "
                "(retain_raw_data=False, --no-raw-data) forbids; choose a strategy that stores "
                "no inputs (finetune, or a regulariser such as ewc, si, lwf)"
            )
        protocols = {Protocol.parse(p) for p in s.protocols}
        if stream.protocol not in protocols:
            supported = ", ".join(sorted(p.value for p in protocols))
            raise ConfigError(
                f"strategy {s.name!r} supports the {supported} protocol(s), not {stream.protocol.value}"
            )
    _check_task_ids(model, strategies, stream)
    if fit.threads is not None:
        torch.set_num_threads(fit.threads)
    device = available_device(fit.device)
    _warn_if_bfloat16_is_emulated(fit, device)
    generator = torch.Generator().manual_seed(seed)
    use_memory_format(model, fit.memory_format)  # the weights' and batches' layout
    learner = Learner(model, stream, fit.make_optimizer, device, generator)
    _check_outputs(learner, stream)
    for s in strategies:
        # Importances, buffers and old models live on the instance: a second run would start
        # from the first run's state, which is rarely what was meant.
        if getattr(s, "_forgetless_used", False):
            warnings.warn(
                f"strategy instance {s!r} was already used in a run and keeps its state; "
                "pass a new instance (or its name) for an independent run",
                RuntimeWarning,
                stacklevel=2,
            )
        s._forgetless_used = True
    loop = _Loop(learner, strategies, fit, on_event, trained_tasks, phases)

    _reset_peak_memory(device)
    start = time.perf_counter()
    if resume is None:
        untrained = loop.evaluate()
        progress: dict[str, Any] = {
            "baseline": untrained.accuracy,
            "baseline_perplexity": untrained.perplexity,
            "matrix": [],
            "task_aware": [],
            "perplexity": [],
            "train_times": [],
            "eval_times": [],
            "model_size": [],
            "routing": [],
            "elapsed": 0.0,
        }
        progress["baseline_eval"] = time.perf_counter() - start
        first = 0
        if on_event is not None:
            on_event(
                {
                    "event": "start",
                    "baseline": progress["baseline"],
                    **untrained.extra("baseline_perplexity"),
                }
            )
    else:
        progress = _restore(resume, learner, loop, strategies, phases)
        progress.setdefault("perplexity", [])  # checkpoints of classification runs lack them
        progress.setdefault("baseline_perplexity", None)
        progress.setdefault("routing", [])
        first = resume.task + 1
    bar = tqdm(
        total=loop.total_steps(),
        initial=loop.step,
        desc=stream.name,
        unit="step",
        disable=not fit.progress or None,
        leave=False,
        file=sys.stderr,
    )
    with bar:
        for phase in range(first, len(phases)):
            i = phases[phase]
            bar.set_postfix_str(
                f"task {i + 1}/{len(stream)}" if schedule is None
                else f"phase {phase + 1}/{len(phases)}, task {i + 1}"
            )  # fmt: skip
            t0 = time.perf_counter()
            if phase < trained_tasks:
                loop.recall_task(i, stream.tasks[i])
            else:
                loop.fit_task(i, stream.tasks[i], bar)
            t1 = time.perf_counter()
            evaluation = loop.evaluate()
            row, aware_row = evaluation.accuracy, evaluation.task_aware
            progress["matrix"].append(row)
            if aware_row is not None:
                progress["task_aware"].append(aware_row)
            if evaluation.perplexity is not None:
                progress["perplexity"].append(evaluation.perplexity)
            if evaluation.routing is not None:
                progress["routing"].append(evaluation.routing)
            progress["train_times"].append(t1 - t0)
            progress["eval_times"].append(time.perf_counter() - t1)
            progress.setdefault("model_size", []).append(_model_size(learner.model))
            if on_event is not None:
                on_event(
                    {
                        "event": "task",
                        "task": i,
                        **({} if schedule is None else {"phase": phase}),
                        "step": loop.step,
                        "accuracy": row,
                        "task_aware": aware_row,
                        "train_seconds": t1 - t0,
                        "eval_seconds": progress["eval_times"][-1],
                        **evaluation.extra(),
                    }
                )
            if on_task_end is not None:
                on_task_end(_snapshot(phase, learner, loop, strategies, progress, start))
    matrix, task_aware = progress["matrix"], progress["task_aware"]
    train_times, eval_times = progress["train_times"], progress["eval_times"]
    fresh = config is not None and not config.get("weights") and "model" in config
    _warn_if_barely_learned(matrix, progress["baseline"], loop, trained_tasks, fresh)
    if config is None:
        config = {"fit": fit.to_dict(), "strategy": strategy_name}
        if trained_tasks:
            config["trained_tasks"] = trained_tasks
        if router is not None:
            config["router"] = getattr(strategies[-1], "kind", strategies[-1].name)
    return Result(
        accuracy_matrix=matrix,
        baseline=progress["baseline"],
        task_aware_matrix=task_aware or None,
        perplexity_matrix=progress["perplexity"] or None,
        baseline_perplexity=progress["baseline_perplexity"],
        task_names=stream.task_names,
        scenario=stream.name,
        protocol=stream.protocol.value,
        strategy=strategy_name,
        seed=seed,
        config=config,
        curves=loop.curves,
        losses=loop.losses,
        timings={
            "train": sum(train_times),
            "eval": sum(eval_times),
            "baseline_eval": progress["baseline_eval"],
            "total": progress["elapsed"] + time.perf_counter() - start,
            "train_per_task": train_times,
            "eval_per_task": eval_times,
        },
        peak_memory_mb=_peak_memory_mb(device),
        strategy_state_bytes=sum(s.state_bytes() for s in strategies),
        model_size=progress.get("model_size", []),
        strategy_reports=_reports(learner, strategies),
        routing_accuracy=progress["routing"] or None,
        environment=_environment(device),
        schedule=None if schedule is None else list(phases),
    )


def _warn_if_barely_learned(
    matrix: list[list[float]],
    baseline: list[float],
    loop,
    trained_tasks: int = 0,
    fresh: bool = False,
) -> None:
    """Warn when the tasks trained in this run were barely learned: every figure of such a run
    (forgetting above all) describes an untrained model, which looks like "no forgetting" and
    misleads. Tasks of a trained start are not trained here, so they are left out. ``fresh``:
    the run drew the model's weights itself (a config without ``weights``), so what it had
    before training is a random initialisation; a model handed to ``train`` or loaded from
    weights may have been trained, and is called "the model as given"."""
    phases = loop.phases  # the task of each row (each task once, unless a schedule revisits)
    trained = range(trained_tasks, len(phases))
    if len(matrix) < len(phases) or not trained:
        return
    gain = sum(matrix[p][phases[p]] - baseline[phases[p]] for p in trained) / len(trained)
    if gain >= BARELY_LEARNED:
        return
    learned = 100 * sum(matrix[p][phases[p]] for p in trained) / len(trained)
    before = 100 * sum(baseline[phases[p]] for p in trained) / len(trained)
    # The model may have come trained (a trained start, a weights file, a model handed to
    # train): what it had before this run is a random initialisation only for a fresh one.
    if fresh and not trained_tasks:
        start = "the randomly initialised model"
    else:
        start = "the model as given, before this run trained it"
    steps = loop.step / len(trained)
    warnings.warn(
        f"the model barely learned its tasks: accuracy on each task right after training it "
        f"averages {learned:.1f}%, against {before:.1f}% for {start}, after about {steps:.0f} "
        "optimiser steps per task. Forgetting measured on it means little: train longer "
        "(--epochs, --iterations), raise the learning rate (--lr), or weaken the strategy's "
        "regularisation",
        RuntimeWarning,
        stacklevel=3,
    )


def _warn_if_bfloat16_is_emulated(fit: FitConfig, device: torch.device) -> None:
    """bfloat16 on a CPU without bfloat16 instructions (AVX512-BF16 or AMX) is emulated in
    float32 and runs several times slower (6x on an AVX2 CPU, BENCHMARKS.md): say so, once a
    run, since the option's only point is speed."""
    if fit.precision != "bfloat16" or device.type != "cpu":
        return
    try:
        units = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    except AttributeError:  # another torch: no probe, no claim
        return
    if not units:
        warnings.warn(
            "precision='bfloat16' on a CPU without bfloat16 instructions (AVX512-BF16, AMX): "
            f"torch emulates it, so steps run slower than float32 (CPU: "
            f"{torch.backends.cpu.get_cpu_capability()}); use the default float32 here",
            RuntimeWarning,
            stacklevel=3,
        )


def _check_trained_tasks(trained_tasks: int, stream: Stream, strategies: list[Strategy]) -> None:
    if (
        not isinstance(trained_tasks, int)
        or isinstance(trained_tasks, bool)
        or not 0 <= trained_tasks <= len(stream)
    ):
        raise ConfigError(
            f"trained_tasks must be a whole number from 0 to the stream's {len(stream)} tasks "
            f"(how many of its first tasks the given model has already learnt), got "
            f"{trained_tasks!r}"
        )
    if not trained_tasks:
        return
    for s in strategies:
        if s.trained_start_refusal:
            raise ConfigError(
                f"strategy {s.name!r} cannot start from a trained model (trained_tasks="
                f"{trained_tasks}): {s.trained_start_refusal}"
            )


def _seed(seed: int | torch.Generator) -> int:
    """The run's seed: ``seed``, or one drawn from a ``torch.Generator``."""
    if isinstance(seed, torch.Generator):
        return int(torch.randint(0, 2**31 - 1, (), generator=seed))
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer or a torch.Generator, got {seed!r}")
    return seed


def _check_schedule(
    schedule: Sequence[int] | None,
    stream: Stream,
    strategies: list[Strategy],
    trained_tasks: int,
) -> list[int]:
    """The task of each phase: ``schedule`` checked, or each task once, in order."""
    if schedule is None:
        return list(range(len(stream)))
    phases = list(schedule)
    T = len(stream)
    if not phases or not all(
        isinstance(t, int) and not isinstance(t, bool) and 0 <= t < T for t in phases
    ):
        raise ConfigError(
            f"a schedule lists tasks of the stream by index (0..{T - 1}), one per phase; got "
            f"{list(schedule)!r}"
        )
    missing = sorted(set(range(T)) - set(phases))
    if missing:
        raise ConfigError(
            f"the schedule {phases} never trains task(s) {', '.join(str(t) for t in missing)}; "
            "every task of the stream must be trained (cut the stream to fewer tasks instead)"
        )
    if trained_tasks:
        raise ConfigError("a trained start (trained_tasks) cannot be combined with a schedule")
    once = [s.name for s in strategies if not s.revisits]
    if once and len(set(phases)) != len(phases):
        raise ConfigError(
            f"strategy {', '.join(once)} learns each task once (it builds a part or its data "
            "per task), so it cannot revisit tasks; drop the schedule or the repeat"
        )
    return phases


def _snapshot(task, learner, loop, strategies, progress, start) -> Snapshot:
    return Snapshot(
        task=task,
        step=loop.step,
        model=learner.model.state_dict(),
        optimizer=learner.optimizer.state_dict(),
        generator=learner.generator.get_state(),
        strategies=[s.state_dict() for s in strategies],
        progress={
            **progress,
            "losses": loop.losses,
            "curves": loop.curves,
            "elapsed": progress["elapsed"] + time.perf_counter() - start,
        },
        task_weights=_task_weights(learner, strategies),
    )


def _task_weights(learner: Learner, strategies: Sequence[Strategy]) -> dict | None:
    for s in strategies:
        if s.overrides("task_weights"):
            weights = s.task_weights(learner)
            if weights is not None:
                return weights
    return None


def _restore(snapshot: Snapshot, learner, loop, strategies, phases: list[int]) -> dict[str, Any]:
    """Put the learner, the loop and the strategies back as they were after ``snapshot.task``.

    The order matters for models that change: every strategy first rebuilds the structure it
    gave the model (columns, masks, wrappers), then the weights load into it, then each
    strategy's state (whose model copies are made from the rebuilt model), then the optimiser,
    built over the rebuilt model's trainable parameters.
    """
    if not 0 <= snapshot.task < len(phases) or len(snapshot.strategies) != len(strategies):
        raise ConfigError(
            f"the checkpoint (after task {snapshot.task + 1}, {len(snapshot.strategies)} "
            f"strategies) does not fit this run ({len(phases)} tasks, {len(strategies)} "
            "strategies)"
        )
    learner.task_index = phases[snapshot.task]
    for strategy, state in zip(strategies, snapshot.strategies, strict=True):
        strategy.rebuild(learner, state)
    learner.record_initial_values()
    try:
        learner.model.load_state_dict(snapshot.model)
    except RuntimeError as err:
        raise ConfigError(
            f"the checkpoint's weights do not fit the model: {err}. A strategy that changes the "
            "model must rebuild its structure from its saved state (Strategy.rebuild)"
        ) from err
    for strategy, state in zip(strategies, snapshot.strategies, strict=True):
        strategy.load_state_dict(state, learner)
    learner.new_optimizer()
    try:
        learner.optimizer.load_state_dict(snapshot.optimizer)
    except ValueError as err:
        raise ConfigError(
            f"the checkpoint's optimiser does not fit the model's trainable parameters: {err}. "
            "A strategy that changes the model must restore its requires_grad flags in rebuild"
        ) from err
    learner.generator.set_state(snapshot.generator)
    progress = dict(snapshot.progress)
    loop.step = snapshot.step
    loop.losses = list(progress.pop("losses"))
    loop.curves = list(progress.pop("curves"))
    return progress


def _fit_config(fit: FitConfig | None, options: dict) -> FitConfig:
    if fit is not None and options:
        raise ConfigError("pass either fit=FitConfig(...) or loop options as keywords, not both")
    if fit is not None:
        return fit
    known = FitConfig.__dataclass_fields__.keys()
    unknown = sorted(options.keys() - known)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return FitConfig(**options)


def _check_task_ids(model: nn.Module, strategies: Sequence[Strategy], stream: Stream) -> None:
    """Refuse pairings that cannot give honest numbers: a model or method that answers by the
    task id, evaluated where the task id is not given (class- or domain-incremental learning)
    with nothing to infer it; and a method that calls the model without task ids beside one."""
    users = [s.name for s in strategies if s.needs_task_id]
    if takes_task_id(model):
        users.insert(0, f"the model ({type(model).__name__}, takes_task_id)")
    if not users:
        return
    if stream.protocol is not Protocol.TASK and not any(s.infers_task for s in strategies):
        raise ConfigError(
            f"{', '.join(users)} needs the task id at test time, which the "
            f"{stream.protocol.value}-incremental protocol does not give: use --protocol task, "
            "or infer it with a router (--router entropy, mahalanobis or ncm)"
        )
    blind = [s.name for s in strategies if not s.supports_task_id_models]
    if blind:
        raise ConfigError(
            f"strategy {', '.join(blind)} calls the model without task ids, so it cannot run "
            f"beside {', '.join(users)}; choose another combination"
        )


def _router(
    router: str | Strategy, stream: Stream, strategies: Sequence[Strategy], model: nn.Module
) -> Strategy:
    """The router for ``train(router=...)``, after refusing pairings where it would mean
    nothing: the task given (task-IL), or nothing that answers by the task id (neither a
    method that needs it nor a model that takes it)."""
    from forgetless.routing import make_router

    if stream.protocol is Protocol.TASK:
        raise ConfigError(
            "a router infers the task where it is not given; under the task-incremental "
            "protocol it is given: use --protocol class or domain, or leave out --router"
        )
    made = make_router(router) if isinstance(router, str) else router
    if not made.infers_task:
        raise ConfigError(f"router must infer the task (infers_task), got {made!r}")
    if not takes_task_id(model) and not any(s.needs_task_id for s in strategies):
        names = "+".join(s.name for s in strategies)
        raise ConfigError(
            f"a router chooses the part of the model that answers each input, and {names} "
            "answers every task with the same model: use it with a method that needs the task "
            "id (pnn, packnet, hat, hypermask, specialists), or leave out --router"
        )
    return made


def _model_size(model: nn.Module) -> dict[str, int]:
    """Parameters (all, and those with ``requires_grad``) and bytes of parameters and buffers."""
    params = list(model.parameters())
    return {
        "parameters": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "bytes": sum(t.numel() * t.element_size() for t in (*params, *model.buffers())),
    }


def _reports(learner: Learner, strategies: Sequence[Strategy]) -> dict[str, Any]:
    reports: dict[str, Any] = {}
    for s in strategies:
        report = s.report(learner)
        if report is not None:
            key, n = s.name, 2
            while key in reports:  # the same method twice in a hybrid
                key, n = f"{s.name}#{n}", n + 1
            reports[key] = report
    return reports


def _check_outputs(learner: Learner, stream: Stream) -> None:
    """The model must give ``[batch, *target_shape, num_outputs]`` scores: ``[B, C]`` logits
    for labels, ``[B, T, V]`` for next-token targets."""
    test = stream.tasks[0].test
    x = test.inputs(slice(0, 2)).to(learner.device)
    was_training = learner.model.training
    learner.model.eval()
    try:
        with torch.no_grad():
            out = call_model(learner.model, x, 0)
    except RuntimeError as err:
        raise ConfigError(
            f"the model cannot take this stream's inputs of shape {stream.input_shape}: {err}"
        ) from err
    finally:
        learner.model.train(was_training)
    expected = (len(x), *test.target_shape, stream.num_outputs)
    if tuple(out.shape) != expected:
        shape = ", ".join(["batch", *map(str, expected[1:])])
        hint = " (a language model, e.g. --model gpt, for text)" if test.target_shape else ""
        raise ConfigError(
            f"the model must output [{shape}] logits for stream {stream.name!r}{hint}, "
            f"got {tuple(out.shape)}"
        )


def _diverged(sums: torch.Tensor, first_step: int, index: int, epoch: int, fit: FitConfig):
    """Raise the TrainingError for an epoch whose running loss sums ``sums`` turned non-finite
    (the sums after each of its steps, which begin at step ``first_step + 1``)."""
    bad = int((~torch.isfinite(sums)).nonzero()[0])
    loss = float(sums[bad] - (sums[bad - 1] if bad else 0.0))
    raise TrainingError(
        f"the training loss became {loss} at step {first_step + bad + 1} (task {index + 1}, "
        f"epoch {epoch + 1}): training diverged, and every number after it would be "
        f"meaningless. Lower the learning rate (lr = {fit.lr:g}) or the strategy's strength, "
        "or check the inputs for extreme values"
    )


class _Loop:
    """The fit and evaluate steps, with the strategies' overridden hooks resolved once."""

    def __init__(
        self,
        learner: Learner,
        strategies: list[Strategy],
        fit: FitConfig,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        trained_tasks: int = 0,
        phases: list[int] | None = None,
        eval_input_bytes: int | None = None,
    ):
        self.learner = learner
        self.trained_tasks = trained_tasks
        self.phases = list(range(len(learner.stream))) if phases is None else phases
        self.on_event = on_event
        self._window: torch.Tensor | None = None  # losses since the last "loss" event
        self._window_steps = 0
        self._window_task = -1
        self.strategies = strategies
        self.fit = fit
        self.hooks = {
            hook: [getattr(s, hook) for s in strategies if s.overrides(hook)] for hook in HOOKS
        }
        self.curves: list[dict] = []
        self.losses: list[dict] = []
        self.step = 0
        self.scheduler = None  # the task's learning-rate schedule (FitConfig.scheduler)
        self.bfloat16 = fit.precision == "bfloat16"  # forward passes of steps under autocast
        self.fast_step: MLPStep | None = None  # the task's step without autograd, if it applies
        self.fast_path_refusal: str | None = None  # why it does not, for the last task
        self._tests: dict[int, Any] = {}  # each task's test set on the device
        self._test_versions: dict[int, int] = {}  # of the test inputs converted once
        self._test_bytes = 0  # converted test inputs kept (at most eval_input_bytes)
        # The cap on them (EVAL_INPUT_BYTES; 0: every batch converted, as before).
        self.eval_input_bytes = EVAL_INPUT_BYTES if eval_input_bytes is None else eval_input_bytes

    def total_steps(self) -> int:
        # Training data may change per task (joint, cumulative); the bar is a guide, updated exactly.
        tasks = self.learner.stream.tasks
        return sum(self._steps(len(tasks[i].train)) for i in self.phases[self.trained_tasks :])

    def _steps(self, examples: int, iterations_scale: int = 1) -> int:
        """Optimiser steps to fit ``examples`` examples under the epochs or iterations budget."""
        if examples == 0:
            return 0
        if self.fit.iterations is not None:
            return self.fit.iterations * iterations_scale
        return self.fit.epochs * -(-examples // self.fit.batch_size)

    def recall_task(self, index: int, task) -> None:
        """A task the model learnt before this run (a trained start): no step is taken; the
        ``after_task`` hooks run, with ``learner.task_learnt_before`` set, as they would after
        training it, so they build their importances, buffers or old models from its data."""
        learner = self.learner
        learner.task_index = index
        learner.model.train()  # the mode fit_task leaves the model in for these hooks
        learner.task_learnt_before = True
        try:
            for hook in self.hooks["after_task"]:
                hook(learner, task)
        finally:
            learner.task_learnt_before = False

    def fit_task(self, index: int, task, bar) -> None:
        learner, fit = self.learner, self.fit
        learner.task_index = index
        for hook in self.hooks["change_model"]:
            hook(learner, task)
        for hook in self.hooks["before_task"]:
            hook(learner, task)
        learner.record_initial_values()  # of whatever the hooks added, for reset_model
        data = TrainingData.of_task(task, index)
        for hook in self.hooks["training_data"]:
            data = hook(learner, task, data)
        if fit.reset_optimizer or index == 0:
            learner.new_optimizer()
        elif learner.optimizer_is_stale():  # parameters added, wrapped or frozen: train them
            learner.new_optimizer(keep_state=True)
        self.scheduler = None if fit.scheduler is None else fit.scheduler(learner.optimizer)
        self.fast_step = self._fast_step()
        # Tensor-resident on the device for the whole task: one copy, then batches are
        # indexed there (a no-op on the CPU).
        data = data.to(learner.device)
        steps = self._steps(len(data), data.iterations_scale)
        learner.task_steps = steps
        learner.epoch_steps = -(-len(data) // fit.batch_size)  # batches per pass over the data
        planned = self._steps(len(task.train))
        if steps != planned:  # joint/cumulative fit more (or less) than the task's own data
            bar.total += steps - planned
            bar.refresh()
        learner.model.train()
        for epoch, batches in enumerate(self._epochs(len(data), steps)):
            # Running sums of the epoch's losses, slot k+1 = slot k + loss k: the same float
            # additions in the same order as one accumulator, and a NaN or inf stays in every
            # later slot. So the first non-finite step is found once per epoch, at the .item()
            # the mean loss needs anyway, with no device sync per step.
            sums = torch.zeros(len(batches) + 1, device=learner.device).unbind()
            first_step = self.step
            for k, idx in enumerate(batches):
                loss = self._train_step(data, idx, index)
                torch.add(sums[k], loss, out=sums[k + 1])
                bar.update(1)
                if self.on_event is not None:
                    self._log_loss(index, loss)
            total = sums[-1].item()
            if not math.isfinite(total):
                _diverged(torch.stack(sums[1:]), first_step, index, epoch, fit)
            self.losses.append(
                {"task": index, "epoch": epoch, "step": self.step, "loss": total / len(batches)}
            )
        for hook in self.hooks["after_task"]:
            hook(learner, task)

    def _log_loss(self, index: int, loss: torch.Tensor) -> None:
        """Add a step's loss to the window; every ``log_every`` steps, report its mean (one
        ``.item()`` per window, so the device is not synchronised at every step)."""
        if self._window is None or self._window_task != index:
            self._window, self._window_steps, self._window_task = torch.zeros_like(loss), 0, index
        self._window += loss
        self._window_steps += 1
        if self.step % self.fit.log_every == 0:
            mean = self._window.item() / self._window_steps
            self.on_event({"event": "loss", "task": index, "step": self.step, "loss": mean})
            self._window.zero_()
            self._window_steps = 0

    def _epochs(self, n: int, steps: int):
        """Batches of indices, reshuffled each pass, until ``steps`` steps are taken."""
        size = self.fit.batch_size
        while steps > 0:
            # Drawn on the CPU (the run's generator: the same order on every device), moved
            # to the data's device once per pass.
            order = torch.randperm(n, generator=self.learner.generator).to(self.learner.device)
            batches = list(order.split(size))[:steps]
            steps -= len(batches)
            yield batches

    def _fast_step(self) -> MLPStep | None:
        """The hand-written step for this task's model and optimiser, where it applies."""
        learner, fit = self.learner, self.fit
        self.fast_path_refusal = refusal(
            fit.fast_path,
            learner.model,
            learner.optimizer,
            self.strategies,
            precision=fit.precision,
            loss=fit.loss,
            scheduler=fit.scheduler,
            output_mask=learner.output_mask,
            target_shape=learner.stream.target_shape,
        )
        if self.fast_path_refusal is not None:
            return None
        layers = mlp_layers(learner.model)
        assert layers is not None  # refusal checked it
        penalty = closed_form_penalty(self.strategies, learner)
        return MLPStep(layers, learner.optimizer, fused=fit.fast_path == "fused", penalty=penalty)

    def _train_step(self, data: TrainingData, idx: torch.Tensor, index: int) -> torch.Tensor:
        learner, hooks = self.learner, self.hooks
        device = learner.device
        x = data.examples.inputs(idx).to(device, non_blocking=True)
        y = rows(data.examples.y, idx).to(device, non_blocking=True)
        t = rows(data.task_ids, idx).to(device, non_blocking=True)
        learner.new_examples = len(x)
        for hook in hooks["batch"]:
            x, y, t = hook(learner, x, y, t)
        if self.fast_step is not None and x.dtype == torch.float32:
            loss, logits = self.fast_step(x, y)
            learner.outputs = logits
        else:
            loss, logits = self._autograd_step(x, y, t)
        for hook in hooks["after_step"]:
            hook(learner, x, y, t, logits)
        self.step += 1
        if self.fit.eval_every and self.step % self.fit.eval_every == 0:
            evaluation = self.evaluate()
            curve = {"task": index, "step": self.step, "accuracy": evaluation.accuracy}
            curve.update(evaluation.extra())
            self.curves.append(curve)
            if self.on_event is not None:
                self.on_event({"event": "curve", **curve})
            learner.model.train()
        return loss.detach()

    def _autograd_step(
        self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, loss and penalties, backward and the optimiser's step: the loss and the
        (masked) logits."""
        learner, hooks = self.learner, self.hooks
        if self.bfloat16:
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                outputs = learner.forward(x, t)
            # Losses, penalties and what strategies keep of the outputs stay float32.
            learner.outputs = outputs.float()
        else:
            learner.outputs = learner.forward(x, t)
        logits = learner.mask(learner.outputs, t)
        loss = None
        for hook in hooks["loss"]:
            loss = hook(learner, x, y, t, logits)
            if loss is not None:
                break
        if loss is None:
            loss = cross_entropy(logits, y) if self.fit.loss is None else self.fit.loss(logits, y)
        for hook in hooks["penalty"]:
            term = hook(learner, x, y, t, logits)
            if term is not None:
                loss = loss + term
        optimizer = learner.optimizer
        clear_grads(optimizer)  # zero_grad(set_to_none=True) and step(), without torch._dynamo
        loss.backward()
        for hook in hooks["after_backward"]:
            hook(learner)
        take_step(optimizer)
        if self.scheduler is not None:
            self.scheduler.step()
        return loss, logits

    def evaluate_all(self) -> list[float]:
        """Accuracy on every task's test set, in stream order."""
        return self.evaluate().accuracy

    def evaluate_with_task_aware(self) -> tuple[list[float], list[float] | None]:
        """Accuracy on every task's test set and the task-aware accuracy (see :meth:`evaluate`)."""
        evaluation = self.evaluate()
        return evaluation.accuracy, evaluation.task_aware

    @torch.no_grad()
    def evaluate(self) -> Evaluation:
        """Every task's test set, in stream order: the accuracy over all predictions (one per
        example, or one per position for sequences); for class-IL, the task-aware accuracy (the
        same predictions restricted to the task's own units, as if its identity were given: how
        the DER paper and Mammoth report task-IL figures of a class-IL run); for sequence
        targets, the perplexity ``exp(sum of token NLLs / tokens)`` over every test token.

        Counts and NLL sums stay on the device and are read once per task, not per batch; the
        NLL is summed in float64, so the perplexity is that of all tokens, not a mean of batch
        means."""
        learner = self.learner
        device = learner.device
        was_training = learner.model.training
        learner.model.eval()
        routing = bool(self.hooks["route"])
        aware = routing or learner.stream.protocol is Protocol.CLASS
        wide = torch.float32 if device.type == "mps" else torch.float64
        accuracy, task_aware, perplexity, routed = [], [], [], []
        for j, task in enumerate(learner.stream.tasks):
            test = self._test_set(j, task)
            sequences = bool(test.target_shape)
            units = torch.tensor(task.units, device=device)
            # correct, correct within the task's units, sum of token NLLs, inputs routed to
            # task j (MPS has no float64)
            totals = torch.zeros(4, dtype=wide, device=device)
            correct, correct_aware, nll_sum, hits = totals.unbind()  # views, made once
            rows_per_pass = self._eval_rows(test)
            for start in range(0, len(test), rows_per_pass):
                rows = slice(start, start + rows_per_pass)
                x = test.inputs(rows).to(device)
                y = test.y[rows].to(device)
                routes = self._route(x) if routing else None
                if routes is None:
                    scores = self._predict(x, j)
                    given = scores
                else:  # the task inferred; and given, for the task-aware row
                    scores = learner.routed_logits(x, routes)
                    given = learner.forward(x, j)
                    hits += (routes == j).sum()
                correct += (scores.argmax(dim=-1) == y).sum()
                if aware:
                    within = units[given.index_select(-1, units).argmax(dim=-1)]
                    correct_aware += (within == y).sum()
                if sequences:
                    nll = cross_entropy(scores, y, reduction="none")
                    nll_sum += nll.sum(dtype=wide)
            self._check_test_inputs(j, test)
            correct, correct_aware, nll_sum, hits = totals.tolist()  # this task's one sync
            predictions = test.y.numel()
            accuracy.append(int(correct) / predictions)
            task_aware.append(int(correct_aware) / predictions)
            routed.append(int(hits) / len(test))
            if sequences:
                perplexity.append(_exp(nll_sum / predictions))
        learner.model.train(was_training)
        return Evaluation(
            accuracy,
            task_aware if aware else None,
            perplexity if len(perplexity) == len(accuracy) else None,
            routed if routing else None,
        )

    def _test_set(self, j: int, task) -> Any:
        """Task ``j``'s test set on the device, copied there once per run, not per
        evaluation (on the CPU, the set itself); with its inputs model-ready (converted to
        float once) while the run's converted test inputs stay within
        ``eval_input_bytes`` (:data:`EVAL_INPUT_BYTES`)."""
        if j not in self._tests:
            test = task.test.to(self.learner.device)
            size = test.x.numel() * 4  # float32
            if test.scale is not None and self._test_bytes + size <= self.eval_input_bytes:
                self._test_bytes += size
                test = ArraySet(test.inputs(), test.y)  # x * scale + shift, as each batch had
                self._test_versions[j] = test.x._version
            self._tests[j] = test
        return self._tests[j]

    def _check_test_inputs(self, j: int, test: Any) -> None:
        """Drop task ``j``'s converted test inputs if anything wrote into them in place (a
        hook or a model changing its input batch, which used to be a fresh tensor): its next
        evaluation then converts them again, so every evaluation sees the stored inputs."""
        version = self._test_versions.get(j)
        if version is not None and test.x._version != version:
            del self._tests[j], self._test_versions[j]
            self._test_bytes -= test.x.numel() * test.x.element_size()

    def _eval_rows(self, test) -> int:
        """Examples per evaluation pass: ``eval_batch_size``, fewer where one pass would
        produce more than :data:`EVAL_LOGITS` scores (long sequences, large vocabularies)."""
        per_row = max(1, test.y[:1].numel()) * self.learner.stream.num_outputs
        return max(1, min(self.fit.eval_batch_size, EVAL_LOGITS // per_row))

    def _route(self, x: torch.Tensor) -> torch.Tensor | None:
        for hook in self.hooks["route"]:
            routes = hook(self.learner, x)
            if routes is not None:
                return routes
        return None

    def _predict(self, x: torch.Tensor, j: int) -> torch.Tensor:
        for hook in self.hooks["predict"]:
            scores = hook(self.learner, x, j)
            if scores is not None:
                return scores
        return self.learner.logits(x, j)


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of every task of the stream (a row of each matrix).

    Attributes:
        accuracy: per task, the fraction of correct predictions (next-token accuracy for text).
        task_aware: class-IL only: the same predictions restricted to each task's units; with
            a router, the model's answers with the true task given (restricted to its units).
        perplexity: sequence streams only: per task, ``exp`` of the mean NLL per token.
        routing: with a router only: per task, the fraction of its test inputs routed to it.
    """

    accuracy: list[float]
    task_aware: list[float] | None = None
    perplexity: list[float] | None = None
    routing: list[float] | None = None

    def extra(self, name: str = "perplexity") -> dict[str, Any]:
        """What an event record adds for sequence streams (``{name: perplexity row}``) and for
        runs with a router (``{"routing": row}``); nothing otherwise, so those records stay as
        they were."""
        out = {} if self.perplexity is None else {name: self.perplexity}
        if self.routing is not None and name == "perplexity":
            out["routing"] = self.routing
        return out


def _exp(value: float) -> float:
    """``exp(value)``, infinite where it overflows (a model that puts zero probability on a
    token has infinite perplexity)."""
    try:
        return math.exp(value)
    except OverflowError:
        return math.inf


def _reset_peak_memory(device: torch.device) -> None:
    """Start the peak-memory count of this run afresh, where the platform allows, so that a
    process running several runs (a notebook, a sweep worker) reports each run's own peak."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux >= 4.0: "5" resets the process's peak resident set size (VmHWM)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # in kB
    except OSError:
        pass
    # Elsewhere the peak since the process started. ru_maxrss is in KiB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _environment(device: torch.device) -> dict[str, str]:
    from forgetless.provenance import provenance

    return {
        **provenance(),  # forgetless's version and git commit
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "threads": str(torch.get_num_threads()),
    }
