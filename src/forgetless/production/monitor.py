"""The monitor: every update and gate decision, recorded in the run store, and read back as each
slice's accuracy across model versions.

Records live in the run store's folder as one JSON file each, written atomically::

    STORE/production/<time>-<kind>-<version>.json

with ``kind`` (``update`` or ``gate``), ``version`` (the candidate's), ``baseline_version``,
``window`` (free text: the data window the decision covers, e.g. ``2024-06``), ``time`` (UTC),
``verdict``, and per slice its ``baseline_accuracy``, ``accuracy`` (the candidate's),
``examples``, ``change``, ``low``, ``high`` and ``verdict``. :func:`monitor` orders versions by
first appearance (a record's baseline first, if it has no record of its own), and flags a
version on a slice where the gate failed it, or where the slice fell more than ``max_drop``
points below the version it was compared with (its record's baseline: candidates made from
one deployed model are siblings, not a sequence).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from forgetless.errors import ConfigError, DataError
from forgetless.production.gate import GateResult

#: The store's sub-folder for production records.
FOLDER = "production"
KINDS = ("update", "gate")


def record(
    store: str | Path,
    kind: str,
    comparison: GateResult,
    version: str,
    baseline_version: str,
    window: str | None = None,
    details: dict[str, Any] | None = None,
) -> Path:
    """Write one decision into ``store`` (created if missing); returns the record's path.

    Args:
        kind: ``"update"`` or ``"gate"``.
        comparison: the gate's result (an update's ``.comparison``).
        version, baseline_version: names of the candidate and of the model it is compared
            with.
        window: the data window, free text.
        details: anything else worth keeping (the strategy, file names), plain JSON data.
    """
    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    for what, name in (("version", version), ("baseline version", baseline_version)):
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"the {what} must be a non-empty name, got {name!r}")
    now = datetime.now(timezone.utc)
    data = {
        "kind": kind,
        "version": version,
        "baseline_version": baseline_version,
        "window": window,
        "time": now.isoformat(),
        "verdict": comparison.verdict,
        "slices": {
            row.name: {
                "baseline_accuracy": row.baseline_accuracy,
                "accuracy": row.candidate_accuracy,
                "examples": row.examples,
                "change": row.change,
                "low": row.low,
                "high": row.high,
                "verdict": row.verdict,
            }
            for row in comparison.rows
        },
        "details": details or {},
    }
    folder = Path(store) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.+-]", "-", version)[:60]
    path = folder / f"{now:%Y%m%dT%H%M%S%f}-{kind}-{safe}.json"
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def records(store: str | Path) -> list[dict[str, Any]]:
    """Every record in ``store``, oldest first. A file that is not a readable record is a
    :class:`DataError` naming it."""
    folder = Path(store) / FOLDER
    if not folder.is_dir():
        raise ConfigError(
            f"no production records in {store} (record updates and gates with --store {store})"
        )
    out = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(f"the record {path} is not readable JSON: {err}") from None
        if not isinstance(data, dict) or not {"version", "slices", "time"} <= data.keys():
            raise DataError(f"the record {path} is not a production record")
        out.append(data)
    if not out:
        raise ConfigError(f"no production records in {folder}")
    return sorted(out, key=lambda r: r["time"])


@dataclass
class Monitor:
    """Each slice's accuracy across versions.

    Attributes:
        versions: model versions, in order.
        windows: each version's data window (or None).
        slices: slice names, in order of first appearance.
        accuracy: ``accuracy[slice][i]`` at version ``i`` (None where not measured).
        flags: ``flags[slice][i]`` True where the slice fell at version ``i``.
        reasons: ``reasons[slice][i]``: why it is flagged (``"gate failed"``, ``"-2.3 points"``).
        max_drop: the fall in points that flags a version.
    """

    versions: list[str]
    windows: list[str | None]
    slices: list[str]
    accuracy: dict[str, list[float | None]]
    flags: dict[str, list[bool]]
    reasons: dict[str, list[str]]
    max_drop: float
    records: int = 0
    decisions: list[dict[str, Any]] = field(default_factory=list)

    def flagged(self) -> list[tuple[str, str, str]]:
        """``(version, slice, reason)`` for every flag, version by version."""
        return [
            (version, name, self.reasons[name][i])
            for i, version in enumerate(self.versions)
            for name in self.slices
            if self.flags[name][i]
        ]

    def table(self) -> str:
        width = max(len("version"), *(len(v) for v in self.versions))
        cols = [max(7, len(n)) for n in self.slices]
        head = f"{'version':<{width}} {'window':<10} " + " ".join(
            f"{n:>{c}}" for n, c in zip(self.slices, cols, strict=True)
        )
        lines = [head]
        for i, version in enumerate(self.versions):
            cells = []
            for name, c in zip(self.slices, cols, strict=True):
                value = self.accuracy[name][i]
                text = "-" if value is None else f"{100 * value:.1f}"
                cells.append(f"{text + (' !' if self.flags[name][i] else ''):>{c}}")
            window = self.windows[i] or ""
            lines.append(f"{version:<{width}} {window:<10} " + " ".join(cells))
        flagged = self.flagged()
        lines.append(
            f"{len(flagged)} flag(s) ('!': the gate failed the slice, or it fell more than "
            f"{self.max_drop:g} points below the version it was compared with)"
        )
        for version in self.versions:
            mine = [(s, r) for v, s, r in flagged if v == version]
            if mine:
                lines.append(f"  {version}: " + ", ".join(f"{s} ({r})" for s, r in mine))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "versions": self.versions,
            "windows": self.windows,
            "slices": self.slices,
            "accuracy": self.accuracy,
            "flags": self.flags,
            "reasons": self.reasons,
            "max_drop": self.max_drop,
            "flagged": [list(f) for f in self.flagged()],
            "decisions": self.decisions,
        }


def monitor(store: str | Path, max_drop: float = 1.0) -> Monitor:
    """The accuracy of every slice across the versions recorded in ``store``."""
    rows = records(store)
    versions: list[str] = []
    windows: list[str | None] = []
    values: dict[str, dict[str, float]] = {}  # version -> slice -> accuracy
    fell: dict[str, dict[str, float | None]] = {}  # version -> slice -> drop (None: failed)
    slices: list[str] = []
    decisions = []
    for r in rows:
        for name in r["slices"]:
            if name not in slices:
                slices.append(name)
        base = r.get("baseline_version")
        if base and base not in values:
            versions.append(base)
            windows.append(None)
            values[base] = {n: s["baseline_accuracy"] for n, s in r["slices"].items()}
        version = r["version"]
        if version not in values:
            versions.append(version)
            windows.append(r.get("window"))
            values[version] = {}
        values[version].update({n: s["accuracy"] for n, s in r["slices"].items()})
        drops = fell.setdefault(version, {})
        for n, s in r["slices"].items():
            drop = 100 * (s["baseline_accuracy"] - s["accuracy"])
            if s.get("verdict") == "fail":
                drops[n] = None
            elif drop > max_drop:
                drops.setdefault(n, drop)
        decisions.append(
            {k: r.get(k) for k in ("time", "kind", "version", "baseline_version", "window",
                                   "verdict")}
        )  # fmt: skip
    accuracy = {n: [values[v].get(n) for v in versions] for n in slices}
    flags = {n: [False] * len(versions) for n in slices}
    reasons = {n: [""] * len(versions) for n in slices}
    for version, drops in fell.items():
        i = versions.index(version)
        for n, drop in drops.items():
            flags[n][i] = True
            reasons[n][i] = "the gate failed it" if drop is None else f"{-drop:+.1f} points"
    return Monitor(versions, windows, slices, accuracy, flags, reasons, float(max_drop),
                   len(rows), decisions)  # fmt: skip
