"""Objects' state as plain nested data (tensors, numbers, strings, lists), and back.

Checkpoints must hold a strategy's importances, buffers and old models without pickling (a
pickle runs code when loaded). :func:`pack` turns a value into nested ``dict``/``list`` of
tensors and JSON scalars, with small markers for what JSON lacks (tuples, non-string keys,
modules, forgetless objects); :func:`flatten` then splits that into a JSON skeleton and a flat
``{name: tensor}`` map, which is what a safetensors file stores. Only classes defined in
forgetless are rebuilt, by setting their attributes (``__init__`` is not run), so a checkpoint
cannot make the loader run anything else.
"""

from __future__ import annotations

import copy
import importlib
from typing import Any

import torch
from torch import nn

from forgetless.errors import ConfigError

_SCALARS = (type(None), bool, int, float, str)


def pack(value: Any, where: str = "state") -> Any:
    """``value`` as nested plain data; ``where`` names it in errors."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, list):
        return [pack(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {"__tuple__": [pack(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, (str, int)):
                raise ConfigError(f"cannot save {where}: key {key!r} is not a string or int")
        return {"__dict__": [[k, pack(v, f"{where}[{k!r}]")] for k, v in value.items()]}
    if isinstance(value, torch.device):
        return {"__device__": str(value)}
    if isinstance(value, nn.Module):
        return {
            "__module__": {k: v.detach() for k, v in value.state_dict().items()},
            "training": value.training,
            "frozen": not any(p.requires_grad for p in value.parameters()),
        }
    cls = type(value)
    if cls.__module__.startswith("forgetless.") and hasattr(value, "__dict__"):
        return {
            "__object__": f"{cls.__module__}:{cls.__qualname__}",
            "vars": pack(vars(value), f"{where}.{cls.__name__}"),
        }
    raise ConfigError(f"cannot save {where}: values of type {cls.__name__} are not supported")


def unpack(data: Any, template: nn.Module | None = None, device: torch.device | None = None) -> Any:
    """The inverse of :func:`pack`. Modules are rebuilt as copies of ``template`` (the learner's
    model: strategies keep copies of it) with the saved weights; tensors go to ``device``."""
    if isinstance(data, torch.Tensor):
        return data if device is None else data.to(device)
    if isinstance(data, list):
        return [unpack(v, template, device) for v in data]
    if not isinstance(data, dict):
        return data
    if "__tuple__" in data:
        return tuple(unpack(v, template, device) for v in data["__tuple__"])
    if "__dict__" in data:
        return {k: unpack(v, template, device) for k, v in data["__dict__"]}
    if "__device__" in data:
        return torch.device(data["__device__"]) if device is None else device
    if "__module__" in data:
        if template is None:
            raise ConfigError("cannot restore a saved model copy without the learner's model")
        module = copy.deepcopy(template)
        module.load_state_dict(unpack(data["__module__"], None, device))
        module.train(data["training"])
        if data["frozen"]:
            module.requires_grad_(False)
        return module
    if "__object__" in data:
        module_name, _, qualname = data["__object__"].partition(":")
        if not module_name.startswith("forgetless."):
            raise ConfigError(f"refusing to rebuild {data['__object__']!r}: not a forgetless class")
        cls: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        obj = cls.__new__(cls)
        obj.__dict__.update(unpack(data["vars"], template, device))
        return obj
    return {k: unpack(v, template, device) for k, v in data.items()}


def flatten(data: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split packed data into a JSON-able skeleton and ``{name: tensor}`` (contiguous copies
    that share no memory, as safetensors requires)."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            name = str(len(tensors))
            tensors[name] = value.detach().cpu().contiguous().clone()
            return {"__tensor__": name}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value

    return walk(data), tensors


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`flatten`."""
    if isinstance(skeleton, list):
        return [unflatten(v, tensors) for v in skeleton]
    if isinstance(skeleton, dict):
        if set(skeleton) == {"__tensor__"}:
            return tensors[skeleton["__tensor__"]]
        return {k: unflatten(v, tensors) for k, v in skeleton.items()}
    return skeleton
