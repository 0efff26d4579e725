"""CURLoRA in a stream: LoRA's schedule with CUR adapters, whose ``C`` and ``R`` are frozen."""

from __future__ import annotations

from forgetless.strategies.lora import LoRA


class CURLoRA(LoRA):
    """CURLoRA adapters from the second task on (Fawi 2024, "CURLoRA: Stable LLM Continual
    Fine-Tuning and Catastrophic Forgetting Mitigation", arXiv:2408.14572).

    The schedule, options and policies are :class:`~forgetless.strategies.lora.LoRA`'s; the
    adapter is :class:`~forgetless.models.adapters.CURLinear`: ``W x + alpha C U R x`` with
    ``C`` and ``R`` columns and rows of the frozen weight drawn with inverted probabilities
    (``1 / (p + eps)``, normalised) and ``U`` (``r x r``, zero at the start) the only trained
    part. The paper's claim is that the update, confined to the span of the weight's
    least-energy columns and rows with ``r^2`` trained numbers, keeps what the pretrained model
    knew (a general corpus's perplexity) nearly unchanged through a sequence of tasks. Needs no
    library beyond torch; ``adapter_alpha`` defaults to 1, as in the paper's code. The drawn
    indices and ``C``, ``R`` are buffers, saved with the adapters' weights.

    Args:
        rank: columns and rows drawn from each weight (``U`` is ``rank x rank``).
        adapter_alpha: the update's scale (default 1).
        adapter_dropout: dropout on the adapters' inputs.
        targets: the layers to adapt, comma-separated names or name suffixes (as LoRA's).
        policy: what each later task gets, one of ``continue``, ``per-task`` or ``merge``.
    """

    name = "curlora"
    method = "curlora"
