"""Optional sinks for a run's events: TensorBoard and MLflow (a local file store).

They receive the same records as ``events.jsonl`` (see :func:`forgetless.engine.train`,
``on_event``) and write them as scalars: ``train/loss`` at each reported step,
``accuracy/task_<j>`` for every task after each task (and at each ``eval_every`` evaluation),
``accuracy/mean_seen`` over the tasks trained so far, and the final metrics.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from forgetless.errors import ConfigError

LOGGERS = ("tensorboard", "mlflow")


class TensorBoardSink:
    """Scalars in a TensorBoard log folder (needs ``pip install tensorboard``)."""

    def __init__(self, log_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("the tensorboard logger needs: pip install tensorboard") from None
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def __call__(self, event: dict[str, Any]) -> None:
        for name, value, step in scalars(event):
            self.writer.add_scalar(name, value, step)
        if event["event"] in ("task", "end"):
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MLflowSink:
    """Metrics and the config in an MLflow run (needs ``pip install mlflow-skinny`` or
    ``mlflow``); ``tracking_dir`` is a local file store, e.g. ``STORE/mlruns``. Runs are tagged
    ``forgetless.run`` with the run id; with ``resume``, the latest MLflow run of that id is
    continued instead of a new one opened."""

    def __init__(
        self,
        tracking_dir: str | Path,
        run_name: str,
        params: dict[str, Any],
        resume: bool = False,
    ):
        try:
            import mlflow
        except ImportError:
            raise ConfigError("the mlflow logger needs: pip install mlflow-skinny") from None
        self.mlflow = mlflow
        # A folder of plain files keeps the run store self-contained. MLflow 3 keeps this
        # store working but asks users to opt in to it.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(Path(tracking_dir).resolve().as_uri())
        mlflow.set_experiment("forgetless")
        # A resumed run continues its MLflow run (found by tag) rather than opening a second.
        earlier = []
        if resume:
            earlier = mlflow.search_runs(
                experiment_names=["forgetless"],
                filter_string=f"tags.`forgetless.run` = '{run_name}'",
                order_by=["attributes.start_time DESC"],
                output_format="list",
            )
        if earlier:
            self.run = mlflow.start_run(run_id=earlier[0].info.run_id)
            return
        self.run = mlflow.start_run(run_name=run_name, tags={"forgetless.run": run_name})
        flat = {k: v for k, v in params.items() if k != "strategy_params"}
        flat.update({f"strategy.{k}": v for k, v in params.get("strategy_params", {}).items()})
        mlflow.log_params({k: str(v) for k, v in flat.items()})

    def __call__(self, event: dict[str, Any]) -> None:
        for name, value, step in scalars(event):
            self.mlflow.log_metric(name.replace("/", "."), value, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


def scalars(event: dict[str, Any]) -> list[tuple[str, float, int]]:
    """``(name, value, step)`` for the scalars an event carries."""
    kind = event["event"]
    if kind == "loss":
        return [("train/loss", float(event["loss"]), int(event["step"]))]
    if kind in ("task", "curve"):
        step, row = int(event["step"]), event["accuracy"]
        seen = row[: event["task"] + 1]
        out = [(f"accuracy/task_{j + 1}", float(a), step) for j, a in enumerate(row)]
        out.append(("accuracy/mean_seen", sum(seen) / len(seen), step))
        return out
    if kind == "end":
        return [(f"final/{k}", float(v), 0) for k, v in event["metrics"].items() if v is not None]
    return []


def fan_out(sinks: Sequence[Callable[[dict[str, Any]], None]]) -> Callable[[dict[str, Any]], None]:
    """One event callback calling every sink in turn."""

    def call(event: dict[str, Any]) -> None:
        for sink in sinks:
            sink(event)

    return call
