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
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from forgetless.errors import ConfigError, TrainingError
from forgetless.learner import Learner, TrainingData
from forgetless.result import Result
from forgetless.scenarios.stream import Protocol, Stream
from forgetless.strategies import make_strategies
from forgetless.strategies.base import HOOKS, Strategy
from forgetless.validation import available_device, check_device_name, check_range

OPTIMIZERS = ("sgd", "adam")
# Mean gain of each task's accuracy right after training it over its accuracy at random
# initialisation below which a run is reported as barely trained.
BARELY_LEARNED = 0.05


@dataclass(frozen=True)
class FitConfig:
    """How each task is fitted and evaluated.

    Attributes:
        epochs: passes over each task's training data (ignored when ``iterations`` is set).
        iterations: optimiser steps per task, instead of epochs (van de Ven's protocols).
        batch_size: examples per step.
        optimizer: ``"sgd"`` or ``"adam"``.
        lr: learning rate.
        momentum: SGD momentum.
        reset_optimizer: build a fresh optimiser at each task (the usual protocol).
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
    """

    epochs: int = 1
    iterations: int | None = None
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    reset_optimizer: bool = True
    eval_every: int | None = None
    log_every: int = 50
    eval_batch_size: int = 1024
    device: str = "cpu"
    threads: int | None = None
    progress: bool = True
    retain_raw_data: bool = True

    def __post_init__(self) -> None:
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
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        params = [p for p in model.parameters() if p.requires_grad]
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr)
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum)


@dataclass
class Snapshot:
    """A run's state after a completed task: enough to continue it and end with the same
    numbers as a run that was never stopped.

    :func:`train` passes one to ``on_task_end`` after each task, and continues from one given
    as ``resume``. Tensors are the live ones (not copies): save it (see
    :mod:`forgetless.runs`) before training goes on.

    Attributes:
        task: index of the last completed task.
        step: optimiser steps taken so far.
        model: the model's ``state_dict``.
        optimizer: the optimiser's ``state_dict``.
        generator: the state of the run's random generator (batch order, sampling).
        strategies: each strategy's :meth:`~forgetless.strategies.Strategy.state_dict`.
        progress: what the result has so far: ``baseline``, ``matrix``, ``task_aware``,
            ``losses``, ``curves``, ``train_times``, ``eval_times``, ``baseline_eval``,
            ``elapsed`` (wall seconds of the runs so far).
    """

    task: int
    step: int
    model: dict[str, torch.Tensor]
    optimizer: Any
    generator: torch.Tensor
    strategies: list[Any]
    progress: dict[str, Any]


def train(
    stream: Stream,
    model: nn.Module,
    strategy: str | Strategy | Sequence[Strategy | str] = "finetune",
    fit: FitConfig | None = None,
    seed: int = 0,
    config: dict | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    on_task_end: Callable[[Snapshot], None] | None = None,
    resume: Snapshot | None = None,
    **fit_options,
) -> Result:
    """Train ``model`` on ``stream`` task by task and measure the accuracy matrix.

    For each task ``i``: the strategies' ``before_task`` hooks run, the model fits the task's data
    (``training_data`` hooks may widen it), ``after_task`` hooks run, then every task of the
    stream is evaluated, giving row ``i`` of ``R``. The untrained model is evaluated first (the
    FWT baseline).

    Args:
        stream: the tasks, e.g. from :func:`forgetless.scenarios.make_stream`.
        model: any ``nn.Module`` mapping a batch of inputs to ``stream.num_outputs`` logits.
        strategy: a name (``"finetune"``), ``"a+b"``, an instance, or a list (a hybrid).
        fit: loop settings; or pass them as keywords (``epochs=1, lr=0.1``).
        seed: seeds batch order and strategy sampling (seed the model's init yourself, or use
            :func:`forgetless.experiment.run`, which does).
        config: recorded in the result as is.
        on_event: called with plain-data records as training goes: ``{"event": "start",
            "baseline"}``, ``"loss"`` (``task``, ``step``, mean ``loss`` over the last
            ``log_every`` steps), ``"curve"`` (with ``eval_every``), ``"task"`` after each task
            (``task``, ``step``, ``accuracy`` row, ``task_aware`` row or None,
            ``train_seconds``, ``eval_seconds``).
        on_task_end: called with a :class:`Snapshot` after each task (for checkpoints).
        resume: continue from this snapshot, taken from a run with the same stream, model
            initialisation, strategies, loop settings and seed; tasks up to
            ``resume.task`` are not trained again.

    Returns:
        A :class:`Result` with the matrix, the baseline, curves, losses and timings.
    """
    fit = _fit_config(fit, fit_options)
    strategies = make_strategies(strategy)
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
    if fit.threads is not None:
        torch.set_num_threads(fit.threads)
    device = available_device(fit.device)
    generator = torch.Generator().manual_seed(seed)
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
    loop = _Loop(learner, strategies, fit, on_event)

    _reset_peak_memory(device)
    start = time.perf_counter()
    if resume is None:
        progress: dict[str, Any] = {
            "baseline": loop.evaluate_all(),
            "matrix": [],
            "task_aware": [],
            "train_times": [],
            "eval_times": [],
            "elapsed": 0.0,
        }
        progress["baseline_eval"] = time.perf_counter() - start
        first = 0
        if on_event is not None:
            on_event({"event": "start", "baseline": progress["baseline"]})
    else:
        progress = _restore(resume, learner, loop, strategies, len(stream))
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
        for i in range(first, len(stream)):
            bar.set_postfix_str(f"task {i + 1}/{len(stream)}")
            t0 = time.perf_counter()
            loop.fit_task(i, stream.tasks[i], bar)
            t1 = time.perf_counter()
            row, aware_row = loop.evaluate_with_task_aware()
            progress["matrix"].append(row)
            if aware_row is not None:
                progress["task_aware"].append(aware_row)
            progress["train_times"].append(t1 - t0)
            progress["eval_times"].append(time.perf_counter() - t1)
            if on_event is not None:
                on_event(
                    {
                        "event": "task",
                        "task": i,
                        "step": loop.step,
                        "accuracy": row,
                        "task_aware": aware_row,
                        "train_seconds": t1 - t0,
                        "eval_seconds": progress["eval_times"][-1],
                    }
                )
            if on_task_end is not None:
                on_task_end(_snapshot(i, learner, loop, strategies, progress, start))
    matrix, task_aware = progress["matrix"], progress["task_aware"]
    train_times, eval_times = progress["train_times"], progress["eval_times"]
    _warn_if_barely_learned(matrix, progress["baseline"], loop)
    strategy_name = "+".join(s.name for s in strategies)
    return Result(
        accuracy_matrix=matrix,
        baseline=progress["baseline"],
        task_aware_matrix=task_aware or None,
        task_names=stream.task_names,
        scenario=stream.name,
        protocol=stream.protocol.value,
        strategy=strategy_name,
        seed=seed,
        config=config if config is not None else {"fit": asdict(fit), "strategy": strategy_name},
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
        environment=_environment(device),
    )


def _warn_if_barely_learned(matrix: list[list[float]], baseline: list[float], loop) -> None:
    """Warn when tasks were barely learned: every figure of such a run (forgetting above all)
    describes an untrained model, which looks like "no forgetting" and misleads."""
    if len(matrix) < len(baseline):
        return
    gain = sum(matrix[i][i] - baseline[i] for i in range(len(baseline))) / len(baseline)
    if gain >= BARELY_LEARNED:
        return
    learned = 100 * sum(matrix[i][i] for i in range(len(baseline))) / len(baseline)
    untrained = 100 * sum(baseline) / len(baseline)
    steps = loop.step / len(baseline)
    warnings.warn(
        f"the model barely learned its tasks: accuracy on each task right after training it "
        f"averages {learned:.1f}%, against {untrained:.1f}% at random initialisation, after "
        f"about {steps:.0f} optimiser steps per task. Forgetting measured on it means little: "
        "train longer (--epochs, --iterations), raise the learning rate (--lr), or weaken the "
        "strategy's regularisation",
        RuntimeWarning,
        stacklevel=3,
    )


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
    )


def _restore(snapshot: Snapshot, learner, loop, strategies, n_tasks: int) -> dict[str, Any]:
    """Put the learner, the loop and the strategies back as they were after ``snapshot.task``."""
    if not 0 <= snapshot.task < n_tasks or len(snapshot.strategies) != len(strategies):
        raise ConfigError(
            f"the checkpoint (after task {snapshot.task + 1}, {len(snapshot.strategies)} "
            f"strategies) does not fit this run ({n_tasks} tasks, {len(strategies)} strategies)"
        )
    learner.model.load_state_dict(snapshot.model)
    learner.task_index = snapshot.task
    learner.optimizer.load_state_dict(snapshot.optimizer)
    learner.generator.set_state(snapshot.generator)
    for strategy, state in zip(strategies, snapshot.strategies, strict=True):
        strategy.load_state_dict(state, learner)
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


def _check_outputs(learner: Learner, stream: Stream) -> None:
    x = stream.tasks[0].test.inputs(slice(0, 2)).to(learner.device)
    was_training = learner.model.training
    learner.model.eval()
    try:
        with torch.no_grad():
            out = learner.model(x)
    except RuntimeError as err:
        raise ConfigError(
            f"the model cannot take this stream's inputs of shape {stream.input_shape}: {err}"
        ) from err
    finally:
        learner.model.train(was_training)
    if out.ndim != 2 or out.shape[1] != stream.num_outputs:
        raise ConfigError(
            f"the model must output [batch, {stream.num_outputs}] logits for stream {stream.name!r}, "
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
    ):
        self.learner = learner
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

    def total_steps(self) -> int:
        # Training data may change per task (joint, cumulative); the bar is a guide, updated exactly.
        return sum(self._steps(len(task.train)) for task in self.learner.stream)

    def _steps(self, examples: int, iterations_scale: int = 1) -> int:
        """Optimiser steps to fit ``examples`` examples under the epochs or iterations budget."""
        if examples == 0:
            return 0
        if self.fit.iterations is not None:
            return self.fit.iterations * iterations_scale
        return self.fit.epochs * -(-examples // self.fit.batch_size)

    def fit_task(self, index: int, task, bar) -> None:
        learner, fit = self.learner, self.fit
        learner.task_index = index
        for hook in self.hooks["before_task"]:
            hook(learner, task)
        data = TrainingData.of_task(task, index)
        for hook in self.hooks["training_data"]:
            data = hook(learner, task, data)
        if fit.reset_optimizer or index == 0:
            learner.new_optimizer()
        steps = self._steps(len(data), data.iterations_scale)
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
            order = torch.randperm(n, generator=self.learner.generator)
            batches = list(order.split(size))[:steps]
            steps -= len(batches)
            yield batches

    def _train_step(self, data: TrainingData, idx: torch.Tensor, index: int) -> torch.Tensor:
        learner, hooks = self.learner, self.hooks
        device = learner.device
        x = data.examples.inputs(idx).to(device, non_blocking=True)
        y = data.examples.y[idx].to(device, non_blocking=True)
        t = data.task_ids[idx].to(device, non_blocking=True)
        learner.new_examples = len(x)
        for hook in hooks["batch"]:
            x, y, t = hook(learner, x, y, t)
        learner.outputs = learner.model(x)
        logits = learner.mask(learner.outputs, t)
        loss = None
        for hook in hooks["loss"]:
            loss = hook(learner, x, y, t, logits)
            if loss is not None:
                break
        if loss is None:
            loss = F.cross_entropy(logits, y)
        for hook in hooks["penalty"]:
            term = hook(learner, x, y, t, logits)
            if term is not None:
                loss = loss + term
        optimizer = learner.optimizer
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for hook in hooks["after_backward"]:
            hook(learner)
        optimizer.step()
        for hook in hooks["after_step"]:
            hook(learner, x, y, t, logits)
        self.step += 1
        if self.fit.eval_every and self.step % self.fit.eval_every == 0:
            curve = {"task": index, "step": self.step, "accuracy": self.evaluate_all()}
            self.curves.append(curve)
            if self.on_event is not None:
                self.on_event({"event": "curve", **curve})
            learner.model.train()
        return loss.detach()

    @torch.no_grad()
    def evaluate_all(self) -> list[float]:
        """Accuracy on every task's test set, in stream order."""
        return self.evaluate_with_task_aware()[0]

    def evaluate_with_task_aware(self) -> tuple[list[float], list[float] | None]:
        """Accuracy on every task's test set and, for class-IL, the task-aware accuracy: the
        same predictions restricted to the task's own units, as if its identity were given (how
        the DER paper and Mammoth report task-IL figures of a class-IL run). ``None`` for
        other protocols, where the first list already is that."""
        learner = self.learner
        was_training = learner.model.training
        learner.model.eval()
        aware = learner.stream.protocol is Protocol.CLASS
        accuracies, task_aware = [], []
        for j, task in enumerate(learner.stream.tasks):
            correct = correct_aware = 0
            units = torch.tensor(task.units, device=learner.device)
            for start in range(0, len(task.test), self.fit.eval_batch_size):
                rows = slice(start, start + self.fit.eval_batch_size)
                x = task.test.inputs(rows).to(learner.device)
                y = task.test.y[rows].to(learner.device)
                scores = self._predict(x, j)
                correct += int((scores.argmax(dim=1) == y).sum())
                if aware:
                    within = units[scores.index_select(1, units).argmax(dim=1)]
                    correct_aware += int((within == y).sum())
            accuracies.append(correct / len(task.test))
            task_aware.append(correct_aware / len(task.test))
        learner.model.train(was_training)
        return accuracies, (task_aware if aware else None)

    def _predict(self, x: torch.Tensor, j: int) -> torch.Tensor:
        for hook in self.hooks["predict"]:
            scores = hook(self.learner, x, j)
            if scores is not None:
                return scores
        return self.learner.logits(x, j)


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
    from forgetless import __version__

    return {
        "forgetless": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "threads": str(torch.get_num_threads()),
    }
