"""Runs on disk: a folder per run and a SQLite index over them.

Layout of a store folder::

    STORE/
      index.sqlite                 one row per run (see forgetless.runs.index): a cache of
                                   the folders, rebuilt from them when missing or corrupt
      RUN_ID/
        lock                       held (flock) by the one process writing the run
        config.json                the whole RunConfig, resolved (the preset's loop settings
                                   written out), with its checksum
        events.jsonl               records as they happen (one JSON object per line)
        checkpoints/
          model-task-1.safetensors ...   the weights after each task (plain safetensors;
                                   not with ``keep_weights=False``); with adapters, only
                                   the adapters' tensors after the tasks they trained
          resume.safetensors       the full state after the last completed task, and
          resume-previous.safetensors    the one before it (both deleted when the run
                                   completes with ``keep_weights=False``)
        result.json                when the run is complete (with its checksum)

``RUN_ID`` is ``<scenario>_<strategy>_s<seed>_<hash>``, made of safe characters only, ``hash``
being :func:`forgetless.experiment.config_hash`: a config that is complete in the store is not
run again unless asked, which is what lets a stopped sweep restart where it was.

What makes it trustworthy:

- **The folder is the truth.** A run is complete when its ``result.json`` is there and intact;
  it continues from its resume checkpoint otherwise. The index only speeds up listing, and
  :meth:`RunStore.reindex` rebuilds it from the folders.
- **One writer per run**: :class:`~forgetless.runs.lock.RunLock`; another process waits for
  it, or (sweeps) skips the run and says who holds it.
- **Atomic, checksummed files** (:mod:`forgetless.runs.files`): a crash leaves each file old or
  new, and a damaged file is an error naming it, never a result.
- **Each event once**: a checkpoint records how far ``events.jsonl`` had got; resuming cuts the
  file back there, so the events of a task trained again are not written twice.
- **Nothing outside the store**: a run id is a slug, every folder is checked to lie inside the
  store, and a config is checked before anything is created.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from forgetless.engine import Snapshot
from forgetless.errors import ConfigError, DataError
from forgetless.experiment import RunConfig, config_hash, run
from forgetless.json_file import loads_json
from forgetless.result import Result
from forgetless.runs.checkpoint import checkpoint_task, read_checkpoint, save_snapshot, save_weights
from forgetless.runs.faults import point
from forgetless.runs.files import (
    fsync_folder,
    read_json,
    remove,
    remove_temporaries,
    write_json,
)
from forgetless.runs.index import IndexCorrupt, RunIndex
from forgetless.runs.lock import RunBusy, RunLock
from forgetless.runs.loggers import LOGGERS, MLflowSink, TensorBoardSink, fan_out

#: Where ``forgetless runs`` looks when no ``--store`` is given.
DEFAULT_STORE = "runs"
INDEX_NAME = "index.sqlite"
RESUME = "resume.safetensors"
PREVIOUS = "resume-previous.safetensors"
_SLUG = re.compile(r"[^A-Za-z0-9+.-]")
_RERUN = "`forgetless run --resume {folder} --rerun` trains it again from the start"


def default_store() -> Path:
    """``$FORGETLESS_RUNS`` if set, else ``./runs``."""
    return Path(os.environ.get("FORGETLESS_RUNS", DEFAULT_STORE))


def slug(text: str) -> str:
    """``text`` with every character but letters, digits, ``+``, ``.`` and ``-`` replaced by
    ``-``, and no leading dot: a name that cannot leave its folder or hide in it."""
    return _SLUG.sub("-", text).lstrip(".") or "-"


def is_store(root: str | Path) -> bool:
    """Whether ``root`` holds a run store: an index, or at least one run folder."""
    root = Path(root)
    if (root / INDEX_NAME).is_file():
        return True
    try:
        return any((p / "config.json").is_file() for p in root.iterdir())
    except OSError:
        return False


class RunStore:
    """A folder of runs with a SQLite index.

    Example::

        store = RunStore("runs")
        result = store.execute(RunConfig(scenario="split-digits", strategy="ewc", seed=1))
        store.index.find(status="complete")

    Nothing is created on disk until something is written: opening a store to read it, or to
    run a config that turns out to be invalid, leaves no trace.
    """

    def __init__(self, root: str | Path, keep_weights: bool = True):
        """``keep_weights=False`` writes no per-task weights, and deletes the resume checkpoints
        when a run completes: a finished run keeps its config, events and result only (a
        sweep of many runs then takes kilobytes a run instead of megabytes)."""
        self.root = Path(root)
        self.keep_weights = bool(keep_weights)
        self._index: RunIndex | None = None
        self._single: Path | None = None

    @classmethod
    def run_folder(cls, folder: str | Path, keep_weights: bool = True) -> RunStore:
        """One run in the folder ``folder`` itself (``forgetless run --out DIR``): the same
        files, written the same way, as a run of a store (config first, events as they
        happen, checkpoints after each task, the result last), without an index. It holds
        one run: executing another config there is an error."""
        store = cls(folder, keep_weights)
        store._single = Path(folder)
        return store

    # --- where things are --------------------------------------------------------------------

    @property
    def index(self) -> RunIndex:
        """The index, opened on first use: created if missing, and rebuilt from the run folders
        when it is missing while runs exist, or when it is corrupt."""
        if self._index is None:
            path = self.root / INDEX_NAME
            rebuild = not path.exists() and is_store(self.root)
            self.root.mkdir(parents=True, exist_ok=True)
            try:
                self._index = RunIndex(path)
            except IndexCorrupt as err:
                aside = path.with_name(f"{INDEX_NAME}.corrupt-{int(time.time())}")
                warnings.warn(
                    f"{err}; it was moved to {aside.name} and is rebuilt from the run folders",
                    RuntimeWarning,
                    stacklevel=2,
                )
                os.replace(path, aside)
                for extra in ("-wal", "-shm"):  # they belong to the damaged file
                    path.with_name(INDEX_NAME + extra).unlink(missing_ok=True)
                self._index = RunIndex(path)
                rebuild = True
            if rebuild:
                self.reindex()
        return self._index

    def _record(self, run_id: str, **fields: Any) -> None:
        """Write ``fields`` into the run's index row (created if missing). An index deleted
        or damaged meanwhile is rebuilt from the folders first: it is only a cache. A run
        folder of its own has no index."""
        if self._single is not None:
            return
        try:
            self.index.upsert(run_id, **fields)
        except IndexCorrupt:
            self._index = None
            self.index.upsert(run_id, **fields)

    def run_id(self, config: RunConfig) -> str:
        return (
            f"{slug(config.scenario)}_{slug(config.strategy)}_s{int(config.seed)}_"
            f"{config_hash(config)}"
        )

    def folder(self, run_id: str) -> Path:
        """The folder of ``run_id``, checked to lie inside the store (an id from a damaged or
        crafted index cannot lead elsewhere); for :meth:`run_folder`, that folder."""
        if self._single is not None:
            return self._single
        if not isinstance(run_id, str) or not run_id or _SLUG.search(run_id.replace("_", "")):
            raise ConfigError(f"{run_id!r} is not a run id (letters, digits, _ + . - only)")
        if run_id.startswith("."):
            raise ConfigError(f"{run_id!r} is not a run id (it starts with a dot)")
        folder = self.root / run_id
        if folder.resolve().parent != self.root.resolve():
            raise ConfigError(f"run id {run_id!r} names a folder outside the store {self.root}")
        return folder

    # --- running -----------------------------------------------------------------------------

    def execute(
        self,
        config: RunConfig,
        rerun: bool = False,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        loggers: Sequence[str] = (),
        wait: bool = True,
        on_wait: Callable[[str], None] | None = None,
    ) -> Result:
        """Run ``config`` into its folder, or return its stored result if it is complete.

        An interrupted run of the same config is continued from its last checkpoint. With
        ``rerun``, a complete run is trained again from scratch. ``on_event`` also receives
        every event. ``loggers`` names extra sinks for the events: ``"tensorboard"`` (into
        ``RUN/tensorboard/``) and ``"mlflow"`` (a file store in ``STORE/mlruns/``).

        If another process is writing the run: with ``wait``, ``on_wait(message)`` is called
        (default: a warning) and this one waits for it, then returns its result or continues
        it; without, :class:`~forgetless.runs.lock.RunBusy` is raised at once.

        Raises:
            ConfigError: the config cannot run (checked before anything is created).
            DataError: a file of the run is damaged (it names the file and what to do).
        """
        for name in loggers:
            if name not in LOGGERS:
                raise ConfigError(f"unknown logger {name!r}; known: {', '.join(LOGGERS)}")
        check_runnable(config)
        config = config.resolved()  # config.json holds the settings the run is trained with
        run_id = self.run_id(config)
        folder = self.folder(run_id)
        if self._single is not None:
            _check_same_run(folder, config, run_id, rerun)
        if not rerun and (folder / "result.json").exists():
            return self._complete(config, run_id)
        folder.mkdir(parents=True, exist_ok=True)
        lock = RunLock(folder)
        lock.acquire(wait, on_wait or _warn)
        try:
            point("lock taken")
            remove_temporaries(folder)
            remove_temporaries(folder / "checkpoints")
            if rerun:
                self._clear(folder)
            elif (folder / "result.json").exists():  # finished while we waited
                return self._complete(config, run_id)
            resumed = self._load_resume(folder)
            sinks = []
            try:
                if "tensorboard" in loggers:
                    sinks.append(TensorBoardSink(folder / "tensorboard"))
                if "mlflow" in loggers:
                    resuming = resumed is not None
                    mlflow = MLflowSink(self.root / "mlruns", run_id, config.to_dict(), resuming)
                    sinks.append(mlflow)
                if on_event is not None:
                    sinks.append(on_event)
                return self._execute(config, run_id, resumed, fan_out(sinks) if sinks else None)
            finally:
                for sink in sinks:
                    if hasattr(sink, "close"):
                        sink.close()
        finally:
            lock.release()

    def resume(
        self,
        folder: str | Path,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        rerun: bool = False,
        on_wait: Callable[[str], None] | None = None,
    ) -> Result:
        """Continue the run in ``folder`` from its last completed task (or from the start if it
        never finished one, or with ``rerun``); a complete run just returns its result."""
        folder = Path(folder)
        config = read_config(folder)
        if self._single is None and folder.resolve() != self.folder(self.run_id(config)).resolve():
            raise ConfigError(
                f"{folder} holds run {self.run_id(config)}, which belongs in {self.root}"
            )
        return self.execute(config, rerun=rerun, on_event=on_event, on_wait=on_wait)

    def _complete(self, config: RunConfig, run_id: str) -> Result:
        """The stored result of a complete run (verified), the index brought up to date, and
        checkpoints a crash left behind after the result was written removed."""
        folder = self.folder(run_id)
        result = self._read_result(folder)
        row = None if self._single is not None else self.index.get(run_id)
        if row is None or row["status"] != "complete":
            self._record(run_id, **_complete_row(config, result, folder))
        checkpoints = folder / "checkpoints"
        leftovers = [checkpoints / PREVIOUS]
        if not any(checkpoints.glob("model-task-*.safetensors")):  # written without weights
            leftovers.append(checkpoints / RESUME)
        leftovers = [path for path in leftovers if path.exists()]
        if leftovers:
            lock = RunLock(folder)
            try:
                lock.acquire(wait=False)
            except RunBusy:
                return result  # its writer tidies up
            try:
                for path in leftovers:
                    remove(path, "resume checkpoint (complete)")
            finally:
                lock.release()
        return result

    def _clear(self, folder: Path) -> None:
        """Remove what a run wrote (for ``rerun``): the result first, so that a crash from here
        on leaves an unfinished run, never a complete one with others' events."""
        remove(folder / "result.json", "result (rerun)")
        checkpoints = folder / "checkpoints"
        for name in (RESUME, PREVIOUS):
            remove(checkpoints / name, "resume checkpoint (rerun)")
        if checkpoints.is_dir():
            for weights in checkpoints.glob("model-task-*.safetensors"):
                remove(weights, "task weights (rerun)")

    def _load_resume(self, folder: Path) -> tuple[Snapshot, dict[str, Any]] | None:
        """The newest intact resume checkpoint and its store data, or ``None`` if there is none
        (start from the first task). A damaged newest checkpoint is set aside, with a warning,
        for the one before it; if none is intact, a DataError says what to do."""
        checkpoints = folder / "checkpoints"
        errors = []
        for name in (RESUME, PREVIOUS):
            path = checkpoints / name
            if not path.exists():
                continue
            try:
                loaded = read_checkpoint(path)
            except DataError as err:
                errors.append((path, err))
                continue
            for bad, err in errors:
                aside = bad.with_name(bad.name + ".corrupt")
                os.replace(bad, aside)
                warnings.warn(
                    f"{err}. It was moved to {aside.name}; the run continues from the previous "
                    f"checkpoint ({path.name}, after task {loaded[0].task + 1}) and trains the "
                    "task after it again",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return loaded
        if errors:
            path, err = errors[0]
            raise DataError(
                f"{err}; there is no intact earlier checkpoint to continue from, so "
                + _RERUN.format(folder=folder)
            ) from None
        return None

    def _execute(self, config, run_id, resumed, on_event) -> Result:
        folder = self.folder(run_id)
        checkpoints = folder / "checkpoints"
        checkpoints.mkdir(parents=True, exist_ok=True)
        snapshot, kept = resumed if resumed is not None else (None, {})
        write_json(folder / "config.json", config.to_dict(), "config")
        fsync_folder(self.root)
        point("index: before the running row")
        try:
            self._record(
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
            point("index: after the running row")
            return self._train(config, run_id, snapshot, kept, on_event)
        except KeyboardInterrupt:  # Ctrl-C anywhere in it: the run continues next time
            if (folder / "result.json").exists():  # it was complete already
                self._complete(config, run_id)
            else:
                self._record(run_id, config_hash=config_hash(config), status="interrupted")
            raise

    def _train(self, config, run_id, snapshot, kept, on_event) -> Result:
        folder = self.folder(run_id)
        checkpoints = folder / "checkpoints"
        events_path = folder / "events.jsonl"
        digest = _cut_events(events_path, snapshot, kept)
        with open(events_path, "ab", buffering=0) as events:

            def event(record: dict[str, Any]) -> None:
                line = (json.dumps(record) + "\n").encode()
                kind = record["event"]
                if kind in ("task", "end", "resume", "failed"):  # the records that mark progress
                    half = len(line) // 2
                    _write(events, line[:half], digest)
                    point(f"event {kind}: half written")
                    _write(events, line[half:], digest)
                    point(f"event {kind}: written")
                else:
                    _write(events, line, digest)  # unbuffered: on disk as it happens
                if on_event is not None:
                    on_event(record)
                if kind == "start":  # the number of tasks is known from here: `runs ls` N/M
                    self._record(
                        run_id,
                        config_hash=config_hash(config),
                        status="running",
                        n_tasks=len(record["baseline"]),
                    )

            if snapshot is not None:
                event({"event": "resume", "after_task": snapshot.task})

            def task_end(state: Snapshot) -> None:
                if self.keep_weights:
                    weights = checkpoints / f"model-task-{state.task + 1}.safetensors"
                    # adapters: only theirs after the first task (Strategy.task_weights)
                    part = state.task_weights
                    save_weights(state.model if part is None else part, weights)
                os.fsync(events.fileno())
                point("events: synced")
                save_snapshot(
                    state,
                    checkpoints / RESUME,
                    store={"events_bytes": events.tell(), "events_sha256": _hex(digest)},
                    keep_previous=checkpoints / PREVIOUS,
                )
                point("index: before tasks done")
                self._record(
                    run_id, config_hash=config_hash(config), status="running",
                    tasks_done=state.task + 1,
                )  # fmt: skip
                point("index: after tasks done")

            try:
                result = run(config, on_event=event, on_task_end=task_end, resume=snapshot)
            except Exception as err:
                event({"event": "failed", "error": f"{type(err).__name__}: {err}"})
                self._record(run_id, config_hash=config_hash(config), status="failed")
                raise
            m = result.metrics
            event({"event": "end", "metrics": m})
            os.fsync(events.fileno())
        # The commit point: from here the run is complete, whatever happens next.
        write_json(folder / "result.json", result.to_dict(), "result")
        # The previous checkpoint only serves to continue an unfinished run; so does the last
        # one, unless weights are kept.
        for name in (PREVIOUS,) if self.keep_weights else (RESUME, PREVIOUS):
            remove(checkpoints / name, "resume checkpoint (complete)")
        point("index: before complete")
        self._record(run_id, **_complete_row(config, result, folder))
        point("index: after complete")
        return result

    # --- reading -----------------------------------------------------------------------------

    def result(self, run: str) -> Result:
        """The result of a complete run, by id or folder (its checksum verified)."""
        folder = self.locate(run)
        if not (folder / "result.json").is_file():
            row = self.index.get(folder.name)
            status = row["status"] if row else "unknown"
            raise ConfigError(f"run {folder.name} has no result yet (status: {status})")
        return self._read_result(folder)

    def _read_result(self, folder: Path) -> Result:
        fix = "the run is not complete until it is trained again: " + _RERUN.format(folder=folder)
        data = read_json(folder / "result.json", "result", required=False, fix=fix)
        try:
            return Result.from_dict(data, source=folder / "result.json")
        except ConfigError as err:
            raise DataError(f"{err}; {fix}") from None

    def complete_results(self) -> list[Result]:
        """The results of every complete run in the index, oldest first (each verified; an id
        in the index that is not a run id of this store is an error, never a path)."""
        return [self._read_result(self.folder(r["id"])) for r in self.index.find(status="complete")]

    def locate(self, run: str) -> Path:
        """A run's folder from its id, a path to it, or a unique prefix of an id."""
        plain = bool(run) and not _SLUG.search(run.replace("_", "")) and not run.startswith(".")
        if plain and (self.root / run / "config.json").is_file():
            return self.folder(run)
        path = Path(run)
        if not plain and (path / "config.json").is_file():
            return path
        matches = [r["id"] for r in self.index.find() if r["id"].startswith(run)]
        if len(matches) == 1:
            return self.folder(matches[0])
        if not matches:
            raise ConfigError(f"no run {run!r} in {self.root}")
        raise ConfigError(f"{run!r} matches {len(matches)} runs: {', '.join(matches[:5])}")

    def reindex(self) -> dict[str, int]:
        """Rebuild the index from the run folders (the folders are the truth); returns how
        many runs of each status were found. A folder whose config does not match its name is
        left out, with a warning."""
        rows = []
        folders = sorted(self.root.iterdir()) if self.root.is_dir() else []
        for folder in (p for p in folders if (p / "config.json").is_file()):
            try:
                rows.append(self._row_from_folder(folder))
            except (ConfigError, DataError) as err:
                warnings.warn(
                    f"{folder.name} left out of the index: {err}", RuntimeWarning, stacklevel=2
                )
        self.index.replace_all(rows)
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        return counts

    def _row_from_folder(self, folder: Path) -> dict[str, Any]:
        config = read_config(folder)
        if self.run_id(config) != folder.name:
            raise ConfigError(f"its config.json is the config of run {self.run_id(config)}")
        created = (folder / "config.json").stat().st_mtime
        base = {
            "id": folder.name,
            "config_hash": config_hash(config),
            "scenario": config.scenario,
            "strategy": config.strategy,
            "seed": config.seed,
            "path": str(folder),
            "created": created,
            "updated": time.time(),
        }
        if (folder / "result.json").exists():
            try:
                return {**base, **_complete_row(config, self._read_result(folder), folder)}
            except DataError as err:
                warnings.warn(f"{folder.name}: {err}", RuntimeWarning, stacklevel=3)
                return {**base, "status": "failed", "tasks_done": 0}
        holder = RunLock(folder).held_by_other()
        tasks = checkpoint_task(folder / "checkpoints" / RESUME)
        if tasks is None:
            tasks = checkpoint_task(folder / "checkpoints" / PREVIOUS)
        row = {
            **base,
            "tasks_done": 0 if tasks is None else tasks + 1,
            "n_tasks": planned_tasks(folder),
        }
        if holder is not None:
            return {
                **row,
                "status": "running",
                "pid": holder.get("pid"),
                "host": holder.get("host"),
            }
        status = "failed" if _last_event(folder / "events.jsonl") == "failed" else "interrupted"
        return {**row, "status": status}


def read_config(folder: str | Path) -> RunConfig:
    """The config of the run folder ``folder``; a missing or damaged file is a clear error."""
    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        raise ConfigError(f"{folder} is not a run folder (no config.json)")
    data = read_json(path, "run config", required=False)  # stores from before checksums: none
    try:
        return RunConfig.from_dict(data)
    except (ConfigError, TypeError) as err:
        raise DataError(f"the run config {path} is not a valid config: {err}") from None


def open_run_folder(folder: str | Path) -> tuple[RunStore, Path]:
    """The store that holds the run folder ``folder``, and the folder: the store above it
    when the folder is one of its runs (named by its config's run id, beside an index), else
    the folder as a run of its own (as ``--out DIR`` writes it)."""
    folder = Path(folder)
    config = read_config(folder)
    parent = RunStore(folder.parent)
    if (folder.parent / INDEX_NAME).is_file() and folder.name == parent.run_id(config):
        return parent, folder
    return RunStore.run_folder(folder), folder


def _check_same_run(folder: Path, config: RunConfig, run_id: str, rerun: bool) -> None:
    """A run folder of its own holds one run: another config there is refused (unless
    ``rerun`` replaces it), before anything is written."""
    if not (folder / "config.json").is_file():
        return
    stored = read_config(folder)
    if config_hash(stored) == config_hash(config):
        return
    if not rerun:
        raise ConfigError(
            f"{folder} holds another run ({RunStore(folder).run_id(stored)}, not {run_id}): "
            f"continue it with 'forgetless run --resume {folder}', write this one elsewhere, "
            "or add --rerun to replace it"
        )


def check_runnable(config: RunConfig) -> None:
    """What must hold before a folder is created for ``config``: a known scenario (the name
    goes into the run id and its folder name)."""
    from forgetless.scenarios import PRESETS

    if config.scenario not in PRESETS:
        raise ConfigError(f"unknown scenario {config.scenario!r}; known: {', '.join(PRESETS)}")


def _complete_row(config: RunConfig, result: Result, folder: Path) -> dict[str, Any]:
    m = result.metrics
    return {
        "config_hash": config_hash(config),
        "scenario": config.scenario,
        "strategy": config.strategy,
        "seed": config.seed,
        "status": "complete",
        "tasks_done": result.num_phases,  # with a schedule, "tasks" counts training phases
        "n_tasks": result.num_phases,
        "acc": m["acc"],
        "bwt": m["bwt"],
        "fwt": m["fwt"],
        "forgetting": m["forgetting"],
        "path": str(folder),
    }


def _write(events, data: bytes, digest) -> None:
    view = memoryview(data)
    while view:
        view = view[events.write(view) :]
    digest.update(data)


def _cut_events(path: Path, snapshot: Snapshot | None, kept: dict[str, Any]):
    """Make ``events.jsonl`` hold exactly the events up to ``snapshot`` (none without one):
    what was written after the checkpoint is written again as the run continues, so keeping
    it would repeat it. Returns the running sha256 of the file's content."""
    digest = hashlib.sha256()
    if snapshot is None:
        with open(path, "wb"):
            pass
        point("events: emptied")
        return digest
    size = kept.get("events_bytes")
    if not isinstance(size, int) or size < 0:
        raise DataError(f"the checkpoint of {path.parent} does not say where its events end")
    try:
        with open(path, "r+b") as f:
            prefix = f.read(size)
            digest.update(prefix)
            if len(prefix) < size or _hex(digest) != kept.get("events_sha256"):
                raise DataError(
                    f"the events file {path} is corrupt: its first {size} bytes are not the "
                    "events the last checkpoint recorded; " + _RERUN.format(folder=path.parent)
                )
            f.truncate(size)
            os.fsync(f.fileno())
    except FileNotFoundError:
        raise DataError(
            f"the events file {path} is missing; " + _RERUN.format(folder=path.parent)
        ) from None
    point("events: cut back to the checkpoint")
    return digest


def _hex(digest) -> str:
    return "sha256:" + digest.hexdigest()


def planned_tasks(folder: str | Path) -> int | None:
    """How many tasks the run in ``folder`` trains, from its first event (the untrained
    model's accuracy on each task); None before the run has started."""
    path = Path(folder) / "events.jsonl"
    try:
        with open(path, "rb") as events:
            first = events.readline(2**20)  # one task's record at most; the first is small
    except OSError:
        return None
    try:
        record = loads_json(first, path)
    except ValueError:
        return None
    if isinstance(record, dict) and record.get("event") == "start":
        baseline = record.get("baseline")
        if isinstance(baseline, list):
            return len(baseline)
    return None


def _last_event(path: Path) -> str | None:
    try:
        lines = path.read_bytes().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            record = loads_json(line, path)
        except ValueError:
            continue
        return record.get("event") if isinstance(record, dict) else None
    return None


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)
