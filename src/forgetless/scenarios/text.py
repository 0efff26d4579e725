"""Text streams: each task is a text domain, learnt as next-token prediction."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from forgetless.data.text import Corpus, TextDomain, tokenize
from forgetless.errors import ConfigError
from forgetless.scenarios.builders import _assemble, _Part
from forgetless.scenarios.stream import Protocol, Stream

#: Tokens per example when a scenario names no sequence length.
DEFAULT_SEQUENCE_LENGTH = 128


def text(
    domains: Sequence[TextDomain] | Corpus,
    sequence_length: int = DEFAULT_SEQUENCE_LENGTH,
    protocol: Protocol | str = Protocol.DOMAIN,
    seed: int = 0,
    tokenizer: str = "char",
    test_fraction: float = 0.1,
    name: str = "text",
    cache: bool | str | Path = True,
) -> Stream:
    """A stream of text domains, in order: the first is the general corpus a model is
    pretrained on, the others the domains it is then fine-tuned on.

    Each task's examples are windows of ``sequence_length`` tokens with their next tokens
    (:meth:`~forgetless.data.text.Corpus.sequences`); its test set is the domain's held-out
    text. Under the ``domain`` protocol (the default) every domain answers on one shared
    vocabulary (one language-model head); under ``task`` each domain has a copy of the
    vocabulary of its own (a head per domain, chosen by the task id), so a frozen backbone
    with a new head per domain cannot forget.

    Args:
        domains: the domains (:func:`~forgetless.data.text.read_domains`,
            :func:`~forgetless.data.text.from_strings`), or a corpus already tokenised.
        sequence_length: tokens per example.
        protocol: ``"domain"`` or ``"task"``.
        seed: recorded in the stream (the domains are not shuffled).
        tokenizer, test_fraction, cache: passed to :func:`~forgetless.data.text.tokenize`
            when ``domains`` is not tokenised yet.
        name: the stream's name.
    """
    protocol = Protocol.parse(protocol)
    if protocol is Protocol.CLASS:
        raise ConfigError(
            "text streams are domain- or task-incremental (one shared vocabulary, or a head per "
            "domain); class-incremental would ask a model to tell the domains' copies of each "
            "token apart; use --protocol domain or task"
        )
    if isinstance(domains, Corpus):
        corpus = domains
    else:
        corpus = tokenize(domains, tokenizer, test_fraction, cache)
    vocab = corpus.tokenizer.vocab
    parts = [
        _Part(
            domain,
            corpus.sequences(i, "train", sequence_length),
            corpus.sequences(i, "test", sequence_length),
            vocab,
        )
        for i, domain in enumerate(corpus.names)
    ]
    return _assemble(name, parts, protocol, seed)
