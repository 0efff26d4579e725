"""The user's model: a factory they name, plus weights read as plain tensors, never unpickled.

A factory spec is ``path/to/file.py:make_model`` or ``package.module:make_model``: a callable
that takes no arguments and returns the ``nn.Module`` (untrained is fine: the weights come from
the file). Naming one runs the user's code, as importing it would: that is what they ask for.
The weights file never runs code: safetensors, or a ``torch.save`` state dict read with
``torch.load(..., weights_only=True)``, which refuses any pickled object.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import pickle
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from forgetless.errors import ConfigError, DataError

#: Suffixes written as safetensors; any other is written with ``torch.save`` (tensors only).
SAFETENSORS_SUFFIXES = (".safetensors",)


def load_factory(spec: str) -> Callable[[], nn.Module]:
    """The callable named by ``spec`` (``file.py:name`` or ``package.module:name``).

    Raises:
        ConfigError: a spec without ``:NAME``, a missing file or module, an error raised while
            importing it, or a name that is missing or not callable.
    """
    where, colon, name = str(spec).rpartition(":")
    if not colon or not where or not name.isidentifier():
        raise ConfigError(
            f"unknown factory {spec!r}: expected path/to/file.py:make_model or "
            "package.module:make_model (a function returning the nn.Module)"
        )
    if where.endswith(".py") or os.sep in where or "/" in where:
        module = _import_file(Path(where), spec)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as err:
            raise ConfigError(f"unknown factory {spec!r}: cannot import {where}: {err}") from None
        except Exception as err:  # the user's module failed while it was imported
            raise ConfigError(
                f"factory {spec!r}: importing {where} raised {type(err).__name__}: {err}"
            ) from None
    factory = getattr(module, name, None)
    if factory is None:
        raise ConfigError(f"unknown factory {spec!r}: {where} defines no {name!r}")
    if not callable(factory):
        raise ConfigError(f"factory {spec!r} is a {type(factory).__name__}, not a function")
    return factory


def _import_file(path: Path, spec: str):
    if not path.is_file():
        raise ConfigError(f"unknown factory {spec!r}: no file {path}")
    # A name of its own per file, so two factories named model.py do not collide.
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    module_name = f"forgetless_user_factory_{digest}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ConfigError(f"unknown factory {spec!r}: {path} cannot be imported as Python")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module  # dataclasses and typing look the module up by name
    try:
        loader_spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[module_name]
        raise ConfigError(
            f"factory {spec!r}: running {path} raised {type(err).__name__}: {err}"
        ) from None
    return module


def build(spec: str) -> nn.Module:
    """Call the factory ``spec`` names; its result must be an ``nn.Module``."""
    factory = load_factory(spec)
    try:
        model = factory()
    except Exception as err:
        raise ConfigError(f"factory {spec!r} raised {type(err).__name__}: {err}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"factory {spec!r} returned a {type(model).__name__}, not a torch nn.Module"
        )
    return model


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``path``: safetensors, or a ``torch.save`` file of tensors read with
    ``weights_only=True`` (a ``{"state_dict": {...}}`` checkpoint is unwrapped). Nothing in the
    file is executed: a pickled object is refused.

    Raises:
        ConfigError: no such file.
        DataError: the file is corrupt, holds pickled objects, or holds anything but tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no weights file {path}")
    if path.suffix in SAFETENSORS_SUFFIXES or _looks_like_safetensors(path):
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as err:  # safetensors raises its own error types
            raise DataError(f"cannot read the weights {path} as safetensors: {err}") from None
    else:
        try:
            with warnings.catch_warnings():  # torch's notes on pickle protocols: ours is clearer
                warnings.simplefilter("ignore", UserWarning)
                state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise DataError(
                f"the weights {path} hold pickled objects, which forgetless never unpickles "
                f"({first[:160]}); save a plain state dict: torch.save(model.state_dict(), "
                "path) or safetensors"
            ) from None
        except Exception as err:
            raise DataError(
                f"cannot read the weights {path} ({type(err).__name__}: {err}); expected "
                "safetensors or a torch.save state dict"
            ) from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not state:
        raise DataError(f"the weights {path} hold no state dict (a mapping of names to tensors)")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise DataError(
            f"the weights {path} hold entries that are not tensors: {', '.join(map(str, bad[:5]))}"
        )
    return dict(state)


def _looks_like_safetensors(path: Path) -> bool:
    """A safetensors file starts with an 8-byte header length, then the JSON header."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def put_weights(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str | Path, what: str = "model"
) -> nn.Module:
    """Load ``state`` into ``model`` strictly; a mismatch is one :class:`ConfigError` that names
    the missing and unexpected entries and the first shape that differs."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} is {list(state[k].shape)} in the file, {list(v.shape)} in the model"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected {_names(unexpected)}")
    if shapes:
        problems.append(shapes[0] + (f" (and {len(shapes) - 1} more)" if len(shapes) > 1 else ""))
    if problems:
        raise ConfigError(
            f"the weights {source} do not fit the {what}: {'; '.join(problems)}; give the "
            "factory that built the model these weights were saved from"
        )
    model.load_state_dict(state)
    return model


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:4])
    return shown + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")


def load_model(spec: str, weights: str | Path | None = None) -> nn.Module:
    """The model ``spec``'s factory builds, with the ``weights`` file loaded into it (strictly),
    in eval mode."""
    model = build(spec)
    if weights is not None:
        put_weights(model, load_weights(weights), weights, f"model of {spec}")
    return model.eval()


def save_weights(model: nn.Module | Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """Write a model's state dict to ``path``, atomically: safetensors for ``.safetensors``,
    else ``torch.save`` of plain tensors (readable with ``weights_only=True``)."""
    state = model.state_dict() if isinstance(model, nn.Module) else model
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in SAFETENSORS_SUFFIXES:
        from forgetless.runs.checkpoint import save_weights as save_safetensors

        return save_safetensors(state, path)
    tmp = path.with_name(path.name + ".part")
    torch.save({k: v.detach().cpu().clone() for k, v in state.items()}, tmp)
    os.replace(tmp, path)
    return path
