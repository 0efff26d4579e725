"""Named scenarios: the standard streams, one line each to build."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from forgetless import data
from forgetless.errors import ConfigError
from forgetless.scenarios import builders
from forgetless.scenarios.stream import Protocol, Stream


@dataclass(frozen=True)
class Loop:
    """The loop settings a scenario is learnt with where the user gives none: enough passes
    (or steps), batch size, optimiser and learning rate for each task to be learnt well, so
    that the forgetting measured is forgetting of something learnt. Units: ``lr`` as given to
    the optimiser; ``epochs`` passes over each task's data, or ``iterations`` optimiser steps
    per task when set."""

    epochs: int = 1
    iterations: int | None = None
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0

    def describe(self) -> str:
        """One line, e.g. ``20 epochs, batch 32, adam lr 0.001``."""
        budget = (
            f"{self.iterations} steps a task" if self.iterations is not None
            else f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}"
        )  # fmt: skip
        momentum = f" momentum {self.momentum:g}" if self.momentum else ""
        return f"{budget}, batch {self.batch_size}, {self.optimizer} lr {self.lr:g}{momentum}"


#: Adam at 1e-3: the regularisers' default strengths (EWC's lam 1000) stay stable with it,
#: where plain SGD at a learning rate that learns the digits in 20 epochs (0.1) diverges on
#: EWC's penalty (lr * lam * max Fisher above 2).
_DIGITS = Loop(epochs=20, batch_size=32, optimizer="adam", lr=1e-3)
_MNIST = Loop(epochs=1, batch_size=128, optimizer="adam", lr=1e-3)
_TEXT = Loop(iterations=500, batch_size=32, optimizer="adam", lr=1e-3)


@dataclass(frozen=True)
class Preset:
    """A named scenario: how to build it, its usual protocol and the loop settings that learn
    it (:class:`Loop`; options the user gives override them)."""

    name: str
    description: str
    protocol: Protocol
    build: Callable[..., Stream]
    sources: tuple[str, ...]
    default_tasks: int | None = None
    #: text scenarios also take ``sequence_length`` and ``tokenizer``
    text: bool = False
    loop: Loop = Loop()
    #: the build draws ``train_size`` and ``test_size`` examples per task itself (a long
    #: permuted stream); for other image scenarios each task is subsampled after building
    sized: bool = False
    #: the build takes the tasks' ``angles`` (rotated scenarios)
    rotates: bool = False


def _split(source: str, n: int = 5):
    def build(seed, protocol, data_dir, n_tasks, class_order):
        return builders.split(
            data.load(source, data_dir),
            n_tasks or n,
            protocol,
            seed,
            class_order,
            name=f"split-{source}",
        )

    return build


def _permuted(source: str, n: int):
    def build(seed, protocol, data_dir, n_tasks, class_order):
        _no_class_order(class_order, f"permuted-{source}")
        return builders.permuted(data.load(source, data_dir), n_tasks or n, protocol, seed)

    return build


def _rotated(source: str, n: int):
    def build(seed, protocol, data_dir, n_tasks, class_order, angles=None):
        _no_class_order(class_order, f"rotated-{source}")
        if angles is not None and n_tasks not in (None, len(angles)):
            raise ConfigError(
                f"rotated-{source}: {len(angles)} angles make {len(angles)} tasks; drop "
                f"n_tasks={n_tasks}"
            )
        return builders.rotated(
            data.load(source, data_dir), n_tasks or n, protocol, seed, angles=angles
        )

    return build


def _permuted_long(source: str):
    def build(seed, protocol, data_dir, n_tasks, class_order, train_size, test_size):
        name = f"permuted-{source}-long"
        _no_class_order(class_order, name)
        if protocol is not Protocol.DOMAIN:
            raise ConfigError(f"{name} is domain-incremental only (one output for all tasks)")
        return builders.permuted_subsets(
            data.load(source, data_dir), n_tasks or 100, train_size, test_size, seed
        )

    return build


def _mnist_fashion(seed, protocol, data_dir, n_tasks, class_order):
    _fixed_tasks("mnist-fashion", n_tasks, 2, class_order)
    sources = [data.load("mnist", data_dir), data.load("fashion-mnist", data_dir)]
    return builders.sequence(sources, protocol, seed, name="mnist-fashion")


def _two_task_binary(seed, protocol, data_dir, n_tasks, class_order):
    _fixed_tasks("two-task-binary", n_tasks, 2, class_order)
    return builders.sequence(data.two_task_binary(seed), protocol, seed, name="two-task-binary")


def _text_domains(name: str, domains, n_tasks, class_order):
    _no_class_order(class_order, name)
    if n_tasks is not None:
        if not 1 <= n_tasks <= len(domains):
            raise ConfigError(
                f"{name} has {len(domains)} domains ({', '.join(d.name for d in domains)}); "
                f"n_tasks must be 1..{len(domains)}, got {n_tasks}"
            )
        domains = domains[:n_tasks]
    return domains


def _text(seed, protocol, data_dir, n_tasks, class_order, sequence_length, tokenizer):
    from forgetless.data.text import read_domains
    from forgetless.scenarios.text import text

    if data_dir is None:
        raise ConfigError(
            "the text scenario reads its domains from --data-dir DIR: one .txt file or one "
            "folder of .txt files per domain, in the order of their names (the first is the "
            "general corpus); or use --scenario shakespeare"
        )
    domains = _text_domains("text", read_domains(data_dir), n_tasks, class_order)
    return text(domains, sequence_length, protocol, seed, tokenizer, name="text")


def _shakespeare(seed, protocol, data_dir, n_tasks, class_order, sequence_length, tokenizer):
    from forgetless.data import shakespeare
    from forgetless.scenarios.text import text

    domains = shakespeare.load_domains(data_dir)
    domains = _text_domains("shakespeare", domains, n_tasks, class_order)
    return text(domains, sequence_length, protocol, seed, tokenizer, name="shakespeare")


def _no_class_order(class_order, name: str) -> None:
    if class_order is not None:
        raise ConfigError(f"{name} does not take a class order (only split scenarios do)")


def _fixed_tasks(name: str, n_tasks: int | None, fixed: int, class_order) -> None:
    _no_class_order(class_order, name)
    if n_tasks not in (None, fixed):
        raise ConfigError(f"{name} has exactly {fixed} tasks; drop n_tasks={n_tasks}")


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "split-digits",
            "8x8 digits, 5 tasks of 2 classes (offline)",
            Protocol.CLASS,
            _split("digits"),
            ("digits",),
            5,
            loop=_DIGITS,
        ),
        Preset(
            "permuted-digits",
            "8x8 digits, 5 pixel permutations (offline)",
            Protocol.DOMAIN,
            _permuted("digits", 5),
            ("digits",),
            5,
            loop=_DIGITS,
        ),
        Preset(
            "rotated-digits",
            "8x8 digits, 5 rotations (offline)",
            Protocol.DOMAIN,
            _rotated("digits", 5),
            ("digits",),
            5,
            loop=_DIGITS,
            rotates=True,
        ),
        Preset(
            "split-mnist",
            "MNIST, 5 tasks of 2 classes",
            Protocol.CLASS,
            _split("mnist"),
            ("mnist",),
            5,
            loop=_MNIST,
        ),
        Preset(
            "split-fashion",
            "Fashion-MNIST, 5 tasks of 2 classes",
            Protocol.CLASS,
            _split("fashion-mnist"),
            ("fashion-mnist",),
            5,
            loop=_MNIST,
        ),
        Preset(
            "permuted-mnist",
            "MNIST, 10 pixel permutations",
            Protocol.DOMAIN,
            _permuted("mnist", 10),
            ("mnist",),
            10,
            loop=_MNIST,
        ),
        Preset(
            "rotated-mnist",
            "MNIST, 10 rotations from 0 to 162 degrees",
            Protocol.DOMAIN,
            _rotated("mnist", 10),
            ("mnist",),
            10,
            loop=_MNIST,
            rotates=True,
        ),
        *(
            Preset(
                f"permuted-{source}-long",
                f"{title}, 100 tasks, each its own pixel permutation and its own draw of "
                "train_size / test_size images (loss of plasticity, Dohare et al. 2024)",
                Protocol.DOMAIN,
                _permuted_long(source),
                (source,),
                100,
                sized=True,
            )
            for source, title in (
                ("digits", "8x8 digits"),
                ("mnist", "MNIST"),
                ("fashion-mnist", "Fashion-MNIST"),
            )
        ),
        Preset(
            "mnist-fashion",
            "MNIST, then Fashion-MNIST on one 10-way output (seed article 2)",
            Protocol.DOMAIN,
            _mnist_fashion,
            ("mnist", "fashion-mnist"),
            2,
            loop=Loop(epochs=2, batch_size=32, optimizer="adam", lr=1e-3),
        ),
        Preset(
            "two-task-binary",
            "two synthetic binary tasks that compete (seed article 1)",
            Protocol.DOMAIN,
            _two_task_binary,
            (),
            2,
            loop=Loop(epochs=20, batch_size=32, optimizer="adam", lr=0.01),
        ),
        Preset(
            "text",
            "text domains from --data-dir, one .txt file or folder each, the first the general "
            "corpus (next-token prediction)",
            Protocol.DOMAIN,
            _text,
            (),
            None,
            text=True,
            loop=_TEXT,
        ),
        Preset(
            "shakespeare",
            "Shakespeare: modern-spelling plays (general), First Folio plays, poems, "
            "Britannica's article (next-token prediction)",
            Protocol.DOMAIN,
            _shakespeare,
            ("shakespeare",),
            4,
            text=True,
            loop=_TEXT,
        ),
    ]
}


#: Mean and std of the model inputs (pixels in [0, 1]) of a data set's training images, as
#: published and used by torchvision's examples and Avalanche: ``standardize="dataset"``.
KNOWN_STATISTICS: dict[str, tuple[float, float]] = {
    "mnist": (0.1307, 0.3081),
    "fashion-mnist": (0.2860, 0.3530),
}
#: What ``standardize`` may say besides ``"MEAN,STD"``.
STANDARDIZE_CHOICES = ("train", "dataset")


def check_standardize(value: object) -> str | None:
    """``value`` as a ``standardize`` setting: ``None`` (or ``"none"``: inputs as the source
    gives them), ``"train"``, ``"dataset"`` or ``"MEAN,STD"``; anything else is a ConfigError."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "off")):
        return None
    if not isinstance(value, str):
        raise ConfigError(f"standardize must be a string, got {value!r}")
    value = value.strip().lower()
    if value in STANDARDIZE_CHOICES:
        return value
    try:
        mean, std = (float(part) for part in value.split(","))
    except ValueError:
        raise ConfigError(
            f"standardize must be one of none, {', '.join(STANDARDIZE_CHOICES)} or MEAN,STD "
            f"(e.g. 0.1307,0.3081), got {value!r}"
        ) from None
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise ConfigError(f"standardize MEAN,STD needs a finite mean and a std > 0, got {value!r}")
    return f"{mean!r},{std!r}"


def standardization(name: str, value: str, stream: Stream) -> tuple[float, float]:
    """The ``(mean, std)`` a ``standardize`` setting (checked) means for preset ``name``."""
    if value == "train":
        return builders.training_statistics(stream)
    if value == "dataset":
        sources = PRESETS[name].sources
        known = [KNOWN_STATISTICS.get(source) for source in sources]
        if len(sources) != 1 or known[0] is None:
            raise ConfigError(
                f"{name} has no published input statistics (known: "
                f"{', '.join(KNOWN_STATISTICS)}); use --standardize train (the stream's "
                "training data) or MEAN,STD"
            )
        return known[0]
    mean, std = (float(part) for part in value.split(","))
    return mean, std


def make_stream(
    name: str,
    seed: int = 0,
    protocol: Protocol | str | None = None,
    data_dir: str | Path | None = None,
    n_tasks: int | None = None,
    class_order: list[int] | None = None,
    sequence_length: int | None = None,
    tokenizer: str | None = None,
    standardize: str | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    angles: list[float] | None = None,
) -> Stream:
    """Build a named scenario.

    Args:
        name: a key of :data:`PRESETS`, e.g. ``"split-mnist"``.
        seed: draws class orders, permutations and synthetic data.
        protocol: ``"task"``, ``"domain"`` or ``"class"``; the preset's usual one if ``None``.
        data_dir: where to look first for data files (see :func:`forgetless.data.load`).
        n_tasks: number of tasks, for scenarios that take one.
        class_order: the order of classes, for split scenarios.
        sequence_length: tokens per example, for text scenarios (default 128).
        tokenizer: ``"char"`` (default), ``"bpe"`` or ``"bpe:SIZE"``, for text scenarios.
        standardize: map every input to ``(x - mean) / std``: ``"train"`` (the mean and std
            of all the stream's training inputs), ``"dataset"`` (the data set's published
            constants, :data:`KNOWN_STATISTICS`), or ``"MEAN,STD"``; ``None``: the inputs as
            the source gives them (pixels in [0, 1]).
        train_size, test_size: examples of each task kept (``None``: all): drawn per task
            from ``seed`` by a long permuted scenario (``permuted-mnist-long``), else drawn
            once from a fixed seed (:func:`~forgetless.scenarios.builders.subsampled`).
        angles: the rotation of each task in degrees, for rotated scenarios.
    """
    preset = PRESETS.get(name)
    if preset is None:
        hint = difflib.get_close_matches(name, PRESETS, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"unknown scenario {name!r}{suggestion}; known: {', '.join(PRESETS)}")
    chosen = preset.protocol if protocol is None else Protocol.parse(protocol)
    standardize = check_standardize(standardize)
    if preset.text:
        if standardize is not None:
            raise ConfigError(f"{name} is a text scenario: token ids cannot be standardised")
        image_only = (("train_size", train_size), ("test_size", test_size), ("angles", angles))
        if any(v is not None for _, v in image_only):
            names = ", ".join(n for n, v in image_only if v is not None)
            raise ConfigError(f"{name} is a text scenario; drop {names}")
        from forgetless.scenarios.text import DEFAULT_SEQUENCE_LENGTH

        length = DEFAULT_SEQUENCE_LENGTH if sequence_length is None else sequence_length
        return preset.build(
            seed, chosen, data_dir, n_tasks, class_order, length, tokenizer or "char"
        )
    given = [n for n, v in (("sequence_length", sequence_length), ("tokenizer", tokenizer)) if v]
    if given:
        raise ConfigError(f"{name} is not a text scenario; drop {', '.join(given)}")
    extra = {}
    if angles is not None:
        if not preset.rotates:
            raise ConfigError(f"{name} takes no angles (only rotated scenarios do)")
        extra["angles"] = [float(a) for a in angles]
    if preset.sized:
        extra.update(train_size=train_size, test_size=test_size)
    stream = preset.build(seed, chosen, data_dir, n_tasks, class_order, **extra)
    if not preset.sized and (train_size is not None or test_size is not None):
        stream = builders.subsampled(stream, train_size, test_size)
    if standardize is None:
        return stream
    return builders.standardized(stream, *standardization(name, standardize, stream))
