"""How the run store writes and reads its files: atomically, with checksums, as untrusted data.

Every file is written to a temporary name in the same folder, flushed to disk (``fsync``), then
renamed over the old one, and the folder is flushed too: a crash at any moment leaves either
the old file or the new one, whole, never a mix. Every file carries its own checksum, so a
reader detects a file damaged after it was written (a bad disk, a partial copy, a stray
write), and reports it with the file's name instead of using it:

- JSON files (``config.json``, ``result.json``) hold a ``"checksum"`` field, the sha256 of the
  rest of the object in canonical form (keys sorted, no spaces);
- safetensors files hold the sha256 of their tensors (names, dtypes, shapes and bytes, plus
  the JSON skeleton of a checkpoint) in their metadata, under ``forgetless.sha256``.

Every write goes through :func:`forgetless.runs.faults.point` at each stage, which is where the
crash tests kill the process.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from forgetless.errors import DataError
from forgetless.json_file import loads_json
from forgetless.result import json_checksum
from forgetless.runs.faults import point

CHECKSUM_KEY = "checksum"
_TMP_SUFFIX = ".part"


def write_atomic(path: Path, data: bytes, label: str, keep_previous: Path | None = None) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one whole.

    ``keep_previous``: if ``path`` exists, it is renamed to this name just before the new file
    takes its place (a crash between the two renames leaves only the previous one, which a
    reader then uses)."""
    tmp = temporary_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        half = len(data) // 2
        _write_all(fd, data[:half])
        point(f"{label}: half written")
        _write_all(fd, data[half:])
        os.fsync(fd)
    finally:
        os.close(fd)
    point(f"{label}: written, not renamed")
    if keep_previous is not None and path.exists():
        os.replace(path, keep_previous)
        point(f"{label}: previous kept, new not renamed")
    os.replace(tmp, path)
    fsync_folder(path.parent)
    point(f"{label}: renamed")


def temporary_name(path: Path) -> Path:
    """Where :func:`write_atomic` writes ``path`` first (hidden, unique to this process)."""
    return path.with_name(f".{path.name}.{os.getpid()}{_TMP_SUFFIX}")


def remove_temporaries(folder: Path) -> None:
    """Delete temporary files a crashed writer left in ``folder`` (call with the run's lock)."""
    for leftover in folder.glob(f".*{_TMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename is durable only once its folder is)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open folders; its renames are durable on their own
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove(path: Path, label: str) -> None:
    """Delete ``path`` if it exists (a write point: deleting is a change on disk too)."""
    if path.exists():
        point(f"{label}: before delete")
        path.unlink(missing_ok=True)
        fsync_folder(path.parent)
        point(f"{label}: deleted")


# --- JSON ------------------------------------------------------------------------------------


def write_json(path: Path, data: Mapping[str, Any], label: str) -> None:
    """``data`` with its checksum as indented JSON, written atomically."""
    body = {k: v for k, v in data.items() if k != CHECKSUM_KEY}
    text = json.dumps({**body, CHECKSUM_KEY: json_checksum(body)}, indent=1) + "\n"
    write_atomic(path, text.encode(), label)


def read_json(path: Path, what: str, required: bool = True, fix: str = "") -> dict[str, Any]:
    """The object in the JSON file ``path``, its checksum verified (a file without one is
    accepted only if not ``required``: files written before checksums). Every problem is a
    DataError naming the file, saying what is wrong and ``fix`` (what to do)."""
    hint = f"; {fix}" if fix else ""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"the {what} {path} is missing{hint}") from None
    except OSError as err:
        raise DataError(f"cannot read the {what} {path}: {err.strerror or err}{hint}") from None
    try:
        data = loads_json(raw, path)
    except ValueError as err:  # ConfigError: not JSON, or nested absurdly deep
        raise DataError(f"the {what} is corrupt: {err}{hint}") from None
    if not isinstance(data, dict):
        raise DataError(f"the {what} {path} is corrupt: not a JSON object{hint}")
    stored = data.pop(CHECKSUM_KEY, None)
    if stored is None:
        if required:
            raise DataError(f"the {what} {path} has no checksum, so it cannot be trusted{hint}")
        return data
    if stored != json_checksum(data):
        raise DataError(
            f"the {what} {path} is corrupt: its content does not match its checksum (it was "
            f"changed or damaged after it was written){hint}"
        )
    return data


# --- tensors ---------------------------------------------------------------------------------


def tensor_digest(tensors: Mapping[str, torch.Tensor], skeleton: str = "") -> str:
    """``sha256:<hex>`` over ``skeleton`` and every tensor's name, dtype, shape and bytes: what
    a reader gets from the file, so any change to it changes the digest."""
    h = hashlib.sha256()
    h.update(skeleton.encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        h.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        if tensor.numel():
            h.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return "sha256:" + h.hexdigest()
