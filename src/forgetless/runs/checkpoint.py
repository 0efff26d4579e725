"""A run's state after a task, in one safetensors file: tensors plus a JSON skeleton.

Nothing is pickled: the file holds raw tensors and, in its metadata, JSON that says where each
tensor goes (see :mod:`forgetless.state`). Writes go to a temporary file that is then renamed,
so a crash mid-write leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from forgetless.engine import Snapshot
from forgetless.errors import ConfigError
from forgetless.state import flatten, pack, unflatten, unpack

_KEY = "forgetless.snapshot"
FORMAT_VERSION = 1


def save_snapshot(snapshot: Snapshot, path: str | Path) -> Path:
    """Write ``snapshot`` to ``path`` atomically."""
    path = Path(path)
    data = {
        "version": FORMAT_VERSION,
        "task": snapshot.task,
        "step": snapshot.step,
        "model": pack(dict(snapshot.model), "model"),
        "optimizer": pack(snapshot.optimizer, "optimizer"),
        "generator": snapshot.generator,
        "strategies": snapshot.strategies,  # already plain data
        "progress": pack(snapshot.progress, "progress"),
    }
    skeleton, tensors = flatten(data)
    tmp = path.with_name(path.name + ".part")
    save_file(tensors, str(tmp), metadata={_KEY: json.dumps(skeleton)})
    os.replace(tmp, path)
    return path


def save_weights(state_dict: Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """A model's weights alone, as a plain safetensors file (readable by any tool)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    save_file(tensors, str(tmp))
    os.replace(tmp, path)
    return path


def load_snapshot(path: str | Path) -> Snapshot:
    """Read a snapshot written by :func:`save_snapshot`."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except Exception as err:  # safetensors raises its own error types
        raise ConfigError(f"cannot read checkpoint {path}: {err}") from err
    if _KEY not in metadata:
        raise ConfigError(f"{path} is not a forgetless checkpoint")
    data = unflatten(json.loads(metadata[_KEY]), tensors)
    if data.get("version") != FORMAT_VERSION:
        raise ConfigError(
            f"checkpoint {path} has format {data.get('version')}, not {FORMAT_VERSION}"
        )
    return Snapshot(
        task=data["task"],
        step=data["step"],
        model=unpack(data["model"]),
        optimizer=unpack(data["optimizer"]),
        generator=data["generator"],
        strategies=data["strategies"],
        progress=unpack(data["progress"]),
    )
