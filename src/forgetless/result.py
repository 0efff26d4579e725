"""The Result of a run: everything metrics, reports and stores need, as plain data."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from forgetless import metrics
from forgetless.errors import ConfigError
from forgetless.json_file import loads_json

FORMAT_VERSION = 1


@dataclass
class Result:
    """What a run measured. Serialises to JSON and back without loss.

    Units: accuracies and the metrics built on them (ACC, BWT, forgetting, ...) are
    *fractions* in ``[0, 1]`` here and in ``result.json``; the command line and the tables
    (``str(result)``, :meth:`table`) show them in percent (points).

    Attributes:
        accuracy_matrix: ``R[i][j]``, accuracy on task ``j`` after training task ``i`` (fractions);
            for text, next-token accuracy over every position of the task's held-out text.
        baseline: accuracy on each task of the randomly initialised model (for FWT).
        task_aware_matrix: class-IL runs only: like ``accuracy_matrix``, with each prediction
            restricted to the task's own classes (task identity given at test time). This is
            how the DER paper reports task-IL figures of class-IL-trained models; a run with
            protocol ``task`` also trains with the restriction, so it is not the same number.
            In a run with a router (class- or domain-IL) it is the model's answer with the true
            task id given, restricted to the task's units: the "task given" number beside the
            ``accuracy_matrix``'s "task inferred".
        perplexity_matrix: streams of token sequences (text) only: ``P[i][j]``, the per-token
            perplexity on task ``j``'s held-out text after training task ``i``,
            ``exp(sum of token NLLs / tokens)`` over all its tokens; lower is better.
        baseline_perplexity: the untrained model's perplexity on each task (text only).
        task_names: one name per task.
        scenario, protocol, strategy: what was run.
        seed: the seed of the run.
        config: the full configuration, as given.
        curves: evaluations during training, ``{"task", "step", "accuracy": [per task]}``, when
            ``eval_every`` was set (within-task forgetting curves).
        losses: mean training loss per pass over a task's data, ``{"task", "epoch", "step", "loss"}``.
        timings: wall seconds per phase: ``train`` (fitting, ``after_task`` hooks included),
            ``eval`` (the rows of the matrix), ``baseline_eval`` (the untrained model), ``total``,
            and per-task lists ``train_per_task``, ``eval_per_task``; a run from a config
            (:func:`~forgetless.experiment.run`, the run store) adds ``cpu``, the process's
            CPU seconds for it.
        peak_memory_mb: peak resident memory of the process (or of the GPU) during the run. On
            Linux and on GPUs the count restarts when the run starts, so each run of a process
            reports its own peak; elsewhere it is the peak since the process started.
        strategy_state_bytes: bytes of tensor state the strategies hold at the end (importances,
            anchors, buffers, old models): what the method costs in memory, apart from the data
            and the model.
        model_size: after each task, the model's ``parameters`` (elements), ``trainable``
            (those with ``requires_grad``) and ``bytes`` (parameters and buffers): how a model
            that grows (columns, specialists, adapters) grows.
        strategy_reports: what each strategy reported at the end, by name (capacity used per
            layer and task, a router's shrinkage, ...); see ``Strategy.report``.
        routing_accuracy: runs with a router only (task inference, see
            :mod:`forgetless.routing`): ``Q[i][j]``, the fraction of task ``j``'s test inputs
            routed to task ``j`` after training task ``i``. The router chooses among the tasks
            learnt so far, so the entries above the diagonal are 0. In such a run
            ``accuracy_matrix`` is the accuracy with the task inferred, ``task_aware_matrix``
            with the true task given to the model.
        environment: versions of forgetless (``forgetless``, and ``git_commit``: the commit
            of a git checkout, ``"unknown"`` elsewhere; results from before it lack it), torch,
            Python, and the device.
        schedule: for a stream that revisits tasks, the task (from 0) trained in each phase,
            one per row of the matrices (``[0, 1, 0, 1]``); ``None`` when phase ``i`` trains
            task ``i`` (the matrices are then square). The metrics count from the phases
            that trained each task (:mod:`forgetless.metrics`).
    """

    accuracy_matrix: list[list[float]]
    baseline: list[float]
    task_names: list[str]
    scenario: str
    protocol: str
    strategy: str
    seed: int
    config: dict[str, Any] = field(default_factory=dict)
    task_aware_matrix: list[list[float]] | None = None
    perplexity_matrix: list[list[float]] | None = None
    baseline_perplexity: list[float] | None = None
    curves: list[dict[str, Any]] = field(default_factory=list)
    losses: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, Any] = field(default_factory=dict)
    peak_memory_mb: float = 0.0
    strategy_state_bytes: int = 0
    model_size: list[dict[str, int]] = field(default_factory=list)
    strategy_reports: dict[str, Any] = field(default_factory=dict)
    routing_accuracy: list[list[float]] | None = None
    environment: dict[str, str] = field(default_factory=dict)
    schedule: list[int] | None = None

    @property
    def num_tasks(self) -> int:
        """Tasks of the stream (the matrices' columns)."""
        return len(self.baseline)

    @property
    def num_phases(self) -> int:
        """Training phases (the matrices' rows): the tasks, or the schedule's length."""
        return len(self.accuracy_matrix)

    def phase_task(self, phase: int) -> int:
        """The task trained in ``phase`` (both from 0)."""
        return phase if self.schedule is None else self.schedule[phase]

    @property
    def metrics(self) -> dict[str, float | None]:
        """ACC, BWT, FWT (None under class-IL), forgetting and learning accuracy, as fractions
        (``0.965``, not 96.5; BWT ``-0.05`` is 5 points forgotten); for class-IL
        runs also ``task_aware_acc``, the ACC of :attr:`task_aware_matrix`; for runs with a
        router ``routing_acc``, the mean of the last row of :attr:`routing_accuracy`; for text also the
        same measures of the perplexity matrix (:func:`forgetless.metrics.perplexity_summary`:
        ``perplexity``, ``perplexity_bwt``, ``perplexity_forgetting``, ``learning_perplexity``)."""
        schedule = self.schedule
        summary = metrics.summary(self.accuracy_matrix, self.baseline, self.protocol, schedule)
        if self.task_aware_matrix:
            summary["task_aware_acc"] = metrics.average_accuracy(self.task_aware_matrix, schedule)
        if self.routing_accuracy:
            summary["routing_acc"] = metrics.average_accuracy(self.routing_accuracy, schedule)
        if self.perplexity_matrix:
            summary.update(metrics.perplexity_summary(self.perplexity_matrix, schedule))
        return summary

    def to_dict(self) -> dict[str, Any]:
        """Plain data; ``metrics`` is included for readers, and ignored when loading. A result
        without a schedule has no ``schedule`` key, as before schedules existed."""
        data = asdict(self)
        if data["schedule"] is None:
            del data["schedule"]
        return {"format_version": FORMAT_VERSION, **data, "metrics": self.metrics}

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path = "result") -> Result:
        """A Result from plain data, checked as untrusted input: each field must have its type
        and the matrices their shape (square, one column per task, fractions in [0, 1]), else
        a ConfigError naming ``source`` and the field."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: not a forgetless result (not a JSON object)")
        version = data.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ConfigError(
                f"{source}: result format {version!r} is not supported (this forgetless reads "
                f"{FORMAT_VERSION})"
            )
        names = {f.name for f in fields(cls)}
        missing = [
            f.name for f in fields(cls) if f.name not in data and f.default is f.default_factory
        ]
        if missing:
            raise ConfigError(f"{source}: not a forgetless result: missing {', '.join(missing)}")
        values = {k: v for k, v in data.items() if k in names}
        _check_fields(values, source)
        return cls(**values)

    @classmethod
    def from_json(cls, text: str | bytes, source: str | Path = "result") -> Result:
        """A Result from JSON text; invalid JSON, a checksum that does not match, or a field of
        the wrong type is a ConfigError naming ``source``."""
        data = loads_json(text, source)
        if isinstance(data, dict) and "checksum" in data:
            stored = data.pop("checksum")
            if stored != json_checksum(data):
                raise ConfigError(
                    f"{source} is corrupt: its content does not match its checksum (it was "
                    "changed or damaged after it was written)"
                )
        return cls.from_dict(data, source)

    def save(self, path: str | Path) -> Path:
        """Write ``result.json`` (or the given file path)."""
        path = Path(path)
        if path.suffix != ".json":
            path = path / "result.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Result:
        """Read ``result.json`` (or the given file), its checksum verified if it has one."""
        path = Path(path)
        if path.is_dir():
            path = path / "result.json"
        if not path.exists():
            raise ConfigError(f"no result at {path}")
        try:
            text = path.read_bytes()
        except OSError as err:
            raise ConfigError(f"cannot read the result {path}: {err.strerror or err}") from None
        return cls.from_json(text, path)

    def table(self) -> str:
        """The accuracy matrix as a text table, in percent, with the random-init row."""
        T = self.num_tasks
        width = 8
        head = "accuracy (%)".ljust(16) + "".join(f"task {j + 1}".rjust(width) for j in range(T))
        rows = [head]
        for i, row in enumerate(self.accuracy_matrix):
            rows.append(self._row_name(i).ljust(16) + "".join(f"{100 * a:{width}.1f}" for a in row))
        rows.append(
            "random init".ljust(16) + "".join(f"{100 * a:{width}.1f}" for a in self.baseline)
        )
        return "\n".join(rows)

    def _row_name(self, phase: int) -> str:
        """``after task 3``, or with a schedule ``3: task 1`` (phase 3 trained task 1)."""
        if self.schedule is None:
            return f"after task {phase + 1}"
        return f"{phase + 1}: task {self.schedule[phase] + 1}"

    def perplexity_table(self) -> str:
        """The perplexity matrix as a text table, with the random-init row (text runs only;
        empty otherwise)."""
        if not self.perplexity_matrix:
            return ""
        width = 9
        head = "perplexity".ljust(16)
        head += "".join(f"task {j + 1}".rjust(width) for j in range(self.num_tasks))
        rows = [head]
        named = [(self._row_name(i), r) for i, r in enumerate(self.perplexity_matrix)]
        if self.baseline_perplexity:
            named.append(("random init", self.baseline_perplexity))
        for name, row in named:
            rows.append(name.ljust(16) + "".join(_perplexity(p).rjust(width) for p in row))
        return "\n".join(rows)

    def metrics_line(self) -> str:
        """ACC, BWT, FWT, forgetting and learning accuracy on one line, in points."""
        m = self.metrics
        return "  ".join(
            [
                f"ACC {_points(m['acc'])}",
                f"BWT {_points(m['bwt'], signed=True)}",
                f"FWT {_points(m['fwt'], signed=True)}",
                f"forgetting {_points(m['forgetting'])}",
                f"learning acc {_points(m['learning_accuracy'])}",
            ]
        )

    def perplexity_line(self) -> str:
        """The perplexity matrix's measures on one line (text runs only; empty otherwise)."""
        if not self.perplexity_matrix:
            return ""
        m = self.metrics
        bwt, forgetting = m["perplexity_bwt"], m["perplexity_forgetting"]
        return "  ".join(
            [
                f"perplexity {_perplexity(m['perplexity'])}",
                f"BWT {'n/a' if bwt is None else f'{bwt:+.3g}'}",
                f"forgetting {'n/a' if forgetting is None else f'{forgetting:.3g}'}",
                f"when learnt {_perplexity(m['learning_perplexity'])}",
            ]
        )

    def routing_table(self) -> str:
        """The routing accuracy matrix as a text table, in percent, and one line with the
        numbers of the task inferred beside those of the task given (runs with a router
        only; empty otherwise)."""
        if not self.routing_accuracy:
            return ""
        width = 8
        head = "routed (%)".ljust(16)
        head += "".join(f"task {j + 1}".rjust(width) for j in range(self.num_tasks))
        rows = [head]
        for i, row in enumerate(self.routing_accuracy):
            rows.append(
                f"after task {i + 1}".ljust(16) + "".join(f"{100 * a:{width}.1f}" for a in row)
            )
        rows.append(self.routing_line())
        return "\n".join(rows)

    def routing_line(self) -> str:
        """ACC with the task inferred, the routing accuracy, and ACC with the task given, on
        one line (runs with a router only; empty otherwise)."""
        if not self.routing_accuracy:
            return ""
        m = self.metrics
        return (
            f"task inferred: ACC {_points(m['acc'])}, routing acc {_points(m['routing_acc'])}"
            f"  |  task given: ACC {_points(m.get('task_aware_acc'))}"
        )

    def __str__(self) -> str:
        title = (
            f"{self.scenario} | {self.protocol}-incremental | {self.strategy} | seed {self.seed}"
        )
        if self.routing_accuracy and self.config.get("router"):
            title += f" | router {self.config['router']}"
        parts = [title, self.table(), self.metrics_line()]
        if self.schedule is not None:
            parts.insert(1, "rows: the training phases, 'P: task j' = phase P trained task j")
        if self.routing_accuracy:
            parts.append(self.routing_table())
        if self.perplexity_matrix:
            parts += [self.perplexity_table(), self.perplexity_line()]
        return "\n".join([*parts, describe(self)])


def describe(result: Result) -> str:
    """One plain sentence of what happened to the earlier tasks (for text, of their
    perplexity, whose rise is what forgetting looks like in a language model)."""
    if result.perplexity_matrix:
        return _describe_perplexity(result)
    if result.schedule is not None:
        return _describe_schedule(result)
    R = result.accuracy_matrix
    T = len(R)
    if T < 2:
        return f"One task: {100 * R[0][0]:.0f}% accuracy."
    drops = [(R[j][j] - R[-1][j], j) for j in range(T - 1)]
    drop, j = max(drops, key=lambda d: (round(d[0], 9), -d[1]))
    names = result.task_names
    if drop < 0.005:
        return f"After task {T}, every earlier task kept its accuracy (none lost half a point)."
    if drop < 0.05:
        return (
            f"After task {T}, no earlier task lost more than 5 points; the largest drop is on "
            f"task {j + 1} ({names[j]}): {100 * R[j][j]:.1f}% -> {100 * R[-1][j]:.1f}%."
        )
    return (
        f"After task {T}, accuracy on task {j + 1} ({names[j]}) fell from {100 * R[j][j]:.0f}% "
        f"to {100 * R[-1][j]:.0f}%."
    )


def _describe_schedule(result: Result) -> str:
    """The largest loss of a task since the phase that last trained it."""
    R, schedule = result.accuracy_matrix, result.schedule
    last = {task: phase for phase, task in enumerate(schedule)}
    drops = [(R[p][j] - R[-1][j], j, p) for j, p in last.items() if p < len(R) - 1]
    if not drops:
        return "Every task was trained in the last phase."
    drop, j, p = max(drops, key=lambda d: (round(d[0], 9), -d[1]))
    if drop < 0.005:
        return "Every task kept its accuracy since it was last trained (none lost half a point)."
    return (
        f"At the end, accuracy on task {j + 1} ({result.task_names[j]}) is "
        f"{100 * R[-1][j]:.0f}%, from {100 * R[p][j]:.0f}% when phase {p + 1} last trained it."
    )


def _describe_perplexity(result: Result) -> str:
    P, names = result.perplexity_matrix, result.task_names
    T = len(P)
    if T < 2:
        return f"One task: perplexity {_perplexity(P[0][0])}."
    # The largest relative rise, from when the task was learnt to the end.
    rises = [(P[-1][j] / P[j][j] if P[j][j] > 0 else math.inf, j) for j in range(T - 1)]
    rise, j = max(rises, key=lambda r: (round(r[0], 9), -r[1]))
    if rise < 1.01:
        return f"After task {T}, no earlier task's perplexity rose by 1% or more."
    return (
        f"After task {T}, perplexity on task {j + 1} ({names[j]}) rose from "
        f"{_perplexity(P[j][j])} to {_perplexity(P[-1][j])} ({rise:.2f}x)."
    )


def _perplexity(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" if value < 1000 else f"{value:.4g}"


def _points(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def json_checksum(data: dict[str, Any]) -> str:
    """``sha256:<hex>`` of ``data`` (without a ``checksum`` key) in canonical JSON: the checksum
    the run store writes into ``result.json`` (see :mod:`forgetless.runs.files`)."""
    body = {k: v for k, v in data.items() if k != "checksum"}
    canonical = json.dumps(json.loads(json.dumps(body)), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _check_fields(values: dict[str, Any], source: str | Path) -> None:
    def fail(name: str, expected: str) -> ConfigError:
        got = values[name]
        shown = repr(got) if len(repr(got)) < 60 else f"a {type(got).__name__}"
        return ConfigError(f"{source}: {name} must be {expected}, got {shown}")

    def is_fraction(v: Any) -> bool:
        return (
            isinstance(v, (int, float))
            and not isinstance(v, bool)
            and math.isfinite(v)
            and 0 <= v <= 1
        )

    matrix = values["accuracy_matrix"]
    if not isinstance(matrix, list) or not matrix or not all(isinstance(r, list) for r in matrix):
        raise fail("accuracy_matrix", "a list of rows (lists of accuracies)")
    schedule = values.get("schedule")
    P = len(matrix)
    T = len(values["baseline"]) if isinstance(values.get("baseline"), list) else P
    if schedule is None:
        T = P
    elif (
        not isinstance(schedule, list)
        or len(schedule) != P
        or not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < T for t in schedule)
        or len(set(schedule)) != T
    ):
        raise fail("schedule", f"null or {P} task indices (0..{T - 1}), each task at least once")
    shape = (
        f"a square {T} x {T} matrix of accuracies in [0, 1]" if schedule is None
        else f"a {P} x {T} matrix (phases x tasks) of accuracies in [0, 1]"
    )  # fmt: skip
    if any(len(row) != T or not all(is_fraction(v) for v in row) for row in matrix):
        raise fail("accuracy_matrix", shape)

    def is_optional_matrix(value: Any, is_entry) -> bool:
        """``None``, or a P x T list of lists whose entries pass ``is_entry``."""
        return value is None or (
            isinstance(value, list)
            and len(value) == P
            and all(isinstance(r, list) and len(r) == T and all(map(is_entry, r)) for r in value)
        )

    if not is_optional_matrix(values.get("task_aware_matrix"), is_fraction):
        raise fail("task_aware_matrix", f"null or {shape}")

    def is_perplexity(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0  # NaN fails

    if not is_optional_matrix(values.get("perplexity_matrix"), is_perplexity):
        raise fail("perplexity_matrix", f"null or a {P} x {T} matrix of perplexities")
    base_perplexity = values.get("baseline_perplexity")
    if base_perplexity is not None and (
        not isinstance(base_perplexity, list)
        or len(base_perplexity) != T
        or not all(map(is_perplexity, base_perplexity))
    ):
        raise fail("baseline_perplexity", f"null or {T} perplexities, one per task")
    if not is_optional_matrix(values.get("routing_accuracy"), is_fraction):
        raise fail("routing_accuracy", f"null or a {P} x {T} matrix of fractions in [0, 1]")
    baseline = values["baseline"]
    if not isinstance(baseline, list) or len(baseline) != T or not all(map(is_fraction, baseline)):
        raise fail("baseline", f"{T} accuracies in [0, 1], one per task")
    names = values["task_names"]
    if not isinstance(names, list) or len(names) != T or not all(isinstance(n, str) for n in names):
        raise fail("task_names", f"{T} names, one per task")
    for name in ("scenario", "protocol", "strategy"):
        if not isinstance(values[name], str):
            raise fail(name, "a string")
    if not isinstance(values["seed"], int) or isinstance(values["seed"], bool):
        raise fail("seed", "an integer")
    kinds = {
        "config": dict,
        "curves": list,
        "losses": list,
        "timings": dict,
        "environment": dict,
        "peak_memory_mb": (int, float),
        "strategy_state_bytes": int,
        "model_size": list,
        "strategy_reports": dict,
    }
    for name, kind in kinds.items():
        if name in values and not isinstance(values[name], kind):
            raise fail(name, f"a {getattr(kind, '__name__', 'number')}")
