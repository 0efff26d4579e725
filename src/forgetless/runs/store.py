"""Runs on disk: a folder per run and a SQLite index over them.

Layout of a store folder::

    STORE/
      index.sqlite                 one row per run (see forgetless.runs.index)
      RUN_ID/
        config.json                the whole RunConfig
        events.jsonl               records as they happen (one JSON object per line)
        checkpoints/
          model-task-1.safetensors ...   the weights after each task (plain safetensors;
                                   not with ``keep_weights=False``)
          resume.safetensors       the full state after the last completed task (with
                                   ``keep_weights=False``, deleted when the run completes)
        result.json                when the run is complete

``RUN_ID`` is ``<scenario>_<strategy>_s<seed>_<hash>``, ``hash`` being
:func:`forgetless.experiment.config_hash`: a config that is complete in the store is not run
again unless asked, which is what lets a stopped sweep restart where it was.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from forgetless.engine import Snapshot
from forgetless.errors import ConfigError
from forgetless.experiment import RunConfig, config_hash, run
from forgetless.result import Result
from forgetless.runs.checkpoint import load_snapshot, save_snapshot, save_weights
from forgetless.runs.index import RunIndex
from forgetless.runs.loggers import LOGGERS, MLflowSink, TensorBoardSink, fan_out

#: Where ``forgetless runs`` looks when no ``--store`` is given.
DEFAULT_STORE = "runs"


def default_store() -> Path:
    """``$FORGETLESS_RUNS`` if set, else ``./runs``."""
    return Path(os.environ.get("FORGETLESS_RUNS", DEFAULT_STORE))


class RunStore:
    """A folder of runs with a SQLite index.

    Example::

        store = RunStore("runs")
        result = store.execute(RunConfig(scenario="split-digits", strategy="ewc", seed=1))
        store.index.find(status="complete")
    """

    def __init__(self, root: str | Path, keep_weights: bool = True):
        """``keep_weights=False`` writes no per-task weights, and deletes the resume checkpoint
        when a run completes: a finished run keeps its config, events and result only (a
        sweep of many runs then takes kilobytes a run instead of megabytes)."""
        self.root = Path(root)
        self.keep_weights = bool(keep_weights)
        self.root.mkdir(parents=True, exist_ok=True)
        self.index = RunIndex(self.root / "index.sqlite")

    def run_id(self, config: RunConfig) -> str:
        strategy = re.sub(r"[^A-Za-z0-9+.-]", "-", config.strategy)
        return f"{config.scenario}_{strategy}_s{config.seed}_{config_hash(config)}"

    def folder(self, run_id: str) -> Path:
        return self.root / run_id

    def execute(
        self,
        config: RunConfig,
        rerun: bool = False,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        loggers: Sequence[str] = (),
    ) -> Result:
        """Run ``config`` into its folder, or return its stored result if it is complete.

        An interrupted run of the same config is continued from its last checkpoint. With
        ``rerun``, a complete run is trained again from scratch. ``on_event`` also receives
        every event. ``loggers`` names extra sinks for the events: ``"tensorboard"`` (into
        ``RUN/tensorboard/``) and ``"mlflow"`` (a file store in ``STORE/mlruns/``).
        """
        for name in loggers:
            if name not in LOGGERS:
                raise ConfigError(f"unknown logger {name!r}; known: {', '.join(LOGGERS)}")
        run_id = self.run_id(config)
        folder = self.folder(run_id)
        row = self.index.get(run_id)
        if row is not None and row["status"] == "complete" and not rerun:
            return Result.load(folder / "result.json")
        snapshot = None
        resume_file = folder / "checkpoints" / "resume.safetensors"
        if row is not None and not rerun and resume_file.exists():
            snapshot = load_snapshot(resume_file)
        sinks = []
        try:
            if "tensorboard" in loggers:
                sinks.append(TensorBoardSink(folder / "tensorboard"))
            if "mlflow" in loggers:
                resuming = snapshot is not None
                sinks.append(MLflowSink(self.root / "mlruns", run_id, config.to_dict(), resuming))
            if on_event is not None:
                sinks.append(on_event)
            return self._execute(config, run_id, snapshot, fan_out(sinks) if sinks else None)
        finally:
            for sink in sinks:
                if hasattr(sink, "close"):
                    sink.close()

    def resume(
        self, folder: str | Path, on_event: Callable[[dict[str, Any]], None] | None = None
    ) -> Result:
        """Continue the run in ``folder`` from its last completed task (or from the start if it
        never finished one); a complete run just returns its result."""
        folder = Path(folder)
        config_file = folder / "config.json"
        if not config_file.is_file():
            raise ConfigError(f"{folder} is not a run folder (no config.json)")
        config = RunConfig.from_dict(json.loads(config_file.read_text()))
        if folder.resolve() != self.folder(self.run_id(config)).resolve():
            raise ConfigError(
                f"{folder} holds run {self.run_id(config)}, which belongs in {self.root}"
            )
        return self.execute(config, on_event=on_event)

    def _execute(self, config, run_id, snapshot: Snapshot | None, on_event) -> Result:
        folder = self.folder(run_id)
        checkpoints = folder / "checkpoints"
        checkpoints.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(config.to_dict(), indent=1) + "\n")
        self.index.upsert(
            run_id,
            config_hash=config_hash(config),
            scenario=config.scenario,
            strategy=config.strategy,
            seed=config.seed,
            status="running",
            tasks_done=0 if snapshot is None else snapshot.task + 1,
            path=str(folder),
            pid=os.getpid(),
            host=socket.gethostname(),
        )
        if snapshot is None:
            for stale in (folder / "events.jsonl", folder / "result.json"):
                stale.unlink(missing_ok=True)
        with open(folder / "events.jsonl", "a", buffering=1) as events:

            def event(record: dict[str, Any]) -> None:
                events.write(json.dumps(record) + "\n")  # line-buffered: on disk as it happens
                if on_event is not None:
                    on_event(record)

            if snapshot is not None:
                event({"event": "resume", "after_task": snapshot.task})

            def task_end(state: Snapshot) -> None:
                if self.keep_weights:
                    weights = checkpoints / f"model-task-{state.task + 1}.safetensors"
                    save_weights(state.model, weights)
                save_snapshot(state, checkpoints / "resume.safetensors")
                events.flush()
                os.fsync(events.fileno())
                self.index.update(run_id, tasks_done=state.task + 1)

            try:
                result = run(config, on_event=event, on_task_end=task_end, resume=snapshot)
            except KeyboardInterrupt:
                self.index.update(run_id, status="interrupted")
                raise
            except Exception:
                self.index.update(run_id, status="failed")
                raise
            m = result.metrics
            event({"event": "end", "metrics": m})
        result.save(folder / "result.json")
        if not self.keep_weights:  # only needed to continue an unfinished run
            (checkpoints / "resume.safetensors").unlink(missing_ok=True)
        self.index.update(
            run_id,
            status="complete",
            tasks_done=result.num_tasks,
            n_tasks=result.num_tasks,
            acc=m["acc"],
            bwt=m["bwt"],
            fwt=m["fwt"],
            forgetting=m["forgetting"],
        )
        return result

    def result(self, run: str) -> Result:
        """The result of a complete run, by id or folder."""
        folder = self.locate(run)
        path = folder / "result.json"
        if not path.is_file():
            row = self.index.get(folder.name)
            status = row["status"] if row else "unknown"
            raise ConfigError(f"run {folder.name} has no result yet (status: {status})")
        return Result.load(path)

    def locate(self, run: str) -> Path:
        """A run's folder from its id, a unique prefix of it, or a path."""
        path = Path(run)
        if (path / "config.json").is_file():
            return path
        if (self.root / run / "config.json").is_file():
            return self.root / run
        matches = [r["id"] for r in self.index.find() if r["id"].startswith(run)]
        if len(matches) == 1:
            return self.root / matches[0]
        if not matches:
            raise ConfigError(f"no run {run!r} in {self.root}")
        raise ConfigError(f"{run!r} matches {len(matches)} runs: {', '.join(matches[:5])}")
