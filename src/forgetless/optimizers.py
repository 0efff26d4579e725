"""Build and step torch optimisers without importing ``torch._dynamo``.

Every ``torch.optim`` optimiser imports ``torch._dynamo`` (the ``torch.compile`` frontend, about
1 s of imports: sympy, ``torch.fx``, inductor's configuration) the first time it adds a parameter
group (``add_param_group`` is wrapped by ``torch._disable_dynamo``), clears gradients
(``zero_grad``, the same wrapper) or steps (``step`` is wrapped by a function that imports it to
place a graph break); ``state_dict`` and ``load_state_dict`` (a run store's checkpoint after each
task, and resuming from one) carry the same ``torch._disable_dynamo`` wrapper. Under plain eager
execution those wrappers do nothing else: they exist so that ``torch.compile`` treats the
optimiser well. The engine never compiles, so for a run of a
few seconds that import is a quarter of what the user waits for.

These functions call the same methods with those wrappers peeled off: the same arithmetic, in
the same order, on the same optimiser class (``type(opt) is torch.optim.SGD`` still holds).
Where the wrappers are not the ones expected (another torch version), where a hook is
registered (step hooks, or a learning-rate scheduler, which patches ``step`` on the instance),
or where ``torch._dynamo`` is loaded anyway (someone compiles), they call the public methods.
"""

from __future__ import annotations

import functools
import sys
import types
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim import optimizer as optimizer_module


def _peeled(method: Any, wrappers: tuple[str, ...]) -> Callable[..., Any] | None:
    """``method`` with the named wrapper functions (outermost first) peeled off through their
    ``__wrapped__``; ``None`` when the chain is not exactly that."""
    fn = method
    for name in wrappers:
        code = getattr(fn, "__code__", None)
        if code is None or code.co_name != name or not hasattr(fn, "__wrapped__"):
            return None
        fn = fn.__wrapped__
    return fn


# torch._disable_dynamo's wrapper is called ``inner``; Optimizer.step is wrapped by
# profile_hook_step's ``wrapper`` around _use_grad_for_differentiable's ``_use_grad``.
_ADD_PARAM_GROUP = _peeled(Optimizer.add_param_group, ("inner",))
_STATE_METHODS = {
    name: _peeled(getattr(Optimizer, name), ("inner",))
    for name in ("state_dict", "load_state_dict")
}
_STEP_WRAPPERS = ("wrapper", "_use_grad")


def _dynamo_loaded() -> bool:
    return "torch._dynamo" in sys.modules


def build_optimizer(cls: type[Optimizer], params: Iterable[Any], **options: Any) -> Optimizer:
    """``cls(params, **options)``, a ``torch.optim`` class, built without the dynamo import.

    ``Optimizer.__init__`` calls ``self.add_param_group``; an instance attribute of that name,
    the unwrapped method, is found before the class's for that one call, then removed.
    """
    if _ADD_PARAM_GROUP is None or _dynamo_loaded():
        return cls(params, **options)
    optimizer = cls.__new__(cls)
    optimizer.add_param_group = types.MethodType(_ADD_PARAM_GROUP, optimizer)
    try:
        cls.__init__(optimizer, params, **options)
    finally:
        optimizer.__dict__.pop("add_param_group", None)
    for name, raw in _STATE_METHODS.items():
        # Instance attributes, as add_param_group's above, kept: a checkpoint reads the state
        # after every task. Where the class has its own method, that one is left to run.
        if raw is not None and getattr(cls, name) is getattr(Optimizer, name):
            setattr(optimizer, name, types.MethodType(_state_method(name, raw), optimizer))
    return optimizer


def _state_method(name: str, raw: Callable[..., Any]) -> Callable[..., Any]:
    """``Optimizer.<name>`` without its dynamo wrapper, or with it once dynamo is loaded."""
    public = getattr(Optimizer, name)

    def method(self: Optimizer, *args: Any, **kwargs: Any) -> Any:
        return (public if _dynamo_loaded() else raw)(self, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = public.__doc__
    return method


def clear_grads(optimizer: Optimizer) -> None:
    """``optimizer.zero_grad(set_to_none=True)``: every parameter's ``.grad`` set to ``None``."""
    if type(optimizer).zero_grad is not Optimizer.zero_grad or _dynamo_loaded():
        optimizer.zero_grad(set_to_none=True)
        return
    for group in optimizer.param_groups:
        for param in group["params"]:
            param.grad = None


def take_step(optimizer: Optimizer) -> None:
    """``optimizer.step()``: the class's own update, with no step hooks to call."""
    raw = _raw_step(type(optimizer).step)
    if (
        raw is None
        or _dynamo_loaded()
        or "step" in vars(optimizer)  # patched on the instance (an LR scheduler counts calls)
        or optimizer._optimizer_step_pre_hooks
        or optimizer._optimizer_step_post_hooks
        or _global_step_hooks()
        or optimizer.defaults.get("differentiable", False)
    ):
        optimizer.step()
        return
    with torch.no_grad():  # what _use_grad does for a non-differentiable optimiser
        raw(optimizer)


@functools.cache
def _raw_step(step: Callable[..., Any]) -> Callable[..., Any] | None:
    """A class's ``step`` without its wrappers, found once per function (this runs every step;
    keyed by the function, so a class whose ``step`` is replaced later is looked at again)."""
    return _peeled(step, _STEP_WRAPPERS)


def _global_step_hooks() -> bool:
    return bool(
        optimizer_module._global_optimizer_pre_hooks
        or optimizer_module._global_optimizer_post_hooks
    )
