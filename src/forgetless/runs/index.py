"""The SQLite index of a run store: one row per run, safe for several writers at once.

WAL journaling lets readers work while one process writes; every write is one short
``BEGIN IMMEDIATE`` transaction, and a writer that finds the database locked waits (up to
``timeout`` seconds) instead of failing, so two processes updating runs at once lose nothing.

Each :class:`RunIndex` keeps its connection open between calls (one per thread and process):
closing the last connection to a WAL database checkpoints it and deletes the WAL, a dozen
milliseconds of file syncs, which a run paid eight times (once per row update) when every call
connected anew. A connection is opened again when the file was replaced or deleted, after a
fork (an inherited connection is never used, nor closed, by the child), and after any error
(closing it rolls back a transaction the error interrupted).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from forgetless.errors import DataError

COLUMNS = (
    "id",
    "config_hash",
    "scenario",
    "strategy",
    "seed",
    "status",
    "tasks_done",
    "n_tasks",
    "acc",
    "bwt",
    "fwt",
    "forgetting",
    "created",
    "updated",
    "path",
    "pid",
    "host",
)
STATUSES = ("running", "interrupted", "failed", "complete")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    config_hash TEXT NOT NULL,
    scenario TEXT, strategy TEXT, seed INTEGER,
    status TEXT NOT NULL,
    tasks_done INTEGER, n_tasks INTEGER,
    acc REAL, bwt REAL, fwt REAL, forgetting REAL,
    created REAL, updated REAL,
    path TEXT,
    pid INTEGER, host TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_hash ON runs (config_hash, status);
"""


#: Connections a forked child inherited: kept referenced so that the child never closes them
#: (closing one there could checkpoint or unlock what the parent's connection relies on).
_INHERITED: list[sqlite3.Connection] = []


class IndexCorrupt(DataError):
    """The index file is not a readable SQLite database, or was deleted while in use (it can be
    rebuilt from the run folders)."""


class RunIndex:
    """Rows of ``runs`` in the SQLite file ``path`` (created if missing).

    The index is a cache of what the run folders hold (see
    :meth:`forgetless.runs.RunStore.reindex`): a damaged file raises :class:`IndexCorrupt`,
    which the store answers by rebuilding it."""

    def __init__(self, path: str | Path, timeout: float = 60.0):
        self.path = Path(path)
        self.timeout = timeout
        self._local = threading.local()  # this thread's (connection, pid, file identity)
        with self._connect(create=True) as db:
            if db.execute("PRAGMA quick_check(1)").fetchall()[0][0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            have = {row["name"] for row in db.execute("PRAGMA table_info(runs)")}
            if set(COLUMNS) - have - {"pid", "host"}:
                raise sqlite3.DatabaseError("its table of runs lacks columns")
            for name, kind in (("pid", "INTEGER"), ("host", "TEXT")):  # stores made before
                if name not in have:
                    db.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")

    @contextmanager
    def _connect(self, create: bool = False) -> Iterator[sqlite3.Connection]:
        if not create and not self.path.exists():  # deleted while open: connecting would
            # create an empty file without the table, and the rows would be lost unnoticed
            self.close()
            raise IndexCorrupt(f"the run index {self.path} was deleted")
        db = self._open()
        try:
            yield db
        except sqlite3.OperationalError as err:  # locked past the timeout, disk full, ...
            self.close()
            raise DataError(f"the run index {self.path}: {err}") from None
        except sqlite3.DatabaseError as err:  # not a database, or a malformed one
            self.close()
            raise IndexCorrupt(
                f"the run index {self.path} is corrupt ({err}); `forgetless runs reindex "
                f"--store {self.path.parent}` rebuilds it from the run folders"
            ) from None
        except BaseException:  # Ctrl-C mid-transaction: closing rolls it back
            self.close()
            raise

    def _open(self) -> sqlite3.Connection:
        """This thread's connection, opened if there is none, if it was inherited through a
        fork, or if the file is no longer the one it was opened on."""
        held = getattr(self._local, "held", None)
        try:
            identity = _identity(self.path)
        except OSError:
            identity = None  # not there yet: sqlite creates it
        if held is not None:
            db, pid, opened_on = held
            if pid != os.getpid():
                _INHERITED.append(db)
                self._local.held = None
            elif opened_on == identity and identity is not None:
                return db
            else:
                self.close()
        try:
            db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        except sqlite3.OperationalError as err:
            raise DataError(f"cannot open the run index {self.path}: {err}") from None
        db.row_factory = sqlite3.Row
        try:
            opened_on = _identity(self.path)
        except OSError:  # not on disk yet: the next call opens it again
            opened_on = None
        self._local.held = (db, os.getpid(), opened_on)
        return db

    def close(self) -> None:
        """Close this thread's connection (the next call opens one again)."""
        held = getattr(self._local, "held", None)
        self._local.held = None
        if held is not None and held[1] == os.getpid():
            held[0].close()
        elif held is not None:
            _INHERITED.append(held[0])

    def replace_all(self, rows: list[dict[str, Any]]) -> None:
        """Make the rows exactly ``rows`` (each with at least ``id``, ``config_hash`` and
        ``status``), in one transaction: readers see the old index or the new one."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM runs")
            for row in rows:
                unknown = set(row) - set(COLUMNS)
                if unknown:
                    raise ValueError(f"unknown index columns: {sorted(unknown)}")
                names = ", ".join(row)
                marks = ", ".join("?" for _ in row)
                db.execute(f"INSERT INTO runs ({names}) VALUES ({marks})", tuple(row.values()))
            db.execute("COMMIT")

    def upsert(self, run_id: str, **fields: Any) -> None:
        """Create the row ``run_id`` with ``fields``, or update it if it exists (``updated`` is
        set to now). A new row needs ``config_hash`` and ``status``."""
        unknown = set(fields) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown index columns: {sorted(unknown)}")
        fields = {**fields, "updated": time.time()}
        names = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        updates = ", ".join(f"{k} = excluded.{k}" for k in fields)
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                f"INSERT INTO runs (id, created, {names}) VALUES (?, ?, {marks}) "
                f"ON CONFLICT(id) DO UPDATE SET {updates}",
                (run_id, time.time(), *fields.values()),
            )
            db.execute("COMMIT")

    def update(self, run_id: str, **fields: Any) -> None:
        """Change some columns of the existing row ``run_id`` (``updated`` is set to now)."""
        unknown = set(fields) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown index columns: {sorted(unknown)}")
        fields = {**fields, "updated": time.time()}
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            changed = db.execute(
                f"UPDATE runs SET {sets} WHERE id = ?", (*fields.values(), run_id)
            ).rowcount
            db.execute("COMMIT")
        if changed != 1:
            raise KeyError(f"no run {run_id!r} in the index {self.path}")

    def get(self, run_id: str) -> dict[str, Any] | None:
        """The row ``run_id`` (see :meth:`find` for its status), or ``None``."""
        with self._connect() as db:
            # fetchall: a statement left unfinished would hold a read snapshot open
            rows = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchall()
        return _as_read(dict(rows[0])) if rows else None

    def find(self, **where: Any) -> list[dict[str, Any]]:
        """Rows whose columns equal ``where`` (all rows if empty), oldest first.

        A row marked ``running`` by a process of this machine that no longer exists (killed
        with -9, or the machine restarted) reads as ``interrupted``: nothing runs it, and
        ``forgetless run --resume`` continues it."""
        unknown = set(where) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown index columns: {sorted(unknown)}")
        status = where.pop("status", None)
        clause = " AND ".join(f"{k} = ?" for k in where) or "1"
        with self._connect() as db:
            rows = db.execute(
                f"SELECT * FROM runs WHERE {clause} ORDER BY created, id", tuple(where.values())
            ).fetchall()
        rows = [_as_read(dict(r)) for r in rows]
        return rows if status is None else [r for r in rows if r["status"] == status]


def _identity(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def _as_read(row: dict[str, Any]) -> dict[str, Any]:
    if row["status"] == "running" and row.get("pid") and row.get("host") == socket.gethostname():
        try:
            os.kill(row["pid"], 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            row["status"] = "interrupted"
        except PermissionError:
            pass  # it exists, under another user
    return row
