"""Plain fine-tuning: train on each task in turn with nothing to protect the past."""

from forgetless.strategies.base import Strategy


class Finetune(Strategy):
    """Naive sequential training (the lower bound): every hook is the default.

    Minimises only the current task's loss, ``L_t(theta)``, starting from the weights the
    previous task left; what catastrophic forgetting looks like with no defence.
    """

    name = "finetune"
