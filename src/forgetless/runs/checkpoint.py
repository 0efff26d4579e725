"""A run's state after a task, in one safetensors file: tensors plus a JSON skeleton.

Nothing is pickled: the file holds raw tensors and, in its metadata, JSON that says where each
tensor goes (see :mod:`forgetless.state`, which rebuilds only allow-listed classes). The
metadata also holds a sha256 of the skeleton and the tensors, checked on every load, so a
damaged file is refused with its name rather than continued with garbage; writes are atomic
(see :mod:`forgetless.runs.files`), so a crash mid-write leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from forgetless.engine import Snapshot
from forgetless.errors import ConfigError, DataError
from forgetless.json_file import loads_json
from forgetless.runs.files import tensor_digest, write_atomic
from forgetless.state import check_restorable, flatten, pack, unflatten, unpack

_KEY = "forgetless.snapshot"
_DIGEST = "forgetless.sha256"
#: 2: the metadata holds a sha256 of the content, and objects are named from the allow-list of
#: :mod:`forgetless.state`. Format 1 files had neither and are refused.
FORMAT_VERSION = 2


def snapshot_bytes(snapshot: Snapshot, store: Mapping[str, Any] | None = None) -> bytes:
    """The safetensors file of ``snapshot``; ``store`` is extra plain data the run store keeps
    with it (where its events file ended)."""
    data = {
        "version": FORMAT_VERSION,
        "task": snapshot.task,
        "step": snapshot.step,
        "model": pack(dict(snapshot.model), "model"),
        "optimizer": pack(snapshot.optimizer, "optimizer"),
        "generator": snapshot.generator,
        "strategies": snapshot.strategies,  # already plain data
        "progress": pack(snapshot.progress, "progress"),
        "store": dict(store or {}),
    }
    skeleton, tensors = flatten(data)
    text = json.dumps(skeleton)
    metadata = {_KEY: text, _DIGEST: tensor_digest(tensors, text)}
    return save_bytes(tensors, metadata=metadata)


def save_snapshot(
    snapshot: Snapshot,
    path: str | Path,
    store: Mapping[str, Any] | None = None,
    keep_previous: Path | None = None,
) -> Path:
    """Write ``snapshot`` to ``path`` atomically (``keep_previous``: see
    :func:`~forgetless.runs.files.write_atomic`)."""
    path = Path(path)
    write_atomic(path, snapshot_bytes(snapshot, store), "resume checkpoint", keep_previous)
    return path


def save_weights(state_dict: Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """A model's weights alone, as a plain safetensors file (readable by any tool), with their
    sha256 in the metadata (see :func:`load_weights`)."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    data = save_bytes(tensors, metadata={_DIGEST: tensor_digest(tensors)})
    write_atomic(path, data, "task weights")
    return path


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights in a file of :func:`save_weights`, their checksum verified."""
    path = Path(path)
    metadata, tensors = _read(path)
    if _DIGEST in metadata and metadata[_DIGEST] != tensor_digest(tensors):
        raise DataError(
            f"the weights file {path} is corrupt: its tensors do not match its checksum"
        )
    return tensors


def load_snapshot(path: str | Path) -> Snapshot:
    """Read a snapshot written by :func:`save_snapshot` (see :func:`read_checkpoint`)."""
    return read_checkpoint(path)[0]


def read_checkpoint(path: str | Path) -> tuple[Snapshot, dict[str, Any]]:
    """The snapshot in ``path`` and the run store's data kept with it.

    Raises:
        DataError: the file is unreadable, damaged (its content does not match its checksum),
            not a forgetless checkpoint of this format, or malformed; the message names it.
    """
    path = Path(path)
    metadata, tensors = _read(path)
    if _KEY not in metadata:
        raise DataError(f"{path} is not a forgetless checkpoint")
    text = metadata[_KEY]
    if metadata.get(_DIGEST) != tensor_digest(tensors, text):
        raise DataError(
            f"the checkpoint {path} is corrupt: its content does not match its checksum (it "
            f"was damaged after it was written)"
        )
    try:
        skeleton = loads_json(text, f"the metadata of {path}")
        if not isinstance(skeleton, dict):
            raise ConfigError(f"{path}: the checkpoint's metadata is not a JSON object")
        version = skeleton.get("version")
        if version != FORMAT_VERSION:
            raise ConfigError(
                f"the checkpoint {path} has format {version}, not {FORMAT_VERSION} (written by "
                f"an older forgetless, without checksums)"
            )
        data = unflatten(skeleton, tensors, str(path))
        snapshot = Snapshot(
            task=_int(data, "task", path),
            step=_int(data, "step", path),
            model=_tensors(unpack(data["model"], where=str(path)), "model", path),
            optimizer=unpack(data["optimizer"], where=str(path)),
            generator=data["generator"],
            strategies=data["strategies"],
            progress=unpack(data["progress"], where=str(path)),
        )
        check_restorable(data["strategies"], str(path))  # refuse crafted objects now
        store = data.get("store", {})
    except (KeyError, TypeError) as err:
        raise DataError(f"the checkpoint {path} is malformed ({err!r})") from None
    except ConfigError as err:
        raise DataError(f"{err}") from None
    if not isinstance(snapshot.generator, torch.Tensor) or not isinstance(store, dict):
        raise DataError(f"the checkpoint {path} is malformed")
    return snapshot, store


def checkpoint_task(path: str | Path) -> int | None:
    """The index of the last task ``path`` holds, read from its metadata alone (cheap: the
    tensors are not read); ``None`` if it is not a readable checkpoint."""
    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get(_KEY)
        task = loads_json(text, path).get("task") if text else None
    except (OSError, SafetensorError, ValueError, AttributeError):
        return None
    return task if isinstance(task, int) and not isinstance(task, bool) else None


def _read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The metadata and tensors of the safetensors file ``path``, read once."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"no checkpoint at {path}") from None
    except OSError as err:
        raise DataError(f"cannot read the checkpoint {path}: {err.strerror or err}") from None
    try:
        # The format: an 8-byte little-endian header length, the JSON header, then the data.
        size = int.from_bytes(raw[:8], "little")
        if len(raw) < 8 or size > len(raw) - 8:
            raise ValueError("the header is longer than the file")
        header = loads_json(raw[8 : 8 + size], path)
        metadata = header.get("__metadata__") or {} if isinstance(header, dict) else None
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise ValueError("its metadata is not a table of strings")
        tensors = load_bytes(raw)
    except Exception as err:  # safetensors raises its own error types, and ValueError
        raise DataError(
            f"the checkpoint {path} is corrupt: it cannot be read as safetensors ({err})"
        ) from None
    return metadata, tensors


def _int(data: dict, key: str, path: Path) -> int:
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DataError(f"the checkpoint {path} is malformed: {key} is {value!r}")
    return value


def _tensors(value: Any, key: str, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(value, dict) or not all(isinstance(v, torch.Tensor) for v in value.values()):
        raise DataError(f"the checkpoint {path} is malformed: {key} is not tensors")
    return value
