"""Rehearsal and EWC on language models, the parts: a memory of token sequences (int64 ids,
a target per position, DER's logits at every position) and the Fisher information of a model
whose examples are sequences, against brute-force loops over sequences."""

import json

import pytest
import torch
import torch.nn.functional as F

from forgetless import ConfigError
from forgetless.buffer import MemoryBuffer, buffer_nbytes
from forgetless.fisher import diagonal_fisher
from forgetless.models.gpt import GPT
from forgetless.scenarios import make_stream
from forgetless.state import flatten, pack, unflatten, unpack

T, V = 6, 7  # positions and vocabulary of the hand-made sequences


def _sequences(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(V, (n, T + 1), generator=g)
    return tokens[:, :-1], tokens[:, 1:]


# --- the memory ----------------------------------------------------------------------------


def test_a_memory_of_sequences_keeps_token_ids_targets_and_logits_per_position():
    buffer = MemoryBuffer(5, (T,), num_logits=V, input_dtype=torch.int64, target_shape=(T,))
    assert buffer.x.dtype == torch.int64 and buffer.y.shape == (5, T)
    assert buffer.logits.shape == (5, T, V)
    x, y = _sequences(8)
    x[0, 0] = 2**40 + 1  # an id a float32 copy could not hold exactly
    logits = torch.randn(8, T, V)
    g = torch.Generator().manual_seed(0)
    slots = buffer.reservoir_add(x[:5], y[:5], torch.zeros(5, dtype=torch.long), logits[:5], g)
    assert slots.tolist() == [0, 1, 2, 3, 4]
    assert int(buffer.x[0, 0]) == 2**40 + 1
    buffer.reservoir_add(x[5:], y[5:], torch.ones(3, dtype=torch.long), logits[5:], g)
    stored = buffer.get(torch.arange(5))
    # each slot holds one offered sequence whole: its ids, its targets and its logits together
    for k in range(5):
        (row,) = [i for i in range(8) if torch.equal(x[i], stored.x[k])]
        assert torch.equal(stored.y[k], y[row]) and torch.equal(stored.logits[k], logits[row])
        assert int(stored.t[k]) == (0 if row < 5 else 1)
    # exact bytes: int64 ids and targets, an int64 task id, float32 logits per position
    per_example = 8 * T + 8 * T + 8 + 4 * T * V
    assert buffer.nbytes == 5 * per_example == buffer_nbytes(5, (T,), V, torch.int64, (T,))
    assert buffer.memory_report()["bytes_per_example"] == per_example
    assert "int64" in repr(buffer) and f"targets=({T},)" in repr(buffer)


def test_a_memory_for_a_stream_takes_its_inputs_and_targets_as_they_are(two_domains):
    from forgetless.data.text import from_strings
    from forgetless.scenarios import text

    stream = text(from_strings(two_domains), sequence_length=16, cache=False)
    memory = MemoryBuffer.for_stream(10, stream, num_logits=stream.num_outputs)
    assert memory.x.dtype == torch.int64 and memory.x.shape == (10, 16)
    assert memory.y.shape == (10, 16) and memory.logits.shape == (10, 16, stream.num_outputs)
    images = make_stream("split-digits", seed=0)
    same = MemoryBuffer.for_stream(10, images)  # what image strategies always had
    assert same.x.dtype == torch.float32 and same.x.shape == (10, *images.input_shape)
    assert same.y.shape == (10,) and same.nbytes == buffer_nbytes(10, images.input_shape)


def test_a_memory_of_sequences_balances_by_task_and_refuses_to_balance_by_class():
    buffer = MemoryBuffer(4, (T,), input_dtype=torch.int64, target_shape=(T,))
    x, y = _sequences(9)
    t = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1])
    buffer.balanced_add(x, y, t, "task", generator=torch.Generator().manual_seed(0))
    assert sorted(buffer.t.tolist()) == [0, 0, 1, 1]
    for k in range(4):  # inputs and targets of one sequence stay together
        (row,) = [i for i in range(9) if torch.equal(x[i], buffer.x[k])]
        assert torch.equal(buffer.y[k], y[row])
    with pytest.raises(ConfigError, match="class-balanced memory needs one label per example"):
        buffer.balanced_add(x, y, t, "class")


def test_a_memory_refuses_what_does_not_fit_it():
    buffer = MemoryBuffer(4, (T,), input_dtype=torch.int64, target_shape=(T,))
    x, y = _sequences(2)
    t = torch.zeros(2, dtype=torch.long)
    with pytest.raises(
        ConfigError, match=r"dtype torch\.float32 do not fit a buffer of torch\.int64"
    ):
        buffer.reservoir_add(x.float(), y, t)
    with pytest.raises(ConfigError, match=r"targets of shape \(\) per example do not fit"):
        buffer.reservoir_add(x, y[:, 0], t)
    with_logits = MemoryBuffer(4, (T,), V, input_dtype=torch.int64, target_shape=(T,))
    with pytest.raises(ConfigError, match=rf"logits must be \[2, {T}, {V}\], got \(2, {V}\)"):
        with_logits.reservoir_add(x, y, t, torch.zeros(2, V))


def test_a_memory_of_token_ids_comes_back_from_a_checkpoint_as_it_was():
    buffer = MemoryBuffer(4, (T,), num_logits=V, input_dtype=torch.int64, target_shape=(T,))
    x, y = _sequences(3)
    buffer.reservoir_add(x, y, torch.arange(3), torch.randn(3, T, V))
    skeleton, tensors = flatten(pack({"memory": buffer}))
    back = unpack(unflatten(json.loads(json.dumps(skeleton)), tensors))["memory"]
    assert isinstance(back, MemoryBuffer) and len(back) == 3 and back.seen == 3
    for a, b in zip(back._arrays(), buffer._arrays(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
    # ...and goes on taking sequences
    back.reservoir_add(x, y, torch.arange(3), torch.randn(3, T, V))
    assert len(back) == 4 and back.seen == 6


# --- the Fisher information of sequences ---------------------------------------------------


def _tiny_gpt(outputs: int = V) -> GPT:
    torch.manual_seed(0)
    model = GPT(V, T, width=32, layers=1, outputs=outputs)
    with torch.no_grad():  # far from uniform predictions, so the kinds differ
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model


def _sequence_gradient(model, x, target_logprob) -> list[torch.Tensor]:
    """The gradient of one sequence's log-likelihood, ``target_logprob(log_probs)``, by autograd
    on that sequence alone."""
    logprobs = model(x.unsqueeze(0)).squeeze(0)
    return list(torch.autograd.grad(target_logprob(logprobs), list(model.parameters())))


@pytest.mark.parametrize("kind", ["sample", "empirical", "weighted-empirical"])
@pytest.mark.parametrize("units", [None, [1, 2, 4, 5, 6]])
def test_the_fisher_of_sequences_is_the_mean_over_sequences_of_squared_score(kind, units):
    model = _tiny_gpt()
    x, y = _sequences(5, seed=1)
    index = torch.arange(V) if units is None else torch.tensor(units)
    if units is not None:  # targets inside the units, as a task's are
        y = index[y % len(index)]
    fisher = diagonal_fisher(
        model, x, y, units, kind=kind, generator=torch.Generator().manual_seed(3), chunk_size=2
    )
    # By hand: one uniform per position, drawn in order, and a loop over sequences, each the sum
    # over its positions of log p_t(c_t) (weighted-empirical: each position's score weighted by
    # the square root of its true token's probability, a constant in the gradient).
    uniforms = torch.rand((5, T), generator=torch.Generator().manual_seed(3))
    position = {int(u): k for k, u in enumerate(index)}
    expected = [torch.zeros_like(p) for p in model.parameters()]
    for n in range(5):

        def loglik(out, n=n):
            logp = out[:, index].log_softmax(-1)
            if kind == "sample":
                cumulative = logp.exp().cumsum(-1).detach()
                c = torch.tensor([int((cumulative[t] < uniforms[n, t]).sum()) for t in range(T)])
                c = c.clamp(max=len(index) - 1)
            else:
                c = torch.tensor([position[int(v)] for v in y[n]])
            picked = logp[torch.arange(T), c]
            if kind == "weighted-empirical":
                picked = picked * picked.detach().exp().sqrt()
            return picked.sum()

        for e, g in zip(expected, _sequence_gradient(model, x[n], loglik), strict=True):
            e += g.pow(2) / 5
    for f, e in zip(fisher, expected, strict=True):
        torch.testing.assert_close(f, e, rtol=1e-4, atol=1e-9)


def test_the_batched_fisher_of_sequences_squares_mean_sequence_log_likelihoods():
    model = _tiny_gpt()
    x, y = _sequences(6, seed=2)
    fisher = diagonal_fisher(
        model, x, y, kind="batched", batch_size=4, generator=torch.Generator().manual_seed(0)
    )
    order = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    expected = [torch.zeros_like(p) for p in model.parameters()]
    for rows in (order[:4], order[4:]):
        logp = model(x[rows]).log_softmax(-1)
        loss = -logp.gather(-1, y[rows].unsqueeze(-1)).sum() / len(rows)
        for e, g in zip(expected, torch.autograd.grad(loss, list(model.parameters())), strict=True):
            e += g.pow(2) / 2
    for f, e in zip(fisher, expected, strict=True):
        torch.testing.assert_close(f, e, rtol=1e-4, atol=1e-9)


def test_the_sampled_fisher_of_sequences_estimates_the_per_position_exact_fisher():
    """Cross terms between positions vanish in expectation: the mean of the sampled Fisher over
    many draws is sum_t sum_c p_t(c) (d log p_t(c))^2, computed here by one backward pass per
    position and token."""
    model = _tiny_gpt()
    x, _ = _sequences(2, seed=4)
    exact = [torch.zeros_like(p) for p in model.parameters()]
    for n in range(2):
        p = model(x[n : n + 1]).squeeze(0).softmax(-1).detach()
        for t in range(T):
            for c in range(V):
                grads = _sequence_gradient(
                    model, x[n], lambda out, t=t, c=c: out.log_softmax(-1)[t, c]
                )
                for e, g in zip(exact, grads, strict=True):
                    e += p[t, c] * g.pow(2) / 2
    draws = 1500  # the two sequences, each drawn for 1500 times
    sampled = diagonal_fisher(
        model, x.repeat(draws, 1), kind="sample", generator=torch.Generator().manual_seed(0)
    )
    total = lambda tensors: torch.cat([t.flatten() for t in tensors])  # noqa: E731
    a, b = total(sampled), total(exact)
    assert float((a - b).norm() / b.norm()) < 0.1  # Monte Carlo error, about 1 / sqrt(draws)
    assert float(a.sum() / b.sum()) == pytest.approx(1.0, abs=0.06)


def test_the_exact_fisher_of_a_sequence_model_is_refused_naming_the_kind_to_use():
    model = _tiny_gpt()
    x, y = _sequences(3)
    for labels in (y, None):
        with pytest.raises(ConfigError, match=r"exact Fisher of a sequence model.*kind='sample'"):
            diagonal_fisher(model, x, labels, kind="exact")


def test_ewc_takes_the_exact_fisher_for_labels_and_the_sampled_one_for_sequences(two_domains):
    from forgetless.data.text import from_strings
    from forgetless.scenarios import text
    from forgetless.strategies.ewc import EWC

    sequences = text(from_strings(two_domains), sequence_length=16, cache=False)
    labels = make_stream("split-digits", seed=0)
    assert EWC().fisher == "auto"
    assert EWC().fisher_kind(labels.tasks[0]) == "exact"
    assert EWC().fisher_kind(sequences.tasks[0]) == "sample"
    assert EWC(fisher="empirical").fisher_kind(sequences.tasks[0]) == "empirical"


def test_per_sample_gradients_of_attention_need_no_fallback():
    """vmap over the gpt batches its attention (no loop over examples, no warning)."""
    from forgetless.per_sample import iter_per_sample_grads

    model = _tiny_gpt().eval()
    x, y = _sequences(4)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (grads,) = iter_per_sample_grads(
            model, lambda out, target: F.cross_entropy(out, target), x, y
        )
    one = torch.autograd.grad(
        F.cross_entropy(model(x[2:3]).squeeze(0), y[2]), list(model.parameters())
    )
    for g, ref in zip(grads.values(), one, strict=True):
        torch.testing.assert_close(g[2], ref, rtol=1e-4, atol=1e-7)
