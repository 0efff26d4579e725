"""IDX reading and the MNIST-family catalog: small IDX files written here, no network."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from forgetless.data import catalog
from forgetless.data.catalog import (
    FILE_NAMES,
    IDX_SOURCES,
    IdxFile,
    IdxSourceSpec,
    load_idx_source,
    locate,
    source_status,
)
from forgetless.data.idx import parse_idx, read_idx, read_idx_with_hash
from forgetless.errors import ConfigError, DataError

N_TRAIN, N_TEST = 30, 12


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """``array`` encoded as an IDX file (big-endian elements)."""
    dtype = {0x08: ">u1", 0x0C: ">i4", 0x0D: ">f4"}[type_code]
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def make_arrays(seed: int) -> dict[str, np.ndarray]:
    """The four arrays of a tiny data set, keyed by IDX file name."""
    rng = np.random.default_rng(seed)
    return {
        FILE_NAMES[0]: rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        FILE_NAMES[1]: np.arange(N_TRAIN, dtype=np.uint8) % 10,
        FILE_NAMES[2]: rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        FILE_NAMES[3]: rng.permutation(N_TEST).astype(np.uint8) % 10,
    }


def write_set(folder: Path, seed: int = 0, gz: bool | tuple[bool, ...] = False) -> dict:
    """Write a tiny data set into ``folder``; returns its arrays keyed by file name."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = make_arrays(seed)
    flags = gz if isinstance(gz, tuple) else (gz,) * 4
    for (name, array), compress in zip(arrays.items(), flags, strict=True):
        data = idx_bytes(array)
        if compress:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (folder / name).write_bytes(data)
    return arrays


def pinned_files(seed: int = 0) -> tuple[IdxFile, ...]:
    """File entries pinned to the uncompressed sha256 of the set written with ``seed``."""
    return tuple(
        IdxFile(name, hashlib.sha256(idx_bytes(a)).hexdigest())
        for name, a in make_arrays(seed).items()
    )


def tiny_spec(files: tuple[IdxFile, ...] | None = None, **changes) -> IdxSourceSpec:
    spec = IdxSourceSpec(
        name="tiny",
        title="tiny test set",
        base_url="http://127.0.0.1:9/",
        files=files or tuple(IdxFile(n) for n in FILE_NAMES),
        class_names=tuple(f"c{i}" for i in range(10)),
        citation="test",
        train_count=N_TRAIN,
        test_count=N_TEST,
    )
    return dataclasses.replace(spec, **changes)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No real data folders: empty cache and system folders under tmp_path, no env override."""
    monkeypatch.delenv(catalog.DATA_ENV, raising=False)
    monkeypatch.setenv(catalog.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(catalog, "SYSTEM_DIRS", (tmp_path / "system",))
    catalog.clear_load_cache()
    yield
    catalog.clear_load_cache()


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch) -> IdxSourceSpec:
    """A ``tiny`` catalog entry pinned to the hashes of the seed-0 set."""
    spec = tiny_spec(pinned_files(0))
    monkeypatch.setitem(IDX_SOURCES, "tiny", spec)
    return spec


@pytest.fixture
def unpinned(monkeypatch: pytest.MonkeyPatch) -> IdxSourceSpec:
    """A ``tiny`` catalog entry with no hashes (structure checks only, like local KMNIST)."""
    spec = tiny_spec()
    monkeypatch.setitem(IDX_SOURCES, "tiny", spec)
    return spec


# --- read_idx -----------------------------------------------------------------------------


def test_read_idx_round_trips_raw_and_gzip(tmp_path: Path) -> None:
    array = make_arrays(1)[FILE_NAMES[0]]
    (tmp_path / "raw").write_bytes(idx_bytes(array))
    (tmp_path / "raw.gz").write_bytes(gzip.compress(idx_bytes(array)))
    for name in ("raw", "raw.gz"):
        out = read_idx(tmp_path / name)
        assert out.dtype == np.uint8 and out.shape == (N_TRAIN, 28, 28)
        np.testing.assert_array_equal(out, array)
        assert out.flags.writeable


def test_gzip_is_detected_by_magic_bytes_not_suffix(tmp_path: Path) -> None:
    labels = np.arange(10, dtype=np.uint8)
    (tmp_path / "compressed-without-suffix").write_bytes(gzip.compress(idx_bytes(labels)))
    (tmp_path / "raw-with-suffix.gz").write_bytes(idx_bytes(labels))
    np.testing.assert_array_equal(read_idx(tmp_path / "compressed-without-suffix"), labels)
    np.testing.assert_array_equal(read_idx(tmp_path / "raw-with-suffix.gz"), labels)


@pytest.mark.parametrize(("code", "dtype"), [(0x0C, np.int32), (0x0D, np.float32)])
def test_read_idx_multibyte_types_come_back_native_endian(code: int, dtype: type) -> None:
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    out = parse_idx(idx_bytes(array, code))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_hash_is_of_uncompressed_content(tmp_path: Path) -> None:
    data = idx_bytes(make_arrays(2)[FILE_NAMES[2]])
    (tmp_path / "a").write_bytes(data)
    (tmp_path / "b.gz").write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    (tmp_path / "c.gz").write_bytes(gzip.compress(data, compresslevel=1, mtime=12345))
    hashes = {read_idx_with_hash(tmp_path / n)[1] for n in ("a", "b.gz", "c.gz")}
    assert hashes == {hashlib.sha256(data).hexdigest()}


def _good_labels() -> bytes:
    return idx_bytes(np.arange(20, dtype=np.uint8) % 10)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty"),
        (b"\x00\x00", "only 2 bytes"),
        (_good_labels()[:6], "truncated"),
        (_good_labels()[:-3], "truncated"),
        (_good_labels() + b"junk", "trailing garbage"),
        (b"\x12\x34" + _good_labels()[2:], "wrong magic number"),
        (b"\x00\x00\x07" + _good_labels()[3:], "unknown IDX type code 0x07"),
        (b"\x00\x00\x08\x00", "zero dimensions"),
    ],
    ids=["empty", "tiny", "header-cut", "data-cut", "garbage", "magic", "type", "ndim"],
)
def test_bad_idx_files_raise_dataerror_naming_file_and_problem(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    for path, data in ((tmp_path / "f-idx1-ubyte", content), (tmp_path / "g.gz", content)):
        path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
        with pytest.raises(DataError) as err:
            read_idx(path)
        assert str(path) in str(err.value) and problem in str(err.value)


@pytest.mark.parametrize("damage", ["flip", "cut"])
def test_corrupt_gzip_raises_dataerror(tmp_path: Path, damage: str) -> None:
    packed = bytearray(gzip.compress(idx_bytes(make_arrays(3)[FILE_NAMES[0]])))
    if damage == "flip":
        packed[len(packed) // 2 : len(packed) // 2 + 64] = bytes(64)
    else:
        del packed[len(packed) // 2 :]
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(bytes(packed))
    with pytest.raises(DataError, match="corrupt gzip stream") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_unreadable_file_raises_dataerror(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "missing")


# --- load_idx_source ----------------------------------------------------------------------


def _assert_matches(data, arrays: dict) -> None:
    assert data.train.x.shape == (N_TRAIN, 1, 28, 28) and data.train.x.dtype == torch.uint8
    assert data.test.x.shape == (N_TEST, 1, 28, 28) and data.test.x.dtype == torch.uint8
    assert data.train.y.dtype == torch.int64 and data.test.y.dtype == torch.int64
    assert data.train.scale == pytest.approx(1 / 255)
    np.testing.assert_array_equal(data.train.x[:, 0].numpy(), arrays[FILE_NAMES[0]])
    np.testing.assert_array_equal(data.train.y.numpy(), arrays[FILE_NAMES[1]])
    np.testing.assert_array_equal(data.test.x[:, 0].numpy(), arrays[FILE_NAMES[2]])
    np.testing.assert_array_equal(data.test.y.numpy(), arrays[FILE_NAMES[3]])


@pytest.mark.parametrize("gz", [False, True, (True, False, False, True)], ids=["raw", "gz", "mix"])
@pytest.mark.parametrize("nested", [True, False], ids=["data_dir/name", "data_dir"])
def test_load_round_trips_exactly(
    tmp_path: Path, pinned: IdxSourceSpec, gz: bool | tuple, nested: bool
) -> None:
    root = tmp_path / "mine"
    arrays = write_set(root / "tiny" if nested else root, gz=gz)
    data = load_idx_source("tiny", data_dir=root)
    _assert_matches(data, arrays)
    assert data.name == "tiny" and data.class_names == pinned.class_names
    assert locate("tiny", root).origin == "--data-dir"


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unpinned) -> None:
    places = {
        "--data-dir": tmp_path / "given",
        "FORGETLESS_DATA": tmp_path / "env",
        "cache": tmp_path / "cache" / "tiny",
        "system": tmp_path / "system" / "tiny",
    }
    arrays = {
        origin: write_set(folder, seed=i) for i, (origin, folder) in enumerate(places.items())
    }
    monkeypatch.setenv("FORGETLESS_DATA", str(tmp_path / "env"))
    for origin, folder in places.items():
        data_dir = places["--data-dir"] if origin == "--data-dir" else None
        location = locate("tiny", data_dir)
        assert (location.origin, location.folder) == (origin, folder)
        _assert_matches(load_idx_source("tiny", data_dir), arrays[origin])
        if origin == "FORGETLESS_DATA":
            monkeypatch.delenv("FORGETLESS_DATA")
        elif origin != "--data-dir":
            for f in folder.iterdir():
                f.unlink()
    assert locate("tiny") is None


def test_incomplete_folder_is_skipped(tmp_path: Path, unpinned) -> None:
    write_set(tmp_path / "given")
    (tmp_path / "given" / FILE_NAMES[3]).unlink()
    arrays = write_set(tmp_path / "cache" / "tiny", seed=5)
    assert locate("tiny", tmp_path / "given").origin == "cache"
    _assert_matches(load_idx_source("tiny", tmp_path / "given"), arrays)


def test_recompressed_gzip_passes_pinned_hash(tmp_path: Path, pinned) -> None:
    arrays = make_arrays(0)
    folder = tmp_path / "d"
    folder.mkdir()
    for name, array in arrays.items():
        packed = gzip.compress(idx_bytes(array), compresslevel=1, mtime=987654321)
        (folder / f"{name}.gz").write_bytes(packed)
    _assert_matches(load_idx_source("tiny", folder), arrays)


def test_hash_mismatch_names_file_hashes_and_fix(tmp_path: Path, pinned) -> None:
    write_set(tmp_path / "d", seed=0)
    bad = idx_bytes(make_arrays(9)[FILE_NAMES[2]])
    (tmp_path / "d" / FILE_NAMES[2]).write_bytes(bad)
    with pytest.raises(DataError) as err:
        load_idx_source("tiny", tmp_path / "d")
    message = str(err.value)
    assert str(tmp_path / "d" / FILE_NAMES[2]) in message
    assert pinned.files[2].sha256 in message and hashlib.sha256(bad).hexdigest() in message
    assert "forgetless data fetch tiny --force" in message and "--data-dir" in message
    assert f"found via --data-dir in {tmp_path / 'd'}" in message
    # verify=False skips the pins (structure is still checked).
    assert len(load_idx_source("tiny", tmp_path / "d", verify=False).test) == N_TEST


def test_image_label_count_mismatch(tmp_path: Path, unpinned) -> None:
    write_set(tmp_path / "d")
    labels = tmp_path / "d" / FILE_NAMES[1]
    labels.write_bytes(idx_bytes(np.zeros(N_TRAIN - 1, dtype=np.uint8)))
    with pytest.raises(DataError, match="count mismatch") as err:
        load_idx_source("tiny", tmp_path / "d", verify=False)
    message = str(err.value)
    assert str(tmp_path / "d" / FILE_NAMES[0]) in message and str(labels) in message
    assert f"{N_TRAIN} images" in message and f"{N_TRAIN - 1} labels" in message


def test_unexpected_count_is_checked_when_verifying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(IDX_SOURCES, "tiny", tiny_spec(train_count=60000))
    write_set(tmp_path / "d")
    with pytest.raises(DataError, match="holds 30 images, but tiny has 60000"):
        load_idx_source("tiny", tmp_path / "d")
    assert len(load_idx_source("tiny", tmp_path / "d", verify=False).train) == N_TRAIN


@pytest.mark.parametrize(
    ("name", "array", "problem"),
    [
        (FILE_NAMES[0], np.zeros((N_TRAIN, 28, 27), np.uint8), "expected [N, 28x28] uint8"),
        (FILE_NAMES[0], np.zeros((N_TRAIN, 784), np.uint8), "expected [N, 28x28] uint8"),
        (FILE_NAMES[1], np.zeros((N_TRAIN, 2), np.uint8), "expected a 1-D array"),
        (FILE_NAMES[1], np.full(N_TRAIN, 10, np.uint8), "labels range over 10..10"),
    ],
    ids=["width", "flat", "labels-2d", "label-range"],
)
def test_structure_errors(
    tmp_path: Path, unpinned, name: str, array: np.ndarray, problem: str
) -> None:
    write_set(tmp_path / "d")
    (tmp_path / "d" / name).write_bytes(idx_bytes(array))
    with pytest.raises(DataError) as err:
        load_idx_source("tiny", tmp_path / "d", verify=False)
    assert str(tmp_path / "d" / name) in str(err.value) and problem in str(err.value)


def test_corrupt_file_in_source_names_it(tmp_path: Path, unpinned) -> None:
    write_set(tmp_path / "d", gz=True)
    path = tmp_path / "d" / f"{FILE_NAMES[3]}.gz"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="corrupt gzip") as err:
        load_idx_source("tiny", tmp_path / "d")
    assert str(path) in str(err.value)


def test_not_found_lists_places_and_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unpinned
) -> None:
    (tmp_path / "given").mkdir()
    write_set(tmp_path / "given")
    (tmp_path / "given" / FILE_NAMES[0]).unlink()
    with pytest.raises(DataError) as err:
        load_idx_source("tiny", tmp_path / "given")
    message = str(err.value)
    for place in (
        tmp_path / "given" / "tiny",
        tmp_path / "given",
        tmp_path / "cache" / "tiny",
        tmp_path / "system" / "tiny",
    ):
        assert str(place) in message
    assert f"missing {FILE_NAMES[0]})" in message
    assert "FORGETLESS_DATA  (not set)" in message
    assert "forgetless data fetch tiny" in message
    assert all(name in message for name in FILE_NAMES)
    monkeypatch.setenv("FORGETLESS_DATA", str(tmp_path / "env"))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist") as err:
        load_idx_source("fashion-mnist")
    assert str(tmp_path / "env" / "fashion-mnist") in str(err.value)


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'fashion-mnist'") as err:
        load_idx_source("fashon-mnist")
    assert "kmnist" in str(err.value) and "mnist" in str(err.value)
    assert catalog.get_spec("Fashion_MNIST").name == "fashion-mnist"


def test_loads_are_cached_until_a_file_changes(tmp_path: Path, unpinned) -> None:
    write_set(tmp_path / "d", seed=0)
    first = load_idx_source("tiny", tmp_path / "d")
    assert load_idx_source("tiny", tmp_path / "d") is first
    fresh = make_arrays(4)
    replacement = tmp_path / "new"
    replacement.write_bytes(idx_bytes(fresh[FILE_NAMES[0]]))
    os.replace(replacement, tmp_path / "d" / FILE_NAMES[0])
    second = load_idx_source("tiny", tmp_path / "d")
    np.testing.assert_array_equal(second.train.x[:, 0].numpy(), fresh[FILE_NAMES[0]])


def test_source_status(tmp_path: Path) -> None:
    write_set(tmp_path / "given" / "mnist")
    statuses = {s.name: s for s in source_status(tmp_path / "given")}
    assert list(statuses) == [*IDX_SOURCES, "shakespeare"]  # the text source comes last
    assert statuses["mnist"].found and statuses["mnist"].location.origin == "--data-dir"
    assert str(tmp_path / "given" / "mnist") in statuses["mnist"].hint
    assert not statuses["kmnist"].found
    assert "forgetless data fetch kmnist" in statuses["kmnist"].hint
    assert "apt-get install dataset-fashion-mnist" in statuses["fashion-mnist"].hint


def test_catalog_pins() -> None:
    assert set(IDX_SOURCES) == {"mnist", "fashion-mnist", "kmnist"}
    for spec in IDX_SOURCES.values():
        assert tuple(f.name for f in spec.files) == FILE_NAMES
        assert len(spec.class_names) == 10 and spec.base_url.endswith("/")
    for name in ("mnist", "fashion-mnist"):
        assert all(len(f.sha256 or "") == 64 for f in IDX_SOURCES[name].files)
    assert all(len(f.gz_md5 or "") == 32 for f in IDX_SOURCES["kmnist"].files)
    assert IDX_SOURCES["fashion-mnist"].class_names[0] == "T-shirt/top"
    assert IDX_SOURCES["kmnist"].class_names[-1] == "wo"


# --- the real Fashion-MNIST, where the system has it ---------------------------------------

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_real_fashion_mnist_from_system_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    if not all(catalog.find_file(DEBIAN_FASHION, n) for n in FILE_NAMES):
        pytest.skip(f"{DEBIAN_FASHION} not present (apt-get install dataset-fashion-mnist)")
    monkeypatch.setattr(catalog, "SYSTEM_DIRS", (DEBIAN_FASHION.parent,))
    location = locate("fashion-mnist")
    assert location.origin == "system" and location.folder == DEBIAN_FASHION
    start = time.perf_counter()
    data = load_idx_source("fashion-mnist")  # verify=True: the pinned sha256 must match
    elapsed = time.perf_counter() - start
    assert (len(data.train), len(data.test)) == (60000, 10000)
    assert data.train.x.shape == (60000, 1, 28, 28) and data.train.x.dtype == torch.uint8
    assert data.class_names == IDX_SOURCES["fashion-mnist"].class_names
    assert torch.equal(data.train.y.bincount(), torch.full((10,), 6000))
    assert torch.equal(data.test.y.bincount(), torch.full((10,), 1000))
    assert elapsed < 10, f"loading took {elapsed:.1f} s: something is reading per sample"
