"""The names the command line offers, without importing torch: what ``forgetless --help`` and
``forgetless run --help`` list, so that they start in a fraction of a second.

Each tuple is the one list its registry is checked against (``tests/test_cli_options.py``):
the scenario presets, the strategies (in the order their help lists them), the models, the
optimisers, the routers. The parameter names that were renamed are here too, with the name
that replaced them (accepted, with a warning, for one release).
"""

from __future__ import annotations

import warnings

#: ``forgetless.scenarios.PRESETS``, in its order.
SCENARIOS = (
    "split-digits",
    "permuted-digits",
    "rotated-digits",
    "split-mnist",
    "split-fashion",
    "permuted-mnist",
    "rotated-mnist",
    "permuted-digits-long",
    "permuted-mnist-long",
    "permuted-fashion-mnist-long",
    "mnist-fashion",
    "two-task-binary",
    "text",
    "shakespeare",
)
#: ``forgetless.strategies.STRATEGIES``: baselines, regularisers, rehearsal, plasticity,
#: isolation, adapters.
STRATEGIES = (
    "finetune",
    "joint",
    "cumulative",
    "l2",
    "ewc",
    "online-ewc",
    "si",
    "mas",
    "lwf",
    "replay",
    "agem",
    "gss",
    "icarl",
    "der",
    "derpp",
    "continual-backprop",
    "shrink-perturb",
    "pnn",
    "packnet",
    "hat",
    "hypermask",
    "specialists",
    "head",
    "lora",
    "curlora",
    "olora",
)
#: The models ``build_model`` builds by name (besides ``hf:TYPE``).
MODELS = ("mlp", "cnn", "cnn-skip", "gpt")
#: The optimisers ``FitConfig.optimizer`` takes by name.
OPTIMIZERS = ("sgd", "adam", "adamw")
#: The arithmetic of training steps (``FitConfig.precision``).
PRECISIONS = ("float32", "bfloat16")
#: The memory layouts of a convolutional model's weights and image batches
#: (``FitConfig.memory_format``, :mod:`forgetless.models.memory_format`).
MEMORY_FORMATS = ("contiguous", "channels_last")
#: The task-inference rules of ``forgetless.routing``.
ROUTERS = ("entropy", "mahalanobis", "ncm")
#: The three continual-learning protocols.
PROTOCOLS = ("task", "domain", "class")

#: The training step of fine-tuning or replay on the MLP, alone or with one quadratic penalty
#: (EWC, online EWC, L2, MAS) (``FitConfig.fast_path``): ``"auto"``
#: the hand-written step wherever it applies (autograd's numbers bit for bit), ``"off"``
#: always autograd's, ``"fused"`` fewer, fused kernels at other float32 rounding (the MLP's SGD
#: update folded into the weight-gradient product; Adam and AdamW as torch's fused kernels).
FAST_PATHS = ("auto", "off", "fused")

#: Strategy parameters under an older name: the old name and the one that replaced it.
RENAMED_PARAMETERS = {
    "memory_size": "buffer_size",  # iCaRL's exemplar memory: one name with replay, DER, GSS
    "buffer": "buffer_size",
    "lambda": "lam",  # 'lambda' is a Python keyword; every penalty strength is 'lam'
}


def renamed(name: str, where: str = "parameter") -> str:
    """``name``, or the name that replaced it, with a one-line deprecation warning."""
    new = RENAMED_PARAMETERS.get(name)
    if new is None:
        return name
    warnings.warn(
        f"{where} {name!r} is deprecated (one release): it is now {new!r}",
        DeprecationWarning,
        stacklevel=3,
    )
    return new


def flag(name: str) -> str:
    """A field or parameter name as its command-line flag: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")
