"""Objects' state as plain nested data (tensors, numbers, strings, lists), and back.

Checkpoints must hold a strategy's importances, buffers and old models without pickling (a
pickle runs code when loaded). :func:`pack` turns a value into nested ``dict``/``list`` of
tensors and JSON scalars, with small markers for what JSON lacks (tuples, non-string keys,
modules, forgetless objects); :func:`flatten` then splits that into a JSON skeleton and a flat
``{name: tensor}`` map, which is what a safetensors file stores.

Objects are rebuilt only from an explicit allow-list: a class opts in with the
:func:`restorable` decorator under a plain name (``"MemoryBuffer"``), and a checkpoint names
the class by that name alone. :func:`unpack` looks the name up in the registry, never imports a
module or follows an attribute path named by the file, and sets the saved attributes on an
instance made without running ``__init__``. A name off the list is refused with a
:class:`~forgetless.errors.ConfigError` before anything is built, so a crafted checkpoint can
only produce tensors, numbers, strings, containers, copies of the learner's model, and
instances of the listed classes.

Nesting is bounded (:data:`MAX_DEPTH` levels) in every direction, so deeply nested data is a
clear error rather than a ``RecursionError``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from forgetless.errors import ConfigError

_SCALARS = (type(None), bool, int, float, str)

#: The deepest nesting of containers that pack, unpack, flatten and unflatten accept. Real
#: strategy state nests a handful of levels (a dict of lists of tuples of tensors).
MAX_DEPTH = 64

#: Plain name -> class, for every class whose instances a checkpoint may rebuild.
_RESTORABLE: dict[str, type] = {}


def restorable(name: str):
    """Class decorator: allow checkpoints to rebuild instances of the class, named ``name``.

    The class's instance attributes are what is saved (``vars(obj)``); on loading, an instance
    is made with ``cls.__new__`` and those attributes set, so ``__init__`` must not hold logic
    the attributes do not capture. Example::

        @restorable("MemoryBuffer")
        class MemoryBuffer: ...
    """

    def register(cls: type) -> type:
        if not name.isidentifier():
            raise ValueError(f"restorable names are plain identifiers, got {name!r}")
        known = _RESTORABLE.get(name)
        if known is not None and known is not cls:
            raise ValueError(f"restorable name {name!r} is taken by {known.__qualname__}")
        _RESTORABLE[name] = cls
        cls._restorable_name = name
        return cls

    return register


def _load_builtin_classes() -> None:
    # The built-in restorable classes live in these modules; importing them registers them.
    # The module names are fixed here: nothing a file says chooses what is imported.
    import forgetless.buffer
    import forgetless.strategies.quadratic  # noqa: F401  (the package imports its classes lazily)


def _restorable_class(name: Any, where: str) -> type:
    if not isinstance(name, str):
        raise ConfigError(f"{where}: an object's class name must be a string, got {name!r}")
    if name not in _RESTORABLE:
        _load_builtin_classes()
    cls = _RESTORABLE.get(name)
    if cls is None:
        raise ConfigError(
            f"{where}: refusing to rebuild an object of class {name!r}: not a restorable "
            f"forgetless class (the allow-list: {', '.join(sorted(_RESTORABLE))}); the "
            "checkpoint is corrupt or was crafted, do not use it"
        )
    return cls


def check_restorable(data: Any, where: str = "checkpoint") -> None:
    """Raise the ConfigError :func:`unpack` would for any object in packed ``data`` whose class
    is off the allow-list, or for nesting deeper than :data:`MAX_DEPTH`, building nothing (a
    checkpoint is checked whole before any of it is used)."""
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _too_deep(where)
        if isinstance(value, dict):
            if "__object__" in value:
                _restorable_class(value["__object__"], where)
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def _too_deep(where: str) -> ConfigError:
    return ConfigError(
        f"{where}: nested more than {MAX_DEPTH} levels deep; forgetless state is never "
        "that deep, so the data is corrupt or crafted"
    )


def pack(value: Any, where: str = "state", _depth: int = 0) -> Any:
    """``value`` as nested plain data; ``where`` names it in errors."""
    if _depth > MAX_DEPTH:
        raise _too_deep(where)
    depth = _depth + 1
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, list):
        return [pack(v, f"{where}[{i}]", depth) for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {"__tuple__": [pack(v, f"{where}[{i}]", depth) for i, v in enumerate(value)]}
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, (str, int)):
                raise ConfigError(f"cannot save {where}: key {key!r} is not a string or int")
        return {"__dict__": [[k, pack(v, f"{where}[{k!r}]", depth)] for k, v in value.items()]}
    if isinstance(value, torch.device):
        return {"__device__": str(value)}
    if isinstance(value, nn.Module):
        return {
            "__module__": {k: v.detach() for k, v in value.state_dict().items()},
            "training": value.training,
            "frozen": not any(p.requires_grad for p in value.parameters()),
        }
    cls = type(value)
    name = cls.__dict__.get("_restorable_name")  # set on the class itself, not inherited
    if name is not None and _RESTORABLE.get(name) is cls:
        return {"__object__": name, "vars": pack(vars(value), f"{where}.{name}", depth)}
    raise ConfigError(
        f"cannot save {where}: values of type {cls.__name__} are not supported (a class "
        "whose instances a checkpoint holds must be registered with @forgetless.state."
        "restorable)"
    )


def unpack(
    data: Any,
    template: nn.Module | None = None,
    device: torch.device | None = None,
    where: str = "checkpoint",
    _depth: int = 0,
) -> Any:
    """The inverse of :func:`pack`. Modules are rebuilt as copies of ``template`` (the learner's
    model: strategies keep copies of it) with the saved weights; tensors go to ``device``.

    Anything malformed (a marker with the wrong shape, a class off the allow-list, nesting
    deeper than :data:`MAX_DEPTH`) is a :class:`ConfigError` naming ``where``."""
    if _depth > MAX_DEPTH:
        raise _too_deep(where)
    depth = _depth + 1
    if isinstance(data, torch.Tensor):
        return data if device is None else data.to(device)
    if isinstance(data, list):
        return [unpack(v, template, device, where, depth) for v in data]
    if isinstance(data, _SCALARS):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: unexpected value of type {type(data).__name__}")
    if "__tuple__" in data:
        items = _marker(data, "__tuple__", list, where)
        return tuple(unpack(v, template, device, where, depth) for v in items)
    if "__dict__" in data:
        out = {}
        for pair in _marker(data, "__dict__", list, where):
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], (str, int))):
                raise ConfigError(f"{where}: a dict entry must be a [key, value] pair")
            out[pair[0]] = unpack(pair[1], template, device, where, depth)
        return out
    if "__device__" in data:
        name = _marker(data, "__device__", str, where)
        if device is not None:
            return device
        try:
            return torch.device(name)
        except (RuntimeError, ValueError) as err:
            raise ConfigError(f"{where}: not a device name: {name!r}") from err
    if "__module__" in data:
        if template is None:
            raise ConfigError("cannot restore a saved model copy without the learner's model")
        weights = _marker(data, "__module__", dict, where)
        if not all(isinstance(v, torch.Tensor) for v in weights.values()):
            raise ConfigError(f"{where}: a saved model copy must hold tensors only")
        module = copy.deepcopy(template)
        try:
            module.load_state_dict(unpack(weights, None, device, where, depth))
        except RuntimeError as err:
            raise ConfigError(
                f"{where}: the saved model copy does not fit the model: {err}"
            ) from None
        module.train(bool(data.get("training", True)))
        if data.get("frozen"):
            module.requires_grad_(False)
        return module
    if "__object__" in data:
        cls = _restorable_class(data["__object__"], where)
        attributes = unpack(data.get("vars", {"__dict__": []}), template, device, where, depth)
        if not isinstance(attributes, dict) or not all(
            isinstance(k, str) and k.isidentifier() and not k.startswith("__") for k in attributes
        ):
            raise ConfigError(f"{where}: the attributes of a {cls.__name__} must be plain names")
        obj = cls.__new__(cls)
        obj.__dict__.update(attributes)
        return obj
    return {k: unpack(v, template, device, where, depth) for k, v in data.items()}


def _marker(data: dict, key: str, kind: type, where: str) -> Any:
    value = data[key]
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: {key} must hold a {kind.__name__}, got {type(value).__name__}")
    return value


def flatten(data: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split packed data into a JSON-able skeleton and ``{name: tensor}`` (contiguous copies
    that share no memory, as safetensors requires)."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise _too_deep("state")
        if isinstance(value, torch.Tensor):
            name = str(len(tensors))
            tensors[name] = value.detach().cpu().contiguous().clone()
            return {"__tensor__": name}
        if isinstance(value, list):
            return [walk(v, depth + 1) for v in value]
        if isinstance(value, dict):
            return {k: walk(v, depth + 1) for k, v in value.items()}
        return value

    return walk(data, 0), tensors


def unflatten(
    skeleton: Any, tensors: dict[str, torch.Tensor], where: str = "checkpoint", _depth: int = 0
) -> Any:
    """The inverse of :func:`flatten`; a reference to a missing tensor is a ConfigError."""
    if _depth > MAX_DEPTH:
        raise _too_deep(where)
    if isinstance(skeleton, list):
        return [unflatten(v, tensors, where, _depth + 1) for v in skeleton]
    if isinstance(skeleton, dict):
        if set(skeleton) == {"__tensor__"}:
            name = skeleton["__tensor__"]
            if not isinstance(name, str) or name not in tensors:
                raise ConfigError(f"{where}: refers to a tensor {name!r} the file does not hold")
            return tensors[name]
        return {k: unflatten(v, tensors, where, _depth + 1) for k, v in skeleton.items()}
    return skeleton
