"""iCaRL: exemplars chosen by herding, distillation, and nearest-mean-of-exemplars classification."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from forgetless.buffer import MemoryBuffer
from forgetless.data.arrays import ArraySet
from forgetless.errors import ConfigError
from forgetless.learner import Learner, TrainingData
from forgetless.names import renamed
from forgetless.scenarios.stream import Protocol, Task
from forgetless.strategies.base import Strategy
from forgetless.validation import check_positive_int

FeatureExtractor = Callable[[nn.Module, torch.Tensor], torch.Tensor]
#: ``ICaRL(loss_reduction=...)``: over the seen classes, ``sum`` (the paper) or ``mean`` (Mammoth).
LOSS_REDUCTIONS = ("sum", "mean")


class ICaRL(Strategy):
    """Incremental Classifier and Representation Learning (Rebuffi et al. 2017, "iCaRL:
    Incremental Classifier and Representation Learning", CVPR). Class-incremental only.

    With ``phi(x)`` the L2-normalised features of the model's penultimate layer, ``K`` the
    memory and ``s`` classes seen after a task:

    - Training (Algorithm 3): the task's data plus every exemplar ``P_y`` form the training set;
      with ``g_y = sigmoid(z_y)`` the model's outputs and ``q_y`` the sigmoid outputs of the
      model as it was before the task, the loss of an example ``(x, c)`` is

          -sum_{y new} [d(y=c) log g_y + (1-d(y=c)) log(1-g_y)]
          -sum_{y old} [q_y log g_y + (1-q_y) log(1-g_y)]

      (classification of the new classes, distillation of the old ones), averaged over the batch.
    - Memory (Algorithms 4 and 5), after each task: each class keeps ``m = K // s`` exemplars;
      an old set is reduced to its first ``m`` (herding order), a new class gets ``m`` of its
      training examples (all, if it has fewer) chosen by herding,
      ``p_k = argmin_x || mu - (phi(x) + sum_{j<k} phi(p_j)) / k ||`` with ``mu`` the class's
      mean feature.
    - Classification (Algorithm 1): ``y* = argmin_y || phi(x) - mu_y ||`` with ``mu_y`` the
      (re-normalised) mean of the exemplars' features, computed once after each task.

    The ``loss`` hook replaces the engine's cross-entropy with this sigmoid loss.

    Two options reproduce the DER authors' implementation (Buzzega et al. 2020, Mammoth's
    ``models/icarl.py``), which the DER paper's iCaRL numbers come from; the defaults are the
    iCaRL paper's:

    - ``loss_reduction="mean"`` averages the binary terms over the ``s`` seen classes as well
      as over the batch (``F.binary_cross_entropy_with_logits``'s default reduction), i.e. the
      loss above divided by ``s``: with plain SGD, an ``s`` times smaller step (2 to 10 on
      Split-MNIST).
    - ``normalize=False`` herds and classifies on the raw penultimate features: ``phi(x)`` is
      not L2-normalised, ``mu_y`` is the plain mean of the exemplars' features.

    Args:
        buffer_size: ``K``, exemplars kept in total (the paper uses 2000 on CIFAR-100; DER's
            MNIST settings use 200, 500 or 5120). At least the stream's number of classes.
            (It was ``memory_size``, still accepted with a warning for one release.)
        feature_extractor: ``f(model, x) -> [N, D]`` features. ``None``: for an
            ``nn.Sequential`` model, every module but the last (the penultimate layer); other
            models need this argument.
        loss_reduction: how the loss is averaged: ``"sum"`` (sum over the seen classes, mean over the batch: the
            formula above) or ``"mean"`` (mean over classes and batch: Mammoth's).
        normalize: L2-normalise features for herding and nearest-mean classification (the
            paper), or use them raw (``False``, Mammoth's).
    """

    name = "icarl"
    protocols = frozenset({Protocol.CLASS})
    stores_raw_data = True
    trained_start_refusal = (
        "iCaRL's exemplars and class means belong to a model trained with its own sigmoid loss "
        "and distillation; use replay or der, which store a sample of the learnt tasks"
    )
    supports_task_id_models = False  # features and the old model are called as model(x)

    def __init__(
        self,
        buffer_size: int = 2000,
        feature_extractor: FeatureExtractor | None = None,
        loss_reduction: str = "sum",
        normalize: bool = True,
        *,
        memory_size: int | None = None,
    ):
        if memory_size is not None:  # the old name, for one release
            renamed("memory_size", "icarl parameter")
            buffer_size = memory_size
        buffer_size = check_positive_int("buffer_size", buffer_size)
        if feature_extractor is not None and not callable(feature_extractor):
            raise ConfigError(
                "feature_extractor must be a callable f(model, x) -> [N, D] features or None, "
                f"got {feature_extractor!r}"
            )
        if loss_reduction not in LOSS_REDUCTIONS:
            raise ConfigError(
                f"icarl: loss_reduction must be one of {', '.join(LOSS_REDUCTIONS)} (sum over "
                f"the seen classes, or mean over them as Mammoth does), got {loss_reduction!r}"
            )
        if not isinstance(normalize, bool):
            raise ConfigError(
                f"icarl: normalize must be True (L2-normalised features, the paper) or False "
                f"(raw features, Mammoth), got {normalize!r}"
            )
        self.buffer_size = buffer_size
        self.feature_extractor = feature_extractor
        self.loss_reduction = loss_reduction
        self.normalize = normalize
        self._memory: MemoryBuffer | None = None
        # The memory holds one block of exemplars per class, in this order, each in herding order.
        self._classes: list[int] = []
        self._counts: list[int] = []
        self._old_model: nn.Module | None = None
        self._old_units = torch.zeros(0, dtype=torch.int64)
        self._seen_units = torch.zeros(0, dtype=torch.int64)
        self._means: torch.Tensor | None = None

    def before_task(self, learner: Learner, task: Task) -> None:
        if self._memory is None:
            self._check_setup(learner)
            self._memory = MemoryBuffer.for_stream(
                self.buffer_size, learner.stream, device=learner.device
            )
        old = [u for prev in learner.stream.tasks[: learner.task_index] for u in prev.units]
        self._old_units = torch.tensor(sorted(set(old)), dtype=torch.int64, device=learner.device)
        self._seen_units = torch.tensor(
            sorted(set(old) | set(task.units)), dtype=torch.int64, device=learner.device
        )
        if learner.task_index > 0:
            self._old_model = copy.deepcopy(learner.model).eval().requires_grad_(False)

    def training_data(self, learner: Learner, task: Task, data: TrainingData) -> TrainingData:
        n = sum(self._counts)
        if n == 0:
            return data
        exemplars = ArraySet(self._memory.x[:n].cpu(), self._memory.y[:n].cpu())
        return TrainingData(
            ArraySet.concat([data.examples, exemplars]),
            torch.cat([data.task_ids, self._memory.t[:n].cpu()]),
            data.iterations_scale,
        )

    def loss(
        self,
        learner: Learner,
        x: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor,
        logits: torch.Tensor,
    ) -> torch.Tensor:
        z = logits[:, self._seen_units]
        target = (y.unsqueeze(1) == self._seen_units).to(z.dtype)
        if self._old_model is not None and len(self._old_units):
            with torch.no_grad():
                q = torch.sigmoid(self._old_model(x)[:, self._old_units])
            # Old and new units interleave (classes 4, 1 then 7, 5): place q by position.
            is_old = torch.isin(self._seen_units, self._old_units)
            target[:, is_old] = q
        terms = F.binary_cross_entropy_with_logits(z, target, reduction="none")
        return terms.mean() if self.loss_reduction == "mean" else terms.sum(1).mean()

    @torch.no_grad()
    def after_task(self, learner: Learner, task: Task) -> None:
        model, memory = learner.model, self._memory
        was_training = model.training
        model.eval()
        new = [u for u in task.units if u not in self._classes]
        m = self.buffer_size // (len(self._classes) + len(new))
        # Algorithm 5: keep the first m exemplars of each old class (its herding order).
        starts = [sum(self._counts[:b]) for b in range(len(self._counts))]
        self._counts = [min(n, m) for n in self._counts]
        rows = [torch.arange(s, s + n) for s, n in zip(starts, self._counts, strict=True)]
        rows = torch.cat([torch.zeros(0, dtype=torch.int64), *rows]).to(memory.device)
        xs, ys, ts = [memory.x[rows]], [memory.y[rows]], [memory.t[rows]]
        # Algorithm 4: herding on each new class's training examples (all of them if fewer).
        for unit in new:
            index = (task.train.y == unit).nonzero().squeeze(1)
            inputs = task.train.inputs(index).to(learner.device)
            chosen = herding(self._phi(model, inputs), min(m, len(index)))
            xs.append(inputs[chosen])
            ys.append(torch.full((len(chosen),), unit, device=learner.device))
            ts.append(torch.full((len(chosen),), learner.task_index, device=learner.device))
            self._classes.append(unit)
            self._counts.append(len(chosen))
        x, y, t = torch.cat(xs), torch.cat(ys), torch.cat(ts)
        memory.write(torch.arange(len(x)), x, y, t)
        # Algorithm 1's class means, once per task rather than per evaluation batch.
        self._means = exemplar_means(self._features(model, x), self._counts, self.normalize)
        model.train(was_training)

    def predict(self, learner: Learner, x: torch.Tensor, t: int) -> torch.Tensor | None:
        if self._means is None:
            return None
        features = self._phi(learner.model, x)
        scores = features.new_full((len(x), learner.stream.num_outputs), float("-inf"))
        scores[:, self._classes] = nearest_mean_scores(features, self._means)
        return scores

    @property
    def memory(self) -> MemoryBuffer | None:
        """The exemplar memory (``None`` before the first task); see :attr:`exemplar_counts`."""
        return self._memory

    @property
    def exemplar_counts(self) -> dict[int, int]:
        """Exemplars per class unit. The memory holds them in consecutive blocks in this order
        (slots ``0 .. sum - 1``); slots after these are stale once sets were reduced."""
        return dict(zip(self._classes, self._counts, strict=True))

    def _phi(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``phi(x)``: the features, L2-normalised unless ``normalize=False``."""
        features = self._features(model, x)
        return F.normalize(features, dim=1) if self.normalize else features

    def _features(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.feature_extractor is not None:
            return self.feature_extractor(model, x)
        for module in list(model)[:-1]:
            x = module(x)
        return x

    def _check_setup(self, learner: Learner) -> None:
        classes = {u for task in learner.stream for u in task.units}
        if self.buffer_size < len(classes):
            raise ConfigError(
                f"icarl: buffer_size must be >= the stream's number of classes ({len(classes)}) "
                f"so that every class keeps an exemplar, got {self.buffer_size}"
            )
        if self.feature_extractor is None and not (
            isinstance(learner.model, nn.Sequential) and len(learner.model) >= 2
        ):
            raise ConfigError(
                f"icarl classifies by the model's penultimate-layer features, found only for an "
                f"nn.Sequential model (every module but the last); {type(learner.model).__name__} "
                "is not one: pass feature_extractor=f(model, x) -> [N, D] features"
            )


def herding(features: torch.Tensor, m: int) -> torch.Tensor:
    """Indices of ``m`` distinct rows of ``features`` chosen by herding (Rebuffi et al. 2017,
    Algorithm 4): ``p_k = argmin_i || mu - (f_i + sum_{j<k} f_{p_j}) / k ||``, ``mu`` the mean row.

    The running mean of the chosen rows approaches ``mu`` greedily, so any prefix of the order is
    itself a good exemplar set (what Algorithm 5's reduction relies on). Pass normalised features
    (the paper's ``phi``), or raw ones for Mammoth's variant.

    Args:
        features: ``[N, D]``.
        m: how many to choose, ``0 <= m <= N``.
    """
    mu = features.mean(0)
    total = torch.zeros_like(mu)
    taken = torch.zeros(len(features), dtype=torch.bool, device=features.device)
    chosen = []
    for k in range(1, m + 1):
        distance = (mu - (total + features) / k).norm(dim=1).masked_fill(taken, float("inf"))
        i = int(distance.argmin())
        chosen.append(i)
        taken[i] = True
        total += features[i]
    return torch.tensor(chosen, dtype=torch.int64, device=features.device)


def exemplar_means(
    features: torch.Tensor, counts: Sequence[int], normalize: bool = True
) -> torch.Tensor:
    """Class means ``mu_y = normalise(mean_{p in P_y} normalise(phi(p)))`` (Rebuffi et al. 2017,
    Algorithm 1, with the paper's re-normalisation of averaged features) of ``features``
    ``[sum(counts), D]`` holding ``counts[y]`` consecutive rows per class; ``[len(counts), D]``.
    ``normalize=False``: the plain means ``mean_{p in P_y} phi(p)`` (Mammoth's)."""
    if not normalize:
        return torch.stack([block.mean(0) for block in features.split(list(counts))])
    blocks = F.normalize(features, dim=1).split(list(counts))
    return F.normalize(torch.stack([block.mean(0) for block in blocks]), dim=1)


def nearest_mean_scores(features: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Scores ``-|| phi(x) - mu_y ||`` for ``features`` ``[N, D]`` and class ``means`` ``[C, D]``:
    the argmax is the nearest mean of exemplars (Rebuffi et al. 2017, Algorithm 1)."""
    return -torch.cdist(features, means)
