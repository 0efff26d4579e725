"""The overlap study (Ramasesh et al. 2021): task A a data set, task B the same images rotated by
an angle; for each angle an MLP learns A then B, and per hidden layer the overlap of the units
both tasks use, the CKA of A's representation before and after B, and the forgetting of A; then
the seed article's claim ("70% overlap forgets 45% more than 30% overlap") tested by a line.

Each (angle, seed) is a RunConfig on a rotated scenario with ``angles = [0, angle]`` and
``train_size``/``test_size`` (the same drawn images for every angle and seed), executed through
the run store and the sweep runner; the measures are taken from the weights the store kept
after each task (:func:`~forgetless.analysis.overlap_study.overlap_record`), so the overlap's
definition (``rate``, ``threshold``) can change without training again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from forgetless.analysis.overlap_study import OverlapRecord, overlap_claim, overlap_record
from forgetless.errors import ConfigError
from forgetless.experiment import RunConfig, config_hash
from forgetless.studies.common import Progress, execute, run_configs, stored_models
from forgetless.validation import check_positive_int

#: The data sets task B can be a rotation of, and their rotated scenario.
SCENARIOS = {"digits": "rotated-digits", "mnist": "rotated-mnist"}
DEFAULT_ANGLES = (0.0, 15.0, 30.0, 45.0, 60.0, 90.0, 120.0, 150.0, 180.0)


@dataclass(frozen=True)
class OverlapSettings:
    """The protocol of an overlap study (the defaults are ``forgetless overlap``'s).

    Attributes:
        data: the source (a key of :data:`SCENARIOS`); ``data_dir`` where its files are.
        angles: rotations of task B in degrees, one run per angle (and seed).
        hidden: the MLP's hidden sizes; ``lr``, ``batch_size``, ``epochs``: plain SGD.
        train_size, test_size: images drawn once from the data set (the same for every run).
        probe: test inputs of each task the unit measures are taken on.
    """

    data: str = "mnist"
    data_dir: str | None = None
    angles: tuple[float, ...] = DEFAULT_ANGLES
    hidden: tuple[int, ...] = (256, 256)
    lr: float = 0.05
    batch_size: int = 64
    epochs: int = 5
    train_size: int = 10000
    test_size: int = 2000
    probe: int = 1000

    def __post_init__(self) -> None:
        if self.data not in SCENARIOS:
            raise ConfigError(
                f"the overlap study rotates one of {', '.join(SCENARIOS)}, got {self.data!r}"
            )
        if not self.angles:
            raise ConfigError("angles must list at least one rotation")
        check_positive_int("probe", self.probe)

    def config(self, angle: float, seed: int = 0) -> RunConfig:
        """The run of one angle: fine-tuning on A then B, one output layer for both."""
        return RunConfig(
            scenario=SCENARIOS[self.data],
            protocol="domain",
            data_dir=self.data_dir,
            angles=[0.0, float(angle)],
            train_size=self.train_size,
            test_size=self.test_size,
            model="mlp",
            hidden=list(self.hidden),
            strategy="finetune",
            seed=seed,
            epochs=self.epochs,
            batch_size=self.batch_size,
            optimizer="sgd",
            lr=self.lr,
            momentum=0.0,
        )


def overlap_study(
    settings: OverlapSettings,
    seeds: Sequence[int],
    store: str | Path,
    workers: int = 1,
    backend: str = "local",
    progress: Progress | None = None,
    threshold: float = 0.0,
    rate: float = 0.5,
    over: str = "active",
) -> list[OverlapRecord]:
    """Run every (angle, seed) into ``store`` (runs complete there are reused) and measure
    each from its stored models. Every angle of a seed starts from the same initial weights
    and sees the same batches of A, so the records differ only by B.

    Returns:
        One record per (seed, angle), seeds outermost.
    """
    configs = [settings.config(angle) for angle in settings.angles]
    results = execute(configs, seeds, store, workers, backend, progress)
    by_hash = {config_hash(c): r for c, r in zip(run_configs(configs, seeds), results, strict=True)}
    records = []
    for seed in seeds:
        for angle in settings.angles:
            config = settings.config(angle, seed)
            stream, (after_a, after_b) = stored_models(store, config)
            a_inputs, b_inputs = (
                task.test.subset(torch.arange(min(settings.probe, len(task.test))))
                for task in stream
            )
            matrix = by_hash[config_hash(config)].accuracy_matrix
            records.append(
                overlap_record(
                    angle, seed, after_a, after_b, a_inputs, b_inputs, matrix, threshold, rate,
                    over,
                )
            )  # fmt: skip
    return records


def format_overlap(records: Sequence[OverlapRecord]) -> str:
    """The table ``forgetless overlap`` prints: a line per (angle, seed)."""
    lines = [
        f"{'angle':>5} {'seed':>4} {'overlap %':>12} {'weighted %':>12} {'CKA':>12} "
        f"{'A':>5} {'A after B':>9} {'B':>5} {'forgetting':>10}"
    ]
    for record in records:
        ov = " ".join(f"{100 * v:4.0f}" for v in record.overlap)
        weighted = " ".join(f"{100 * v:4.0f}" for v in record.overlap_weighted)
        cka = " ".join(f"{v:.2f}" for v in record.cka)
        lines.append(
            f"{record.angle:>5g} {record.seed:>4} {ov:>12} {weighted:>12} {cka:>12} "
            f"{100 * record.acc_a:>5.1f} "
            f"{100 * record.acc_a_after:>9.1f} {100 * record.acc_b:>5.1f} "
            f"{100 * record.forgetting:>10.1f}"
        )
    return "\n".join(lines) + "\n"


def overlap_claims(records: Sequence[OverlapRecord]) -> tuple[dict[str, Any], str]:
    """The claim tested on the binary and on the weighted overlap (:func:`overlap_claim`), and
    the lines that say it (or why it could not be tested)."""
    claims, lines = {}, []
    for measure in ("overlap", "overlap_weighted"):
        try:
            claims[measure] = claim = overlap_claim(records, measure=measure)
        except ConfigError as err:
            lines.append(f"claim not tested on {measure}: {err}")
            continue
        lo, hi = claim["overlap_range"]
        lines.append(
            f"{measure}: forgetting = {100 * claim['intercept']:.1f} + "
            f"{claim['slope']:.2f} x overlap(%) points (r = {claim['pearson']:.2f}, overlaps "
            f"{100 * lo:.0f}-{100 * hi:.0f}%): at 30% {100 * claim['forgetting_at_low']:.1f}, "
            f"at 70% {100 * claim['forgetting_at_high']:.1f}, "
            f"{100 * claim['relative_increase']:+.0f}% (the seed article: +45%)"
            + ("" if claim["interpolated"] else "; 30% or 70% lies outside the data")
        )
    return claims, "\n".join(lines) + "\n"
