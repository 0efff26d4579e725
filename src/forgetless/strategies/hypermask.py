"""HyperMask: a hypernetwork maps each task's embedding to a semi-binary mask over one target
network's weights; both networks train, regularised to keep earlier tasks' masks."""

from __future__ import annotations

from typing import Any

import torch

from forgetless.errors import ConfigError
from forgetless.learner import Learner, takes_task_id
from forgetless.models.hypernet import HyperMasks
from forgetless.models.masked import MaskedNet, masked_layers, to_masked
from forgetless.scenarios.stream import Task
from forgetless.strategies.base import Strategy
from forgetless.validation import check_positive_int, check_range


class HyperMask(Strategy):
    """HyperMask (Ksiazek and Spurek 2024, "HyperMask: adaptive hypernetwork-based masks for
    continual learning"), on hypernetworks for continual learning (von Oswald, Henning, Grewe
    and Sacramento 2020, "Continual learning with hypernetworks", ICLR).

    A hypernetwork ``H`` maps task ``t``'s learned embedding ``e_t`` to one number per weight
    and bias of the target network (the model; its output bias excepted), and task ``t`` is
    answered with the target's weights times the semi-binary mask ``M_t = |tanh(H(e_t))|``,
    the ``sparsity`` smallest fraction of each tensor cut to 0
    (:func:`~forgetless.models.hypernet.semi_binary`). The target's weights ``theta``, the
    hypernetwork and the current embedding all train; earlier embeddings are fixed. From the
    second task on, the loss of task ``t`` is

        L = L_task + beta / t sum_{j<t} ||H(e_j) - H*_j||^2
                   + lam_target sum ||(theta - theta*) * M_t||_1

    - the **output regulariser** (von Oswald et al. 2020, Eq. 2): ``H*_j`` are the
      hypernetwork's outputs for each earlier embedding saved at the end of the previous task,
      so every earlier task's mask is pulled back to what it was;
    - the **target regulariser** (HyperMask): ``theta*`` are the target's weights at the end of
      the previous task; the change of each weight counts as much as the current task uses it
      (``M_t``; the unmasked output bias counts fully).

    During the first task the cut fraction rises linearly from 0 to ``sparsity`` over its steps
    (the authors' "adaptive sparsity"). The target's weights are shared and move, so earlier
    tasks may change a little: BWT is small, not 0 (measured, not promised).

    Defaults follow the authors' best Split-MNIST setting (their code): ``sparsity`` 0.3,
    ``beta`` 0.001, ``lam_target`` 0.001 (L1, masked), embeddings of 128, a hypernetwork of
    two hidden layers of 25 ELU units; they train with Adam at lr 0.001, batches of 128, 2000
    iterations per task, a 400-400 MLP target. Their code divides the output regulariser by
    ``t`` once more (``beta * sum / t^2``); we use the paper's mean. Their Permuted-MNIST setting
    cuts nothing (``sparsity`` 0), with ``beta`` 0.0005, embeddings of 24 and a 100-100
    hypernetwork.

    The hypernetwork's last layer has a row per target parameter, so it is ``width`` times the
    target's size (a 400-400 MLP on MNIST: 12 M parameters against 0.48 M). ``report`` measures
    the masks: per task the share of weights it keeps, for each pair of tasks the share of
    weights both keep, and per task the share whose kept-or-cut state is still what it was at
    the end of the task.

    Args:
        sparsity: fraction of each weight tensor's mask cut to 0, in [0, 1).
        beta: weight of the output regulariser, >= 0.
        lam_target: weight of the target regulariser, >= 0.
        embedding_size: length of each task embedding.
        hypernet_width: units of each hidden layer of the hypernetwork.
        hypernet_depth: hidden layers of the hypernetwork.
    """

    name = "hypermask"
    revisits = False  # one part (or one data set) per task
    needs_task_id = True
    trained_start_refusal = (
        "HyperMask learns each task's mask during the task's own steps, and a trained start's "
        "model has none for the tasks it learnt; use ewc, lwf or replay to protect them"
    )
    transient = ("_step",)

    def __init__(
        self,
        sparsity: float = 0.3,
        beta: float = 0.001,
        lam_target: float = 0.001,
        embedding_size: int = 128,
        hypernet_width: int = 25,
        hypernet_depth: int = 2,
    ):
        self.sparsity = check_range("sparsity", sparsity, 0.0, 1.0, high_open=True)
        self.beta = check_range("beta", beta, 0.0)
        self.lam_target = check_range("lam_target", lam_target, 0.0)
        self.embedding_size = check_positive_int("embedding_size", embedding_size)
        self.hypernet_width = check_positive_int("hypernet_width", hypernet_width)
        self.hypernet_depth = check_positive_int("hypernet_depth", hypernet_depth)
        self.targets: torch.Tensor | None = None  # H*_j: [tasks so far, outputs]
        self.anchor: dict[str, torch.Tensor] = {}  # theta*, by parameter name in the model
        self.kept: list[torch.Tensor] = []  # per task, which weights its mask kept at its end
        self._step = 0

    # The structure: the target wrapped with the hypernetwork's masks; what trains.

    def change_model(self, learner: Learner, task: Task) -> None:
        if not (
            isinstance(learner.model, MaskedNet) and isinstance(learner.model.masks, HyperMasks)
        ):
            self._wrap(learner)
        self._train_only(learner, learner.task_index)
        self._step = 0

    def rebuild(self, learner: Learner, state: Any) -> None:
        self._wrap(learner)
        self._train_only(learner, learner.task_index)

    def _wrap(self, learner: Learner) -> None:
        model = learner.model
        if takes_task_id(model):
            raise ConfigError(
                f"hypermask masks the weights of a plain model, but the model "
                f"({type(model).__name__}) already takes the task id: another strategy wrapped "
                "it. Use hypermask alone or with a regulariser (hypermask+ewc)"
            )
        body = to_masked(model)
        layers = masked_layers(body)
        if not layers:
            raise ConfigError(
                f"hypermask masks linear or convolutional layers; {type(model).__name__} has none"
            )
        seed = learner.task_generator("hypermask", 0).initial_seed()
        masks = HyperMasks(
            layers,
            len(learner.stream),
            self.sparsity,
            self.embedding_size,
            self.hypernet_width,
            self.hypernet_depth,
            seed,
        )
        learner.model = MaskedNet(body, masks)

    @staticmethod
    def _train_only(learner: Learner, task: int) -> None:
        masks = learner.model.masks
        masks.newest = task
        for t, embedding in enumerate(masks.hypernet.embeddings):
            embedding.requires_grad_(t == task)  # earlier ones fixed, later ones unused

    # Each step: the first task's rising cut; the two regularisers.

    def batch(self, learner, x, y, t):
        masks = learner.model.masks
        if learner.task_index == 0:
            masks.cut = self.sparsity * min(1.0, (self._step + 1) / max(1, learner.task_steps))
        else:
            masks.cut = self.sparsity
        self._step += 1
        return x, y, t

    def penalty(self, learner, x, y, t, logits) -> torch.Tensor | None:
        k = learner.task_index
        if k == 0 or self.targets is None or (self.beta == 0 and self.lam_target == 0):
            return None
        masks = learner.model.masks
        h = masks.outputs(range(k + 1))  # the earlier tasks' and the current one, in one pass
        # von Oswald et al. 2020, Eq. 2: the mean over earlier tasks of the outputs' drift.
        total = self.beta / k * (h[:k] - self.targets[:k]).pow(2).sum()
        if self.lam_target > 0:
            current = masks.masks_of(h[k], masks.cut)
            moved = torch.zeros((), device=h.device)
            for name, layer in learner.model.layers.items():
                mask = current[name]
                for which, param, m in (
                    ("weight", layer.weight, mask.weight),
                    ("bias", layer.bias, mask.bias),
                ):
                    if param is None:
                        continue
                    change = param - self.anchor[f"body.{name}.{which}"]
                    moved = moved + (change if m is None else change * m).abs().sum()
            total = total + self.lam_target * moved
        return total

    def after_task(self, learner: Learner, task: Task) -> None:
        k = learner.task_index
        net = learner.model
        masks = net.masks
        with torch.no_grad():
            self.targets = masks.outputs(range(k + 1)).detach().clone()
            self.anchor = {
                f"body.{name}.{which}": p.detach().clone()
                for name, layer in net.layers.items()
                for which, p in (("weight", layer.weight), ("bias", layer.bias))
                if p is not None
            }
            if len(self.kept) == k:  # the pattern at the end of the task's own training
                self.kept.append(self._kept(masks, k))

    @staticmethod
    def _kept(masks: HyperMasks, task: int) -> torch.Tensor:
        """Which weights (not biases) task ``task``'s mask keeps, over all layers, flattened."""
        current = masks.masks_of(masks.outputs(task), masks.sparsity)
        return torch.cat([current[name].weight.flatten() > 0 for name in masks.names])

    def report(self, learner: Learner) -> dict[str, Any] | None:
        net = learner.model
        if not isinstance(net, MaskedNet) or not isinstance(net.masks, HyperMasks):
            return None
        masks = net.masks
        tasks = learner.task_index + 1
        with torch.no_grad():
            kept = torch.stack([self._kept(masks, t) for t in range(tasks)]).float()
        shared = (kept @ kept.T) / kept.shape[1]  # [i, j]: share of weights both keep
        stable = [
            float((kept[t].bool() == self.kept[t]).float().mean())
            for t in range(min(tasks, len(self.kept)))
        ]
        return {
            "weights": kept.shape[1],
            "kept": shared.diagonal().tolist(),
            "shared": shared.tolist(),
            "stable": stable,
        }
