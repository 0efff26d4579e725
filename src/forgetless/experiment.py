"""One run from one config: build the stream, the model and the strategies, then train."""

from __future__ import annotations

import difflib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgetless.errors import ConfigError
from forgetless.names import (
    FAST_PATHS,
    MEMORY_FORMATS,
    OPTIMIZERS,
    PRECISIONS,
    PROTOCOLS,
    ROUTERS,
    SCENARIOS,
)
from forgetless.validation import check_int_list, check_positive_int, check_run_fields

# This module imports torch only when a run is built: the command line reads RunConfig's fields
# (its options) without it, so that `forgetless run --help` starts at once.
if TYPE_CHECKING:
    from torch import nn

    from forgetless.engine import FitConfig, Snapshot
    from forgetless.result import Result
    from forgetless.scenarios import Stream
    from forgetless.strategies import Strategy

#: FitConfig's fields that a RunConfig does not have: Python objects (an optimiser class, a
#: loss, a schedule), which a config file cannot hold; pass those to forgetless.train.
FIT_OBJECT_FIELDS = ("optimizer_options", "loss", "scheduler")
#: The loop settings a scenario preset fills in where the config leaves them ``None`` (the
#: fields of :class:`~forgetless.scenarios.presets.Loop`).
LOOP_FIELDS = ("epochs", "iterations", "batch_size", "optimizer", "lr", "momentum")
_OPTIMIZER_FIELDS = ("optimizer", "lr", "momentum")
#: The learning rate an optimiser gets when it is named without one (SGD's is FitConfig's).
USUAL_LR = {"sgd": 0.01, "adam": 1e-3, "adamw": 1e-3}


def option(default: Any = None, **cli: Any) -> Any:
    """A RunConfig field with how the command line shows it: ``metavar``, ``choices``, ``flag``
    (a boolean's flag, which sets the opposite of the default: ``--keep-optimizer``) and
    ``flag_help`` (what giving that flag does),
    ``parse`` (the command line's text to the field's value, where it differs from the file's:
    ``--schedule`` counts tasks from 1), ``cli=False`` (no flag). See :mod:`forgetless.options`."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=cli)
    return field(default=default, metadata=cli)


def _tasks_counted_from_one(text: str) -> list[int]:
    from forgetless.options import int_list

    return [t - 1 for t in int_list(text)]


@dataclass
class RunConfig:
    """Every option of ``forgetless run``, one field per flag (``--batch-size`` is
    ``batch_size``): the parser, TOML config files and sweeps all read these fields, their
    types, defaults and the descriptions below (:mod:`forgetless.options`). A field added here
    gets its flag, its TOML key and its sweep axis with no more code.

    Attributes:
        scenario: the scenario, one of the presets (``forgetless scenarios``).
        protocol: task-, domain- or class-incremental (default: the scenario's usual one).
        n_tasks: number of tasks (scenarios that take one).
        class_order: class order for split scenarios.
        data_dir: folder with the IDX files (DIR/mnist/... or the files); for the text
            scenario, the domains: one .txt file or folder of them each, in name order.
        sequence_length: text: tokens per example (default 128).
        tokenizer: text: char (default), bpe or bpe:SIZE (trained locally on the first
            domain).
        standardize: map inputs to (x - mean) / std: train (the stream's training data),
            dataset (published constants: MNIST 0.1307,0.3081) or MEAN,STD (default: pixels
            in [0, 1]).
        model: one of mlp, cnn, cnn-skip, gpt, or hf:TYPE (a Hugging Face causal LM from its
            config, e.g. hf:gpt2; needs transformers).
        hidden: hidden sizes (MLP default 400,400; CNN 128; gpt one width per block, default
            128,128,128,128).
        init: the initial weights, drawn from the seed: default (each layer's PyTorch
            default) or xavier (Xavier-uniform weights, zero biases: the DER authors' MLP).
        strategy: a strategy, or names joined by + for a hybrid (``forgetless strategies``
            lists them with their parameters).
        strategy_params: the strategies' parameters by name (on the command line
            ``--NAME VALUE``; in a TOML file any key that is not a field).
        router: infer each test input's task, so that a method that needs the task id (pnn,
            packnet, hat, hypermask, specialists) runs under class- or domain-IL: lowest
            predictive entropy, Mahalanobis distance (Ledoit-Wolf covariance) or nearest class
            mean on each task's features; reports the routing accuracy.
        seed: seeds everything: the stream, the weights, the batch order.
        epochs: passes over each task's data (default: the scenario's; see forgetless
            scenarios).
        iterations: optimiser steps per task, instead of epochs (default: the scenario's).
        batch_size: examples per step (default: the scenario's).
        optimizer: the optimiser (default: the scenario's).
        lr: learning rate (default: the scenario's).
        momentum: SGD momentum (default: the scenario's).
        reset_optimizer: a fresh optimiser at each task (the usual protocol).
        eval_every: evaluate all tasks every this many steps.
        log_every: with a store, record the mean loss every this many steps.
        eval_batch_size: examples per evaluation forward pass.
        device: torch device.
        threads: CPU threads for torch (default: torch's choice).
        progress: show a progress bar (on a terminal only).
        retain_raw_data: the data-retention policy: False refuses strategies that keep raw
            past inputs.
        precision: the arithmetic of training steps: float32 (None), or bfloat16 (autocast:
            faster on CPUs with bfloat16 units, a little less accurate).
        fast_path: the training step of fine-tuning or replay (alone or with one quadratic
            penalty: ewc, online-ewc, l2, mas) on the MLP under SGD: auto
            (None; hand-written where it applies, autograd's numbers bit for bit), off
            (autograd's), or fused (fewer, fused kernels at other float32 rounding: the MLP's
            SGD update folded into the weight-gradient product, and Adam or AdamW as torch's
            fused kernel for any model); see ``forgetless.mlp_step``.
        memory_format: the layout of a convolutional model's weights and image batches:
            contiguous (None) or channels_last (faster for the cnn on CPUs, not
            bit-identical; refused for models without convolutions).
        weights: start from these weights (a safetensors or torch.save state dict, read
            without unpickling) instead of drawn ones.
        trained_tasks: how many of the stream's first tasks the weights have learnt already
            (evaluated, not trained).
        repeat: revisit the tasks: train them in order N times (A, B, A, B, ...); the matrix
            gets a row per training phase.
        schedule: the task of each training phase (on the command line counted from 1, as
            the tables do: 1,2,1,2; in files and in Python from 0).
        train_size: training examples kept of each task (studies; default: all).
        test_size: test examples kept of each task (studies; default: all).
        angles: a rotated scenario's tasks, by their rotation in degrees (0,45: two tasks).
        first_tasks: train and evaluate only the stream's first N tasks.
        path_every: record the trainable weights every this many steps, as the run's path
            (for the trajectory study; the numbers do not change).

    The loop settings ``epochs``, ``iterations``, ``batch_size``, ``optimizer``, ``lr`` and
    ``momentum`` left ``None`` are the scenario's (``PRESETS[scenario].loop``, settings that
    learn it); :meth:`resolved` fills them in, and what a run records (``config.json``,
    ``Result.config``) and hashes into its id is the resolved config. Two groups go
    together: giving ``epochs`` or ``iterations`` replaces the preset's budget as a whole
    (``epochs=3`` on a preset that counts iterations trains 3 epochs), and giving any of
    ``optimizer``, ``lr``, ``momentum`` replaces the preset's optimiser as a whole, the
    others being the plain defaults (``lr=0.1`` alone is SGD at 0.1; ``optimizer="adam"``
    alone is Adam at 1e-3, :data:`USUAL_LR`). The other loop settings are those of
    :class:`~forgetless.engine.FitConfig`, with its defaults.

    A trained start: ``weights`` replaces the drawn weights of the model, and
    ``trained_tasks`` says how many of the stream's first tasks it has already learnt (see
    :func:`~forgetless.engine.train`). The config's hash covers the weights file's contents.

    Smaller streams, for studies: ``train_size`` and ``test_size`` keep that many examples of
    each task (a long permuted scenario, ``permuted-mnist-long``, draws them per task from
    the seed; any other image scenario draws them once, the same for every seed);
    ``angles`` gives a rotated scenario's tasks their rotations in degrees (``[0, 45]``: two
    tasks); ``first_tasks`` trains and evaluates only the stream's first ``N`` tasks (the
    first two tasks of ``split-digits`` are its usual first two, not a two-task split).
    ``path_every=K`` records the trainable weights every ``K`` optimiser steps (and at each
    task's end) as the run's path (:class:`~forgetless.strategies.recorder.ParameterRecorder`,
    an observer: the numbers do not change); a run store keeps it in the run's last
    checkpoint, where the trajectory study reads it.

    A stream that revisits its tasks: ``repeat=N`` trains the tasks in order ``N`` times
    (each visit fits the full budget), or ``schedule`` lists the task of each phase by index
    from 0 (``[0, 1, 0, 1]``). The matrix then has a row per phase.
    """

    scenario: str = option("split-digits", metavar="NAME", choices=SCENARIOS)
    protocol: str | None = option(choices=PROTOCOLS)
    n_tasks: int | None = None
    class_order: list[int] | None = option(metavar="C,C,...")
    data_dir: str | None = option(metavar="DIR")
    sequence_length: int | None = option(metavar="T")
    tokenizer: str | None = option(metavar="KIND")
    standardize: str | None = option(metavar="HOW")
    model: str = option("mlp", metavar="NAME")
    hidden: list[int] | None = option(metavar="N,N,...")
    init: str | None = option(metavar="NAME")
    strategy: str = option("finetune", metavar="NAME")
    strategy_params: dict[str, Any] = option({}, cli=False)
    router: str | None = option(choices=ROUTERS)
    seed: int = 0
    epochs: int | None = None
    iterations: int | None = None
    batch_size: int | None = None
    optimizer: str | None = option(choices=OPTIMIZERS)
    lr: float | None = None
    momentum: float | None = None
    reset_optimizer: bool = option(
        True, flag="--keep-optimizer", flag_help="keep one optimiser across tasks"
    )
    eval_every: int | None = option(metavar="STEPS")
    log_every: int = option(50, metavar="STEPS")
    eval_batch_size: int = 1024
    device: str = "cpu"
    threads: int | None = None
    progress: bool = option(True, flag_help="no progress bar")
    retain_raw_data: bool = option(
        True,
        flag="--no-raw-data",
        flag_help="data-retention policy: refuse strategies that keep raw past inputs",
    )
    precision: str | None = option(choices=PRECISIONS)
    fast_path: str | None = option(choices=FAST_PATHS)
    memory_format: str | None = option(choices=MEMORY_FORMATS)
    weights: str | None = option(metavar="FILE")
    trained_tasks: int = 0
    repeat: int | None = option(metavar="N")
    schedule: list[int] | None = option(metavar="T,T,...", parse=_tasks_counted_from_one)
    train_size: int | None = None
    test_size: int | None = None
    angles: list[float] | None = option(metavar="DEG,DEG,...")
    first_tasks: int | None = option(metavar="N")
    path_every: int | None = option(metavar="STEPS")

    def __post_init__(self) -> None:
        check_run_fields(self)  # types from TOML files: a clear error, not a TypeError later
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.strategy, str):
            raise ConfigError(
                f"strategy must be a name such as 'ewc' or 'replay+ewc', got {self.strategy!r}"
            )
        from forgetless.scenarios.presets import check_standardize
        from forgetless.strategies import coerce_params

        # Typed now, so that the same run has one hash whether its values came as text or not.
        self.strategy_params = coerce_params(self.strategy, dict(self.strategy_params))
        if self.router is not None and self.router not in ROUTERS:
            raise ConfigError(
                f"router must be one of {', '.join(ROUTERS)} (or none), got {self.router!r}"
            )
        self.fit_config()  # validate the loop settings now, not after loading data
        tasks = self.trained_tasks
        if not isinstance(tasks, int) or isinstance(tasks, bool) or tasks < 0:
            raise ConfigError(f"trained_tasks must be a non-negative integer, got {tasks!r}")
        if self.sequence_length is not None and (
            not isinstance(self.sequence_length, int)
            or isinstance(self.sequence_length, bool)
            or self.sequence_length < 1
        ):
            raise ConfigError(
                f"sequence_length must be a positive integer, got {self.sequence_length!r}"
            )
        self.standardize = check_standardize(self.standardize)
        if self.precision == "float32":  # the default arithmetic: one run, one id
            self.precision = None
        if self.fast_path == "auto":  # the default step: one run, one id
            self.fast_path = None
        if self.memory_format == "contiguous":  # the default layout: one run, one id
            self.memory_format = None
        from forgetless.models.init import check_init

        self.init = check_init(self.init)  # "default" is None: one run, one id
        if self.init is not None and self.weights is not None:
            raise ConfigError(
                f"init={self.init!r} has no effect with weights: the weights file replaces "
                "the initial weights; give one of them"
            )
        if self.tokenizer is not None:
            from forgetless.data.text import parse_tokenizer

            parse_tokenizer(self.tokenizer)
        if self.repeat is not None:
            check_positive_int("repeat", self.repeat)
            if self.repeat == 1:  # each task once: the same run as without a repeat, one id
                self.repeat = None
        if self.schedule is not None:
            check_int_list("schedule", self.schedule)
            if not self.schedule or min(self.schedule) < 0:
                raise ConfigError(
                    f"schedule lists task indices from 0, one per phase; got {self.schedule!r}"
                )
            if self.repeat is not None:
                raise ConfigError("give repeat or schedule, not both")
        for name in ("train_size", "test_size", "first_tasks", "path_every"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        if self.angles is not None:
            valid = isinstance(self.angles, list) and self.angles
            valid = valid and all(
                isinstance(a, (int, float)) and not isinstance(a, bool) for a in self.angles
            )
            if not valid:
                raise ConfigError(
                    f"angles must be a non-empty list of degrees, got {self.angles!r}"
                )
            self.angles = [float(a) for a in self.angles]  # one hash for 45 and 45.0

    def phases(self, n_tasks: int) -> list[int] | None:
        """The task of each training phase for a stream of ``n_tasks`` tasks, or ``None``
        for each task once, in order."""
        if self.schedule is not None:
            return list(self.schedule)
        if self.repeat is not None and self.repeat > 1:
            return list(range(n_tasks)) * self.repeat
        return None

    def resolved(self) -> RunConfig:
        """This config with every loop setting left ``None`` taken from the scenario preset
        (see the class docstring). A resolved config resolves to itself, so a stored
        ``config.json`` (always resolved) keeps its run id."""
        from forgetless.scenarios import PRESETS
        from forgetless.scenarios.presets import Loop

        preset = PRESETS.get(self.scenario)
        loop = preset.loop if preset is not None else Loop()
        values = {name: getattr(loop, name) for name in LOOP_FIELDS if getattr(self, name) is None}
        if self.epochs is not None or self.iterations is not None:
            values.pop("iterations", None)  # the user's budget, not the preset's
        if any(getattr(self, name) is not None for name in _OPTIMIZER_FIELDS):
            # A learning rate belongs to its optimiser: with any of the three given, the
            # others are the plain defaults (SGD, its usual rate), not the preset's.
            optimizer = self.optimizer or "sgd"
            values["optimizer"] = optimizer
            values["lr"] = self.lr if self.lr is not None else USUAL_LR.get(optimizer, loop.lr)
            values["momentum"] = self.momentum if self.momentum is not None else 0.0
            for name in _OPTIMIZER_FIELDS:
                if getattr(self, name) is not None:
                    values.pop(name)
        if not values:
            return self
        return RunConfig(**{**self.to_dict(), **values})

    def fit_config(self) -> FitConfig:
        """The loop settings as a :class:`FitConfig`, the preset's where none are given."""
        from forgetless.engine import FitConfig

        config = self.resolved()
        # Every FitConfig field but the objects is a RunConfig field with the same default
        # (tests/test_cli_options.py checks it); one added to FitConfig alone keeps its default.
        ours = {f.name for f in fields(RunConfig)}
        names = [f.name for f in fields(FitConfig) if f.name in ours]
        return FitConfig(**{name: getattr(config, name) for name in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """A config from plain data; an unknown key is an error with a "did you mean" hint."""
        known = [f.name for f in fields(cls)]
        for key in data:
            if key not in known:
                hint = difflib.get_close_matches(key, known, n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise ConfigError(f"unknown config key {key!r}{suggestion}")
        return cls(**data)


def config_from_flat(settings: dict[str, Any], where: str = "config") -> RunConfig:
    """A config from flat settings, as in TOML files: :class:`RunConfig` fields by name, and any
    other name a strategy parameter (``lam = 100.0``), as on the command line. Errors say where
    (``where``) and suggest the option meant."""
    run_fields = {f.name for f in fields(RunConfig)} - {"strategy_params"}
    params = {k: v for k, v in settings.items() if k not in run_fields}
    try:
        return RunConfig(
            **{k: v for k, v in settings.items() if k in run_fields}, strategy_params=params
        )
    except ConfigError as err:
        hint = ""
        for key in params:
            match = difflib.get_close_matches(key, sorted(run_fields), n=1)
            if match:
                hint = f" ({key!r} is not a run option either; did you mean {match[0]!r}?)"
                break
        raise ConfigError(f"{where}: {err}{hint}") from None


def load_config(path: str | Path) -> RunConfig:
    """A config from a TOML file of flat settings (see :func:`config_from_flat`)."""
    from forgetless.toml_file import read_toml

    return config_from_flat(read_toml(path, "config file"), str(path))


#: Fields that do not change a run's numbers: where data is read from, what is shown, how many
#: threads compute it, how often losses are reported.
NON_RESULT_FIELDS = ("data_dir", "threads", "progress", "log_every")
#: Fields added after runs were first stored: they enter the hash only when set, so every run
#: stored before them keeps its id (and a sweep finds it complete).
HASHED_WHEN_SET = (
    "sequence_length",
    "tokenizer",
    "weights",
    "router",
    "standardize",
    "repeat",
    "schedule",
    "init",
    "train_size",
    "test_size",
    "angles",
    "first_tasks",
    "path_every",
    "precision",
    "fast_path",
    "memory_format",
)


def config_hash(config: RunConfig) -> str:
    """A short hash of everything that decides a run's numbers (16 hex digits): two configs
    with the same hash give the same result on the same machine.

    It is the hash of the *resolved* config (:meth:`RunConfig.resolved`): a loop setting the
    preset filled in counts as its value, exactly as if it had been given, so a config and
    its resolved form (what ``config.json`` holds) have one id. Fields added after runs were
    first stored enter the hash only when set (:data:`HASHED_WHEN_SET`), so adding a field
    never renames a stored run."""
    data = config.resolved().to_dict()
    for name in NON_RESULT_FIELDS:
        data.pop(name, None)
    if data.get("fast_path") == "off":  # autograd's step gives auto's numbers bit for bit
        data.pop("fast_path")
    for name in HASHED_WHEN_SET:
        if data.get(name) is None:
            data.pop(name, None)
    if not data["trained_tasks"]:  # configs from before the field keep their hash
        data.pop("trained_tasks")
    if "weights" in data:  # the file's contents decide the numbers, not where it lies
        data["weights"] = _file_sha256(data["weights"])
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _file_sha256(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as err:
        raise ConfigError(f"cannot read the weights file {path}: {err.strerror}") from None


def prepare(config: RunConfig) -> tuple[Stream, nn.Module, list[Strategy]]:
    """The stream, the initialised model and the strategies ``config`` names: what
    :func:`run` trains (the model's weights are drawn from ``config.seed``)."""
    import torch

    from forgetless.models import build_model
    from forgetless.scenarios import make_stream
    from forgetless.strategies import make_strategies

    strategies = make_strategies(config.strategy, config.strategy_params)
    stream = make_stream(
        config.scenario,
        seed=config.seed,
        protocol=config.protocol,
        data_dir=config.data_dir,
        n_tasks=config.n_tasks,
        class_order=config.class_order,
        sequence_length=config.sequence_length,
        tokenizer=config.tokenizer,
        standardize=config.standardize,
        train_size=config.train_size,
        test_size=config.test_size,
        angles=config.angles,
    )
    if config.first_tasks is not None:
        if config.first_tasks > len(stream):
            raise ConfigError(
                f"first_tasks={config.first_tasks}, but {config.scenario} has {len(stream)} tasks"
            )
        stream = stream[: config.first_tasks]
    torch.manual_seed(config.seed)
    # Token inputs: the vocabulary is one task's units (each task's, under the task protocol).
    vocab = len(stream.tasks[0].units)
    model = build_model(
        config.model,
        stream.input_shape,
        stream.num_outputs,
        config.hidden,
        vocab_size=vocab,
        init=config.init,
    )
    if config.weights is not None:
        from forgetless.production.loading import load_weights, put_weights

        put_weights(model, load_weights(config.weights), config.weights, config.model)
    return stream, model, strategies


def run(
    config: RunConfig | None = None,
    *,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    on_task_end: Callable[[Snapshot], None] | None = None,
    resume: Snapshot | None = None,
    **options: Any,
) -> Result:
    """Run one experiment: ``run(RunConfig(...))`` or ``run(scenario="split-mnist", ...)``.

    ``on_event``, ``on_task_end`` and ``resume`` are passed to :func:`forgetless.engine.train`
    (events as they happen, a snapshot after each task, continuing from a snapshot); the run
    store (:mod:`forgetless.runs`) uses them for durable runs.

    Returns:
        The :class:`Result`; its ``config`` holds the whole config, and its ``timings`` also
        ``cpu``: the process's CPU seconds for the run (building the stream and the model,
        training, evaluation; all threads; a resumed run counts the part since the resume).
    """
    from forgetless.engine import train

    cpu_start = time.process_time()
    if config is None:
        config = RunConfig.from_dict(options)
    elif options:
        raise ConfigError("pass either a RunConfig or options as keywords, not both")
    config = config.resolved()  # the result records the settings the run was trained with
    stream, model, strategies = prepare(config)
    name = "+".join(s.name for s in strategies)
    if config.path_every is not None:
        from forgetless.strategies.recorder import ParameterRecorder

        strategies.append(ParameterRecorder(config.path_every))  # last: it sees each step's end
    result = train(
        stream,
        model,
        strategies,
        config.fit_config(),
        config.seed,
        config.to_dict(),
        on_event=on_event,
        on_task_end=on_task_end,
        resume=resume,
        trained_tasks=config.trained_tasks,
        schedule=config.phases(len(stream)),
        router=config.router,
    )
    result.strategy = name  # the method trained, not the observer beside it
    result.timings["cpu"] = time.process_time() - cpu_start
    return result


def save_run(result: Result, out: str | Path) -> Path:
    """Write a finished run's ``config.json`` and ``result.json`` into the folder ``out``, as
    the run store writes them (atomically, each with its checksum). To save a run as it goes,
    so that it survives a crash and continues, run it in a run folder instead:
    ``forgetless.runs.RunStore.run_folder(out).execute(config)`` (``forgetless run --out``)."""
    from forgetless.runs.files import write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", result.config, "config")
    write_json(out / "result.json", result.to_dict(), "result")
    return out
