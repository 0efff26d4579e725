"""Shared test settings, and a tiny generated text corpus (no corpus is ever committed)."""

import random

import pytest
import torch

# The suite trains many tiny models: one thread is fastest for them and keeps runs repeatable
# on machines where other work competes for the cores.
torch.set_num_threads(1)


def language(letters: str, lines: int, seed: int) -> str:
    """Lines of words over ``letters``, where a letter is followed by the next one of the
    alphabet 70% of the time: a little structure for a model to learn."""
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        words = []
        for _ in range(8):
            word = [rng.choice(letters)]
            for _ in range(rng.randint(1, 4)):
                follows = letters[(letters.index(word[-1]) + 1) % len(letters)]
                word.append(follows if rng.random() < 0.7 else rng.choice(letters))
            words.append("".join(word))
        out.append(" ".join(words))
    return "\n".join(out) + "\n"


@pytest.fixture(scope="session")
def two_domains() -> dict[str, str]:
    """A general domain over ``a..h`` and a second one over ``n..u`` (about 18k characters
    each): what is learnt of one says nothing of the other."""
    return {"general": language("abcdefgh", 500, 0), "second": language("nopqrstu", 500, 1)}


@pytest.fixture
def sweeps_run(monkeypatch):
    """The reports of every call to the one sweep runner during a test, in order (a study's
    second call with the same store shows ``done == []``: nothing trained)."""
    from forgetless import sweeps

    reports, run_sweep = [], sweeps.run_sweep

    def recording(*args, **kwargs):
        reports.append(run_sweep(*args, **kwargs))
        return reports[-1]

    monkeypatch.setattr(sweeps, "run_sweep", recording)
    return reports
