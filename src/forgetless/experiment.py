"""One run from one config: build the stream, the model and the strategies, then train."""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from forgetless.engine import FitConfig, Snapshot, train
from forgetless.errors import ConfigError
from forgetless.models import build_model
from forgetless.result import Result
from forgetless.scenarios import PRESETS, Stream, make_stream
from forgetless.scenarios.presets import Loop, check_standardize
from forgetless.strategies import Strategy, coerce_params, make_strategies
from forgetless.validation import check_int_list, check_positive_int, check_run_fields

#: FitConfig's fields a RunConfig has: all but the Python objects (an optimiser class, a loss,
#: a schedule), which a config file cannot hold; pass those to forgetless.train.
_FIT_FIELDS = tuple(
    f.name for f in fields(FitConfig) if f.name not in ("optimizer_options", "loss", "scheduler")
)
#: The loop settings a scenario preset fills in where the config leaves them ``None``.
LOOP_FIELDS = tuple(f.name for f in fields(Loop))
_OPTIMIZER_FIELDS = ("optimizer", "lr", "momentum")
#: The learning rate an optimiser gets when it is named without one.
USUAL_LR = {"sgd": FitConfig.lr, "adam": 1e-3, "adamw": 1e-3}


@dataclass
class RunConfig:
    """Every option of ``forgetless run``, one field per flag (``--batch-size`` is ``batch_size``).

    Scenario: ``scenario``, ``protocol`` (None: the scenario's usual one), ``n_tasks``,
    ``class_order``, ``data_dir``; for text scenarios ``sequence_length`` (None: 128) and
    ``tokenizer`` (None: ``"char"``); ``standardize`` (None: inputs as the source gives them;
    ``"train"``, ``"dataset"`` or ``"MEAN,STD"``: see :func:`~forgetless.scenarios.make_stream`).
    Model: ``model`` (``"mlp"``, ``"cnn"``, ``"cnn-skip"``, ``"gpt"``, ``"hf:TYPE"``),
    ``hidden``, ``init`` (the initial weights: None, or ``"default"``, for the layers'
    PyTorch defaults; ``"xavier"`` for Xavier-uniform weights and zero biases, as the DER
    authors' code initialises its MLP; see :data:`~forgetless.models.init.INITS`), drawn from
    ``seed``; ``precision`` (None: float32; ``"bfloat16"``: training steps under
    autocast, see :class:`~forgetless.engine.FitConfig`). Method: ``strategy``
    (``"finetune"``, ``"a+b"``), ``strategy_params``,
    ``router`` (None, or ``"entropy"``, ``"mahalanobis"``, ``"ncm"``: task inference for a
    method that needs the task id under class- or domain-IL). Loop:
    the fields of :class:`~forgetless.engine.FitConfig`. ``seed`` seeds everything: the
    stream, the weights, the batch order.

    The loop settings ``epochs``, ``iterations``, ``batch_size``, ``optimizer``, ``lr`` and
    ``momentum`` left ``None`` are the scenario's (``PRESETS[scenario].loop``, settings that
    learn it); :meth:`resolved` fills them in, and what a run records (``config.json``,
    ``Result.config``) and hashes into its id is the resolved config. Two groups go
    together: giving ``epochs`` or ``iterations`` replaces the preset's budget as a whole
    (``epochs=3`` on a preset that counts iterations trains 3 epochs), and giving any of
    ``optimizer``, ``lr``, ``momentum`` replaces the preset's optimiser as a whole, the
    others being the plain defaults (``lr=0.1`` alone is SGD at 0.1; ``optimizer="adam"``
    alone is Adam at 1e-3, :data:`USUAL_LR`).

    A trained start: ``weights`` (a safetensors or ``torch.save`` state dict, read without
    unpickling) replaces the drawn weights of the model, and ``trained_tasks`` says how many
    of the stream's first tasks it has already learnt (evaluated, not trained; see
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
    (A, B, A, B for two tasks and ``N = 2``; each visit fits the full budget), or
    ``schedule`` lists the task of each phase by index from 0 (``[0, 1, 0, 1]``; the CLI's
    ``--schedule`` counts from 1, as its tables do). The matrix then has a row per phase.
    """

    scenario: str = "split-digits"
    protocol: str | None = None
    n_tasks: int | None = None
    class_order: list[int] | None = None
    data_dir: str | None = None
    sequence_length: int | None = None
    tokenizer: str | None = None
    standardize: str | None = None
    model: str = "mlp"
    hidden: list[int] | None = None
    init: str | None = None
    strategy: str = "finetune"
    strategy_params: dict[str, Any] = field(default_factory=dict)
    router: str | None = None
    seed: int = 0
    epochs: int | None = None
    iterations: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    momentum: float | None = None
    reset_optimizer: bool = FitConfig.reset_optimizer
    eval_every: int | None = FitConfig.eval_every
    log_every: int = FitConfig.log_every
    eval_batch_size: int = FitConfig.eval_batch_size
    device: str = FitConfig.device
    threads: int | None = FitConfig.threads
    progress: bool = FitConfig.progress
    retain_raw_data: bool = FitConfig.retain_raw_data
    precision: str | None = None
    weights: str | None = None
    trained_tasks: int = 0
    repeat: int | None = None
    schedule: list[int] | None = None
    train_size: int | None = None
    test_size: int | None = None
    angles: list[float] | None = None
    first_tasks: int | None = None
    path_every: int | None = None

    def __post_init__(self) -> None:
        check_run_fields(self)  # types from TOML files: a clear error, not a TypeError later
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.strategy, str):
            raise ConfigError(
                f"strategy must be a name such as 'ewc' or 'replay+ewc', got {self.strategy!r}"
            )
        # Typed now, so that the same run has one hash whether its values came as text or not.
        self.strategy_params = coerce_params(self.strategy, dict(self.strategy_params))
        if self.router is not None:
            from forgetless.routing import ROUTERS

            if self.router not in ROUTERS:
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
        preset = PRESETS.get(self.scenario)
        loop = preset.loop if preset is not None else Loop()
        values = {name: getattr(loop, name) for name in LOOP_FIELDS if getattr(self, name) is None}
        if self.epochs is not None or self.iterations is not None:
            values.pop("iterations", None)  # the user's budget, not the preset's
        if any(getattr(self, name) is not None for name in _OPTIMIZER_FIELDS):
            # A learning rate belongs to its optimiser: with any of the three given, the
            # others are the plain defaults (SGD, its usual rate), not the preset's.
            optimizer = self.optimizer or FitConfig.optimizer
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
        config = self.resolved()
        return FitConfig(**{name: getattr(config, name) for name in _FIT_FIELDS})

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
        The :class:`Result`; its ``config`` holds the whole config.
    """
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
