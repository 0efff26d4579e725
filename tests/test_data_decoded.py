"""The decoded cache of gzip IDX files: the same arrays as decompressing, and any damaged,
stale or tampered entry falls back to the source and is rebuilt. Small IDX files written
here; no real data."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from forgetless.data import catalog, decoded, idx
from forgetless.data.catalog import FILE_NAMES, IdxFile, IdxSourceSpec
from forgetless.data.idx import read_idx, read_idx_with_hash


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture(autouse=True)
def every_size_cached(monkeypatch):
    # The files here are small; the threshold only saves work on large ones.
    monkeypatch.setattr(decoded, "MIN_CACHED_BYTES", 0)
    monkeypatch.delenv(decoded.CACHE_SWITCH_ENV, raising=False)


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A gzip IDX file of 40 random 28x28 images, and the array it holds."""
    array = np.random.default_rng(0).integers(0, 256, (40, 28, 28), dtype=np.uint8)
    path = tmp_path / "data" / "train-images-idx3-ubyte.gz"
    path.parent.mkdir()
    path.write_bytes(gzip.compress(idx_bytes(array), mtime=0))
    return path, array


def gzip_unread(monkeypatch) -> None:
    """Make decompressing fail, so a read that succeeds came from the cache."""

    def refuse(path):
        raise AssertionError(f"{path} was decompressed")

    monkeypatch.setattr(idx, "read_idx_bytes", refuse)


def entry(cache: Path, source: Path) -> Path:
    return decoded.entry_path(cache, source)


def test_cached_read_gives_the_same_array_and_hash_as_decompressing(tmp_path, images, monkeypatch):
    source, array = images
    cache = tmp_path / "cache"
    plain, plain_hash = read_idx_with_hash(source)
    first, first_hash = read_idx_with_hash(source, cache)
    assert entry(cache, source).is_file()
    gzip_unread(monkeypatch)
    second, second_hash = read_idx_with_hash(source, cache)
    for out in (plain, first, second):
        assert out.dtype == np.uint8 and out.shape == (40, 28, 28) and out.flags.writeable
        np.testing.assert_array_equal(out, array)
    assert out.tobytes() == plain.tobytes()
    assert plain_hash == first_hash == second_hash == hashlib.sha256(idx_bytes(array)).hexdigest()
    second[0, 0, 0] ^= 1  # writable and its own: the next read is unaffected
    np.testing.assert_array_equal(read_idx_with_hash(source, cache)[0], array)


def damage_flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))


def damage_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def damage_header_only(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:20])


def damage_longer(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"\x00" * 7)


def damage_magic(path: Path) -> None:
    path.write_bytes(b"\x80\x04pickle" + path.read_bytes()[10:])


def damage_huge_length(path: Path) -> None:
    # A header announcing 2**40 bytes: refused from the header, nothing that size allocated.
    data = bytearray(path.read_bytes())
    offset = struct.calcsize("<8sQQqq")
    data[offset : offset + 8] = struct.pack("<Q", 2**40)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    [
        damage_flip,
        damage_truncate,
        damage_header_only,
        damage_longer,
        damage_magic,
        damage_huge_length,
    ],
)
def test_a_damaged_entry_falls_back_to_the_source_and_is_rebuilt(
    tmp_path, images, monkeypatch, damage
):
    source, array = images
    cache = tmp_path / "cache"
    read_idx_with_hash(source, cache)
    damage(entry(cache, source))
    with pytest.warns(UserWarning, match="ignoring the decoded IDX cache entry"):
        out, digest = read_idx_with_hash(source, cache)
    np.testing.assert_array_equal(out, array)
    assert digest == hashlib.sha256(idx_bytes(array)).hexdigest()
    gzip_unread(monkeypatch)  # rebuilt: the next read takes it, without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(read_idx_with_hash(source, cache)[0], array)


def tamper(path: Path, content: bytes) -> None:
    """Replace an entry's content by ``content``, with a matching length and checksum."""
    head = bytearray(path.read_bytes()[: decoded._HEADER.size])
    fields = list(decoded._HEADER.unpack(bytes(head)))
    fields[-2], fields[-1] = len(content), hashlib.sha256(content).digest()
    path.write_bytes(decoded._HEADER.pack(*fields) + content)


def test_a_tampered_entry_with_a_valid_checksum_cannot_replace_pinned_data(tmp_path, images):
    source, array = images
    cache = tmp_path / "cache"
    pinned = hashlib.sha256(idx_bytes(array)).hexdigest()
    read_idx_with_hash(source, cache, pinned)
    tamper(entry(cache, source), idx_bytes(255 - array))
    with pytest.warns(UserWarning, match="not the pinned data"):
        out, digest = read_idx_with_hash(source, cache, pinned)
    np.testing.assert_array_equal(out, array)
    assert digest == pinned
    # Rebuilt from the source: the pinned content again.
    assert read_idx_with_hash(source, cache, pinned)[1] == pinned


def test_an_entry_that_is_not_idx_falls_back(tmp_path, images):
    source, array = images
    cache = tmp_path / "cache"
    read_idx_with_hash(source, cache)
    # A valid checksum over an IDX header announcing 40x28x28 bytes, then only 10 of them.
    tamper(entry(cache, source), b"\x00\x00\x08\x03" + struct.pack(">3I", 40, 28, 28) + bytes(10))
    with pytest.warns(UserWarning, match="truncated IDX file"):
        np.testing.assert_array_equal(read_idx_with_hash(source, cache)[0], array)


def test_a_rewritten_source_misses_its_entry(tmp_path, images):
    source, array = images
    cache = tmp_path / "cache"
    read_idx_with_hash(source, cache)
    stat = source.stat()
    other = (array + 1).astype(np.uint8)
    source.write_bytes(gzip.compress(idx_bytes(other), mtime=0))  # same size, same name
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old mtime
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a stale entry is rebuilt quietly
        out, digest = read_idx_with_hash(source, cache)
    np.testing.assert_array_equal(out, other)
    assert digest == hashlib.sha256(idx_bytes(other)).hexdigest()
    np.testing.assert_array_equal(read_idx_with_hash(source, cache)[0], other)


def test_raw_and_small_files_and_a_switched_off_cache_write_nothing(tmp_path, images, monkeypatch):
    source, array = images
    raw = source.with_name("raw-idx3-ubyte")
    raw.write_bytes(idx_bytes(array))
    cache = tmp_path / "cache"
    np.testing.assert_array_equal(read_idx_with_hash(raw, cache)[0], array)
    assert not cache.exists()  # an uncompressed file is read as it is
    monkeypatch.setattr(decoded, "MIN_CACHED_BYTES", len(idx_bytes(array)) + 1)
    read_idx_with_hash(source, cache)
    assert not cache.exists()
    monkeypatch.setattr(decoded, "MIN_CACHED_BYTES", 0)
    monkeypatch.setenv(decoded.CACHE_SWITCH_ENV, "0")
    monkeypatch.setenv(catalog.CACHE_ENV, str(cache))
    assert catalog.decoded_cache_dir() is None
    monkeypatch.setenv(decoded.CACHE_SWITCH_ENV, "1")
    assert catalog.decoded_cache_dir() == cache / "decoded"


def test_an_unwritable_cache_only_warns(tmp_path, images):
    source, array = images
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with pytest.warns(UserWarning, match="could not write the decoded IDX cache"):
        out, _ = read_idx_with_hash(source, blocked / "cache")
    np.testing.assert_array_equal(out, array)
    assert list(tmp_path.glob("**/*.part")) == []


def test_the_folder_keeps_under_its_limit_dropping_the_least_recent(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    sources = []
    for i in range(3):
        path = tmp_path / f"f{i}.gz"
        path.write_bytes(gzip.compress(idx_bytes(np.full((10, 28, 28), i, np.uint8)), mtime=0))
        sources.append(path)
    size = len(idx_bytes(np.zeros((10, 28, 28), np.uint8))) + decoded._HEADER.size
    monkeypatch.setattr(decoded, "CACHE_LIMIT_BYTES", 2 * size)
    for i, path in enumerate(sources):
        read_idx_with_hash(path, cache)
        os.utime(entry(cache, path), (1000 + i, 1000 + i))  # written in this order
    # The third write evicted the oldest entry (the first file's).
    assert [entry(cache, p).is_file() for p in sources] == [False, True, True]
    assert read_idx(sources[0])[0, 0, 0] == 0


def tiny_spec(tmp: Path, arrays: dict[str, np.ndarray]) -> IdxSourceSpec:
    files = tuple(IdxFile(n, hashlib.sha256(idx_bytes(arrays[n])).hexdigest()) for n in FILE_NAMES)
    return IdxSourceSpec(
        name="tiny",
        title="tiny test set",
        base_url="http://127.0.0.1:9/",
        files=files,
        class_names=tuple(f"c{i}" for i in range(10)),
        citation="test",
        train_count=30,
        test_count=12,
    )


def test_a_data_set_loads_the_same_from_the_cache(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    arrays = {
        FILE_NAMES[0]: rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        FILE_NAMES[1]: (np.arange(30) % 10).astype(np.uint8),
        FILE_NAMES[2]: rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        FILE_NAMES[3]: (np.arange(12) % 10).astype(np.uint8),
    }
    folder = tmp_path / "tiny"
    folder.mkdir()
    for name, array in arrays.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(array), mtime=0))
    spec = tiny_spec(tmp_path, arrays)
    monkeypatch.setitem(catalog.IDX_SOURCES, "tiny", spec)
    monkeypatch.setenv(catalog.CACHE_ENV, str(tmp_path / "cache"))
    catalog.clear_load_cache()
    first = catalog.load_idx_source("tiny", tmp_path)
    assert len(list((tmp_path / "cache" / "decoded").glob("*.idx"))) == 4
    catalog.clear_load_cache()
    gzip_unread(monkeypatch)
    second = catalog.load_idx_source("tiny", tmp_path)
    catalog.clear_load_cache()
    for a, b in ((first.train, second.train), (first.test, second.test)):
        assert a.x.dtype == b.x.dtype and a.x.shape == b.x.shape and a.scale == b.scale
        assert a.x.numpy().tobytes() == b.x.numpy().tobytes()
        assert a.y.tolist() == b.y.tolist()
    np.testing.assert_array_equal(second.train.x.numpy()[:, 0], arrays[FILE_NAMES[0]])
