"""LoRA in a stream: the first task trains the whole model, low-rank adapters every later one."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from forgetless.errors import ConfigError
from forgetless.learner import Learner
from forgetless.models import adapters
from forgetless.models.adapters import TaskAdapters
from forgetless.scenarios.stream import Task
from forgetless.state import unpack
from forgetless.strategies.base import Strategy
from forgetless.validation import check_range

#: What each task after the first gets: the one adapter trained on (``continue``), an adapter
#: of its own selected by the task id (``per-task``), or a fresh adapter after the previous one
#: is merged into the weights (``merge``).
POLICIES = ("continue", "per-task", "merge")


class LoRA(Strategy):
    """Low-rank adapters from the second task on (Hu, Shen, Wallis, Allen-Zhu, Li, Wang, Wang
    and Chen 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685),
    through the ``peft`` library (``pip install 'forgetless[adapters]'``).

    The first task trains the whole model (with a trained start, ``trained_tasks=k``, the model
    arrives trained and nothing is fitted on tasks ``0..k-1``). At the first task trained after
    it, the targeted linear layers are wrapped in place (:func:`forgetless.models.adapters.wrap`)
    and every other parameter is frozen, so each later task trains only
    ``W x + (alpha / r) B A x`` (``B`` zero at the start, so the model starts exactly where it
    was). What each further task gets is ``policy``:

    - ``continue``: the same adapter goes on training (one adapter, the whole stream);
    - ``per-task``: a new adapter per task, the earlier ones kept frozen, and each task answered
      by its own (task-incremental isolation: needs the task id at test time; tasks learnt
      before the adapters answer with the base model, whose weights no later task changes);
    - ``merge``: the last task's adapter is merged into the (frozen) weights, then a fresh one
      trains, as practitioners chain fine-tunes with peft's ``merge_and_unload``.

    Args:
        rank: the adapters' rank ``r``.
        adapter_alpha: their scale (default ``2 * rank``; CURLoRA's default is 1).
        adapter_dropout: dropout on the adapters' inputs.
        targets: the layers to adapt, comma-separated names or name suffixes (``"qkv,proj"``);
            default :func:`~forgetless.models.adapters.default_targets`: every linear layer of
            ``mlp`` and ``cnn`` (the CNN's fully connected layers), the attention projections of
            ``gpt``, peft's choice for a Hugging Face model type.
        policy: what each later task gets, one of ``continue``, ``per-task`` or ``merge``
            (above).

    Composes with the other strategies (``lora+ewc``, ``lora+replay``, ``lora+lwf``): they see
    the adapted model, whose only trainable parameters are the adapters. The run store keeps
    the whole model after the first task and only the adapters' tensors after each later one
    (:meth:`task_weights`); the strategy's own state is its settings and counts.
    """

    name = "lora"
    method: ClassVar[str] = "lora"

    def __init__(
        self,
        rank: int = 8,
        adapter_alpha: float | None = None,
        adapter_dropout: float = 0.0,
        targets: str | None = None,
        policy: str = "continue",
    ):
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
            raise ConfigError(f"{self.name}: rank must be a positive integer, got {rank!r}")
        if adapter_alpha is not None:
            adapter_alpha = check_range("adapter_alpha", adapter_alpha, 0.0, low_open=True)
        if policy not in POLICIES:
            raise ConfigError(
                f"{self.name}: policy must be one of {', '.join(POLICIES)}, got {policy!r}"
            )
        self.rank = rank
        self.adapter_alpha = adapter_alpha
        self.adapter_dropout = check_range(
            "adapter_dropout", adapter_dropout, 0.0, 1.0, high_open=True
        )
        self.targets = targets
        self.policy = policy
        self.adapted_from = -1  # the first task trained through adapters (-1: none yet)
        self.adapters = 0  # adapters created so far

    @property
    def needs_task_id(self) -> bool:  # type: ignore[override]
        return self.policy == "per-task"

    # --- the model --------------------------------------------------------------------------

    def change_model(self, learner: Learner, task: Task) -> None:
        k = learner.task_index
        if k == 0:
            return  # the first task trains the whole model
        if self.adapted_from < 0:
            self.adapted_from = k
            self._attach(learner)
        elif self.policy == "per-task":
            learner.model.new_task()
            self.adapters += 1
        elif self.policy == "merge":
            body = self._body(learner.model)
            adapters.remove(body, merge=True)
            self._wrap(body, learner.task_generator(self.name, k).initial_seed())
            self.adapters += 1

    def rebuild(self, learner: Learner, state: Any) -> None:
        saved = unpack(state)
        self.adapted_from = int(saved["adapted_from"])
        if self.adapted_from < 0:
            return
        self._attach(learner)
        if self.policy == "per-task":
            for _ in range(int(saved["adapters"]) - 1):
                learner.model.new_task()  # the slots' values come with the weights

    def _attach(self, learner: Learner) -> None:
        self._wrap(
            learner.model, learner.task_generator(self.name, self.adapted_from).initial_seed()
        )
        self.adapters = 1
        if self.policy == "per-task":
            learner.model = TaskAdapters(learner.model, self.adapted_from)

    def _wrap(self, model: nn.Module, seed: int) -> None:
        targets = None if self.targets is None else [t.strip() for t in self.targets.split(",")]
        adapters.wrap(
            model,
            self.method,
            rank=self.rank,
            alpha=self.adapter_alpha,
            dropout=self.adapter_dropout,
            targets=targets,
            seed=seed,
        )

    @staticmethod
    def _body(model: nn.Module) -> nn.Module:
        return model.body if isinstance(model, TaskAdapters) else model

    # --- what is stored and reported --------------------------------------------------------

    def task_weights(self, learner: Learner) -> dict[str, torch.Tensor] | None:
        """After an adapted task, only the live adapters' tensors (the rest of the model is
        the first task's weights, plus earlier adapters merged or kept); ``None`` (the whole
        model) before."""
        if self.adapted_from < 0:
            return None
        return adapters.adapter_state(learner.model)

    def report(self, learner: Learner) -> dict[str, Any] | None:
        if self.adapted_from < 0:
            return None
        return {
            "adapted_from_task": self.adapted_from,
            "adapters": self.adapters,
            "parameters_per_adapter": sum(
                p.numel() for p in adapters.adapter_parameters(learner.model)
            ),
            "adapted_layers": [n for n, _ in adapters.adapter_layers(learner.model)],
        }
