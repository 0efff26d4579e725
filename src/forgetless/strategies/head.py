"""The frozen-backbone baseline: after the first task only the output layer trains."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from forgetless.errors import ConfigError
from forgetless.learner import Learner
from forgetless.scenarios.stream import Task
from forgetless.state import unpack
from forgetless.strategies.base import Strategy


class Head(Strategy):
    """Linear probing in a stream: the first task trains the whole model (or the model arrives
    trained), then the backbone is frozen and only the output layer trains (the "linear
    probe" of transfer learning; Kumar et al. 2022, "Fine-Tuning can Distort Pretrained
    Features and Underperform Out-of-Distribution", arXiv:2202.10054, compare it with full
    fine-tuning).

    The baseline every adapter must sit beside: it keeps the first task's features exactly
    (the backbone's weights do not move), and learns a new task only as far as those features
    allow; full fine-tuning (``finetune``) is the other end. Under task-incremental learning
    the output layer's units of each task are that task's head (the engine masks the others,
    so an earlier task's rows receive no gradient); under domain- or class-incremental
    learning the one head is shared, and moving it is all the forgetting there can be.

    Args:
        layer: the output layer's module name; default the model's output embeddings for a
            Hugging Face model (tied to the input embeddings in GPT-2: they then train too),
            else the last ``nn.Linear`` (``gpt``'s ``head``, the MLP's and CNN's last layer).
    """

    name = "head"

    def __init__(self, layer: str | None = None):
        self.layer = layer
        self.frozen_from = -1  # the first task trained with the backbone frozen

    def change_model(self, learner: Learner, task: Task) -> None:
        if learner.task_index == 0:
            return
        if self.frozen_from < 0:
            self.frozen_from = learner.task_index
        self._freeze(learner.model)

    def rebuild(self, learner: Learner, state: Any) -> None:
        self.frozen_from = int(unpack(state)["frozen_from"])
        if self.frozen_from >= 0:
            self._freeze(learner.model)

    def _freeze(self, model: nn.Module) -> None:
        head = {id(p) for p in head_layer(model, self.layer).parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in head)

    def task_weights(self, learner: Learner) -> dict[str, torch.Tensor] | None:
        """After a task with the backbone frozen, only the output layer's tensors."""
        if self.frozen_from < 0:
            return None
        name = head_name(learner.model, self.layer)
        return {k: v for k, v in learner.model.state_dict().items() if k.startswith(f"{name}.")}

    def report(self, learner: Learner) -> dict[str, Any] | None:
        if self.frozen_from < 0:
            return None
        layer = head_layer(learner.model, self.layer)
        return {
            "frozen_from_task": self.frozen_from,
            "head": head_name(learner.model, self.layer),
            "head_parameters": sum(p.numel() for p in layer.parameters()),
        }


def head_name(model: nn.Module, layer: str | None = None) -> str:
    """The module name of ``model``'s output layer (see :class:`Head`)."""
    if layer is not None:
        try:
            model.get_submodule(layer)
        except AttributeError:
            raise ConfigError(f"head: the model has no module {layer!r}") from None
        return layer
    get_output = getattr(getattr(model, "model", None), "get_output_embeddings", None)
    if get_output is not None and get_output() is not None:  # a Hugging Face model
        target = get_output()
        return next(n for n, m in model.named_modules() if m is target)
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ConfigError(
            "head: the model has no nn.Linear layer to train; name its output layer (layer=...)"
        )
    return linear[-1]


def head_layer(model: nn.Module, layer: str | None = None) -> nn.Module:
    """``model``'s output layer (see :func:`head_name`)."""
    return model.get_submodule(head_name(model, layer))
