"""Text: domains of plain text, tokenised, as token streams ready to cut into sequences.

A *domain* is a body of text with one name: a ``.txt`` file, a folder of them, or strings the
user gives. :func:`tokenize` turns a list of domains into a :class:`Corpus`: one tokeniser for
all of them (characters by default, or a byte-level BPE trained locally with the ``tokenizers``
library on the first domain, the general corpus), and per domain a training and a held-out
token stream. :meth:`Corpus.sequences` cuts a stream into fixed-length next-token examples.

Tokenised corpora are cached as safetensors files (``cache_dir()/text/``): keyed by the sha256
of every document and the settings, checksummed, never pickled, and bounded in total size (the
least recently used files are deleted first).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from forgetless.data.arrays import ArraySet
from forgetless.errors import ConfigError, DataError

#: Most characters one domain may hold. Token ids are int64 in memory (8 bytes a character
#: at the character level), so this keeps a domain under about 0.5 GB.
MAX_DOMAIN_CHARS = 64 * 2**20
#: Total size the text cache may take; beyond it the least recently used files are deleted.
CACHE_LIMIT_BYTES = 2**30
#: The BPE vocabulary size when ``"bpe"`` names none.
DEFAULT_BPE_VOCAB = 512
_CACHE_FORMAT = 1
_META_KEY = "forgetless.text"


@dataclass(frozen=True)
class TextDomain:
    """A body of text with one name (a task of a text stream).

    Attributes:
        name: a short name for reports (a file's or folder's stem).
        documents: the texts; each is split on its own into training and held-out parts.
    """

    name: str
    documents: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.documents or not any(self.documents):
            raise DataError(f"text domain {self.name!r} holds no text")
        chars = sum(map(len, self.documents))
        if chars > MAX_DOMAIN_CHARS:
            raise DataError(
                f"text domain {self.name!r} holds {chars:,} characters, more than the "
                f"{MAX_DOMAIN_CHARS:,} one domain may hold; use a subset of its files"
            )

    def __repr__(self) -> str:
        chars = sum(map(len, self.documents))
        return f"TextDomain({self.name!r}, documents={len(self.documents)}, chars={chars:,})"


def from_strings(domains: Mapping[str, str | Sequence[str]]) -> list[TextDomain]:
    """Domains from the user's strings, in the mapping's order: ``{"general": text, "legal":
    [doc1, doc2]}`` (a string is one document; a list, several)."""
    out = []
    for name, value in domains.items():
        docs = (value,) if isinstance(value, str) else tuple(value)
        if not all(isinstance(d, str) for d in docs):
            raise ConfigError(f"text domain {name!r}: give a string or a list of strings")
        out.append(TextDomain(str(name), tuple(_normalise(d) for d in docs)))
    if not out:
        raise ConfigError("give at least one text domain")
    return out


def read_domain(path: str | Path, name: str | None = None) -> TextDomain:
    """One domain from a ``.txt`` file, or from every ``.txt`` file under a folder (sorted by
    path, each a document). Files must be UTF-8."""
    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"{path}: a text domain folder must hold .txt files; found none")
    else:
        raise DataError(f"{path}: no such text file or folder")
    return TextDomain(name or path.stem, tuple(_read_text(f) for f in files))


def read_domains(folder: str | Path) -> list[TextDomain]:
    """Every domain of a folder, in the order of their names: each ``.txt`` file, and each
    subfolder holding ``.txt`` files, is one domain (name it ``1-general.txt``,
    ``2-legal/``, ... to set the order: the first is the general corpus)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            f"{folder}: the text scenario reads its domains from a folder (--data-dir), one "
            ".txt file or subfolder of .txt files per domain; this is not a folder"
        )
    entries = sorted(
        p
        for p in folder.iterdir()
        if (p.is_file() and p.suffix == ".txt") or (p.is_dir() and any(p.rglob("*.txt")))
    )
    if not entries:
        raise DataError(
            f"{folder}: no text domains found: put one .txt file or one folder of .txt files "
            "per domain in it, named in stream order (the first is the general corpus)"
        )
    return [read_domain(p) for p in entries]


def _read_text(path: Path) -> str:
    size = path.stat().st_size
    if size > 4 * MAX_DOMAIN_CHARS:  # UTF-8 takes at most 4 bytes a character
        raise DataError(f"{path}: {size:,} bytes is more text than one domain may hold")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); convert it, e.g. "
            f"`iconv -f latin1 -t utf-8 {path.name}`"
        ) from None
    return _normalise(text)


def _normalise(text: str) -> str:
    """One newline convention and no byte-order mark, so the same text gives the same ids."""
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


class CharTokenizer:
    """One token per character: the vocabulary is every character of the corpus, sorted by
    code point (as nanoGPT's Shakespeare-char), so it is fixed before any task is trained."""

    kind = "char"

    def __init__(self, vocab: Sequence[str]):
        if not vocab or any(len(c) != 1 for c in vocab) or list(vocab) != sorted(set(vocab)):
            raise DataError("a character vocabulary must be distinct characters, sorted")
        self.vocab = tuple(vocab)
        self._codes = np.array([ord(c) for c in self.vocab], dtype=np.uint32)

    @classmethod
    def fit(cls, texts: Sequence[str]) -> CharTokenizer:
        codes = [np.unique(_code_points(t)) for t in texts if t]
        return cls([chr(c) for c in np.unique(np.concatenate(codes))])

    @property
    def spec(self) -> str:
        return "char"

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> torch.Tensor:
        """The ids of ``text``'s characters, ``[len(text)]`` int64."""
        codes = _code_points(text)
        ids = np.searchsorted(self._codes, codes)
        known = ids < len(self._codes)
        known[known] = self._codes[ids[known]] == codes[known]
        if not known.all():
            unknown = sorted({chr(c) for c in codes[~known]})[:10]
            raise DataError(f"characters outside the vocabulary: {unknown!r}")
        return torch.from_numpy(ids.astype(np.int64))

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        return "".join(self.vocab[int(i)] for i in ids)

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "vocab": "".join(self.vocab)})


class BPETokenizer:
    """Byte-level BPE (Sennrich et al. 2016; GPT-2's byte-level variant, Radford et al. 2019),
    trained locally with the ``tokenizers`` library. Every byte is in the initial alphabet, so
    any text encodes, in any later domain."""

    kind = "bpe"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    @classmethod
    def fit(cls, texts: Sequence[str], vocab_size: int = DEFAULT_BPE_VOCAB) -> BPETokenizer:
        tokenizers = _tokenizers()
        model = tokenizers.Tokenizer(tokenizers.models.BPE())
        model.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
        model.decoder = tokenizers.decoders.ByteLevel()
        trainer = tokenizers.trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=[],
            show_progress=False,
        )
        model.train_from_iterator(list(texts), trainer=trainer)
        return cls(model)

    @classmethod
    def from_json(cls, text: str) -> BPETokenizer:
        return cls(_tokenizers().Tokenizer.from_str(text))

    @property
    def spec(self) -> str:
        return f"bpe:{len(self)}"

    @property
    def vocab(self) -> tuple[str, ...]:
        """Each id's token as text (bytes shown as GPT-2's printable stand-ins)."""
        by_id = sorted(self.tokenizer.get_vocab().items(), key=lambda kv: kv[1])
        return tuple(token for token, _ in by_id)

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor(self.tokenizer.encode(text).ids, dtype=torch.int64)

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        return self.tokenizer.decode([int(i) for i in ids])

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "tokenizer": self.tokenizer.to_str()})


Tokenizer = CharTokenizer | BPETokenizer


def tokenizer_from_json(text: str) -> Tokenizer:
    """A tokeniser saved with ``to_json`` (plain JSON; nothing in it runs)."""
    data = json.loads(text)
    if data.get("kind") == "char":
        return CharTokenizer(list(data["vocab"]))
    if data.get("kind") == "bpe":
        return BPETokenizer.from_json(data["tokenizer"])
    raise DataError(f"unknown tokenizer kind {data.get('kind')!r}")


def parse_tokenizer(spec: str) -> tuple[str, int | None]:
    """``"char"`` -> ``("char", None)``; ``"bpe"`` or ``"bpe:N"`` -> ``("bpe", N)``."""
    kind, _, size = str(spec).strip().lower().partition(":")
    if kind == "char" and not size:
        return "char", None
    if kind == "bpe":
        try:
            vocab = int(size) if size else DEFAULT_BPE_VOCAB
        except ValueError:
            vocab = 0
        if vocab >= 257:  # the 256 bytes, and at least one merge
            return "bpe", vocab
        raise ConfigError(f"the BPE vocabulary size must be an integer >= 257, got {size!r}")
    raise ConfigError(f"unknown tokenizer {spec!r}: expected 'char', 'bpe' or 'bpe:SIZE'")


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise ConfigError(
            "the bpe tokenizer needs the tokenizers library: pip install 'forgetless[text]' "
            "(or use the character tokenizer, 'char')"
        ) from None
    return tokenizers


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


@dataclass(frozen=True)
class Corpus:
    """Tokenised domains: per domain, a training and a held-out token stream (1-D int64).

    Attributes:
        names: one name per domain, in stream order.
        train, test: the token streams, one per domain.
        tokenizer: what made the ids (``encode``, ``decode``, ``vocab``).
    """

    names: tuple[str, ...]
    train: tuple[torch.Tensor, ...]
    test: tuple[torch.Tensor, ...]
    tokenizer: Tokenizer

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def sequences(self, domain: int, split: str, length: int) -> ArraySet:
        """Domain ``domain``'s ``"train"`` or ``"test"`` stream cut into consecutive windows of
        ``length`` tokens: ``x[n] = ids[n*L : n*L + L]``, ``y[n] = ids[n*L + 1 : n*L + L + 1]``
        (every token but the first is a target exactly once). Views of one tensor: no copy."""
        if split not in ("train", "test"):
            raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
        if not isinstance(length, int) or isinstance(length, bool) or length < 1:
            raise ConfigError(f"sequence length must be a positive integer, got {length!r}")
        ids = (self.train if split == "train" else self.test)[domain]
        n = (len(ids) - 1) // length
        if n < 1:
            raise DataError(
                f"text domain {self.names[domain]!r} has {len(ids)} {split} tokens, fewer than "
                f"one sequence of {length} + 1; give it more text or use a shorter sequence "
                "length"
            )
        x = ids[: n * length].view(n, length)
        y = ids[1 : n * length + 1].view(n, length)
        return ArraySet(x, y)

    def __repr__(self) -> str:
        sizes = ", ".join(
            f"{n}: {len(a):,}+{len(b):,}"
            for n, a, b in zip(self.names, self.train, self.test, strict=True)
        )
        return f"Corpus({self.tokenizer.spec}, vocab={self.vocab_size}, tokens {sizes})"


def tokenize(
    domains: Sequence[TextDomain],
    tokenizer: str = "char",
    test_fraction: float = 0.1,
    cache: bool | str | Path = True,
) -> Corpus:
    """Tokenise ``domains`` into a :class:`Corpus`.

    Each document is split on its own: its first ``1 - test_fraction`` (up to the next line
    break) is training text, the rest held out; a domain's parts are joined in order.

    Args:
        domains: the domains, in stream order; the first is the general corpus.
        tokenizer: ``"char"`` (every character of all domains is a token), or ``"bpe"`` /
            ``"bpe:SIZE"`` (byte-level BPE with ``SIZE`` tokens, default 512, trained on the
            first domain's training text only, as a pretrained model's tokeniser would be).
        test_fraction: the share of each document held out, in ``(0, 1)``.
        cache: reuse and write the cache (``True``: ``cache_dir()/text``; or a folder).

    Raises:
        ConfigError: bad settings. DataError: empty domains, unknown characters.
    """
    kind, vocab_size = parse_tokenizer(tokenizer)
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if not domains:
        raise ConfigError("give at least one text domain")
    names = [d.name for d in domains]
    if len(set(names)) != len(names):
        raise ConfigError(f"text domain names must differ, got {names}")
    key = _cache_key(domains, f"{kind}:{vocab_size}", test_fraction)
    folder = _cache_folder(cache)
    if folder is not None:
        cached = _load_cached(folder, key, names)
        if cached is not None:
            return cached
    splits = [[_split(doc, test_fraction) for doc in d.documents] for d in domains]
    train_texts = [_join(part for part, _ in parts) for parts in splits]
    test_texts = [_join(part for _, part in parts) for parts in splits]
    if kind == "char":
        model: Tokenizer = CharTokenizer.fit(train_texts + test_texts)
    else:
        model = BPETokenizer.fit([train_texts[0]], vocab_size or DEFAULT_BPE_VOCAB)
    corpus = Corpus(
        tuple(names),
        tuple(model.encode(t) for t in train_texts),
        tuple(model.encode(t) for t in test_texts),
        model,
    )
    if folder is not None:
        _save_cached(folder, key, corpus)
    return corpus


def _split(document: str, test_fraction: float) -> tuple[str, str]:
    cut = int(len(document) * (1 - test_fraction))
    if cut > 0 and document[cut - 1] != "\n":  # the held-out part starts at a line
        newline = document.find("\n", cut)
        if 0 <= newline < len(document) - 1:
            cut = newline + 1
    return document[:cut], document[cut:]


def _join(parts) -> str:
    out: list[str] = []
    for part in parts:
        if out and not out[-1].endswith("\n"):
            out.append("\n")
        out.append(part)
    return "".join(out)


def _cache_key(domains: Sequence[TextDomain], tokenizer: str, test_fraction: float) -> str:
    content = {
        "format": _CACHE_FORMAT,
        "tokenizer": tokenizer,
        "test_fraction": test_fraction,
        "domains": [
            [d.name, [hashlib.sha256(doc.encode()).hexdigest() for doc in d.documents]]
            for d in domains
        ],
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _cache_folder(cache: bool | str | Path) -> Path | None:
    if cache is False:
        return None
    if cache is True:
        from forgetless.data.catalog import cache_dir

        return cache_dir() / "text"
    return Path(cache)


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].contiguous().numpy().tobytes())
    return digest.hexdigest()


def _save_cached(folder: Path, key: str, corpus: Corpus) -> None:
    from safetensors.torch import save_file

    tensors = {}
    for i in range(len(corpus.names)):
        # int32 on disk (half the size); ids are int64 in memory
        tensors[f"train.{i}"] = corpus.train[i].to(torch.int32)
        tensors[f"test.{i}"] = corpus.test[i].to(torch.int32)
    tensors["tokenizer"] = torch.frombuffer(
        bytearray(corpus.tokenizer.to_json().encode()), dtype=torch.uint8
    )
    meta = {"format": _CACHE_FORMAT, "key": key, "names": list(corpus.names)}
    meta["checksum"] = _checksum(tensors)
    path = folder / f"{key[:32]}.safetensors"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
        save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(meta)})
        os.replace(tmp, path)
        _evict(folder, keep=path)
    except OSError as err:  # a read-only cache is no reason to fail a run
        warnings.warn(f"could not write the text cache in {folder}: {err}", stacklevel=3)


def _load_cached(folder: Path, key: str, names: list[str]) -> Corpus | None:
    """The cached corpus for ``key``, or ``None`` when absent, or unreadable, corrupt or not
    what was asked (then it is rebuilt and rewritten)."""
    from safetensors import safe_open

    path = folder / f"{key[:32]}.safetensors"
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})[_META_KEY])
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        if meta.get("format") != _CACHE_FORMAT or meta.get("key") != key:
            raise DataError("it was made for other texts or settings")
        if meta.get("names") != names or _checksum(tensors) != meta.get("checksum"):
            raise DataError("its checksum does not match its content")
        tokenizer = tokenizer_from_json(bytes(tensors.pop("tokenizer").numpy()).decode())
        n = len(names)
        train = tuple(tensors[f"train.{i}"].to(torch.int64) for i in range(n))
        test = tuple(tensors[f"test.{i}"].to(torch.int64) for i in range(n))
        vocab = len(tokenizer)
        if any(len(t) and not 0 <= int(t.min()) <= int(t.max()) < vocab for t in train + test):
            raise DataError("its token ids fall outside its vocabulary")
    except Exception as err:  # safetensors, json and key errors alike: rebuild
        warnings.warn(f"ignoring the text cache file {path}: {err}", stacklevel=3)
        return None
    os.utime(path)  # recently used: evicted last
    return Corpus(tuple(names), train, test, tokenizer)


def _evict(folder: Path, keep: Path) -> None:
    """Delete the least recently used cache files until the folder fits in
    :data:`CACHE_LIMIT_BYTES`."""
    limit = CACHE_LIMIT_BYTES
    files = sorted(folder.glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
    total = sum(p.stat().st_size for p in files)
    for path in files:
        if total <= limit:
            break
        if path != keep:
            total -= path.stat().st_size
            path.unlink(missing_ok=True)
