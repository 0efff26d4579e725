"""Downloading IDX data sets, tested against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import socket
import struct
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from forgetless.data import catalog
from forgetless.data.catalog import FILE_NAMES, IDX_SOURCES, IdxFile, IdxSourceSpec
from forgetless.data.fetch import fetch
from forgetless.errors import DataError


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def tiny_contents(seed: int = 0) -> dict[str, bytes]:
    """Uncompressed IDX content of a tiny data set (20 train, 10 test), by file name."""
    rng = np.random.default_rng(seed)
    arrays = (
        rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        np.arange(20, dtype=np.uint8) % 10,
        rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        np.arange(10, dtype=np.uint8),
    )
    return {name: idx_bytes(a) for name, a in zip(FILE_NAMES, arrays, strict=True)}


class Server:
    """A local HTTP server over a folder, counting GET requests per path."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.requests: list[str] = []
        handler = functools.partial(_Handler, self, directory=str(folder))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        serve = functools.partial(self.httpd.serve_forever, poll_interval=0.05)
        self.thread = threading.Thread(target=serve, daemon=True)

    def serve(self, contents: dict[str, bytes]) -> None:
        for name, data in contents.items():
            (self.folder / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))


class _Handler(SimpleHTTPRequestHandler):
    def __init__(self, server: Server, *args, **kwargs) -> None:
        self.counter = server
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        self.counter.requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args) -> None:  # keep test output quiet
        pass


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    folder = tmp_path / "served"
    folder.mkdir()
    srv = Server(folder)
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()
    srv.thread.join(timeout=5)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(catalog.DATA_ENV, raising=False)
    monkeypatch.setenv(catalog.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(catalog, "SYSTEM_DIRS", (tmp_path / "system",))
    catalog.clear_load_cache()


def install_spec(
    monkeypatch: pytest.MonkeyPatch, base_url: str, files: tuple[IdxFile, ...]
) -> IdxSourceSpec:
    spec = IdxSourceSpec(
        name="tiny",
        title="tiny",
        base_url=base_url,
        files=files,
        class_names=tuple(str(i) for i in range(10)),
        citation="test",
        train_count=20,
        test_count=10,
    )
    monkeypatch.setitem(IDX_SOURCES, "tiny", spec)
    return spec


def sha_pins(contents: dict[str, bytes]) -> tuple[IdxFile, ...]:
    return tuple(IdxFile(n, hashlib.sha256(contents[n]).hexdigest()) for n in FILE_NAMES)


def test_fetch_downloads_verifies_and_caches(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    contents = tiny_contents()
    server.serve(contents)
    install_spec(monkeypatch, server.url, sha_pins(contents))
    folder = fetch("tiny", progress=False)
    assert folder == tmp_path / "cache" / "tiny"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.gz" for n in FILE_NAMES)
    assert sorted(server.requests) == sorted(f"/{n}.gz" for n in FILE_NAMES)
    data = catalog.load_idx_source("tiny")
    assert catalog.locate("tiny").origin == "cache"
    assert (len(data.train), len(data.test)) == (20, 10)

    fetch("tiny", progress=False)
    assert len(server.requests) == 4, "valid cached files must not be downloaded again"
    fetch("tiny", progress=True, force=True)
    assert len(server.requests) == 8
    assert f"tiny: downloading {server.url}{FILE_NAMES[0]}.gz" in capsys.readouterr().err


def test_fetch_uses_base_url_and_cache_dir_arguments(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    contents = tiny_contents(1)
    server.serve(contents)
    install_spec(monkeypatch, "http://127.0.0.1:9/never/", sha_pins(contents))
    folder = fetch("tiny", cache_dir=tmp_path / "elsewhere", progress=False, base_url=server.url)
    assert folder == tmp_path / "elsewhere" / "tiny"
    assert len(catalog.load_idx_source("tiny", data_dir=tmp_path / "elsewhere").train) == 20


def test_wrong_content_is_rejected_and_deleted(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_spec(monkeypatch, server.url, sha_pins(tiny_contents(0)))
    served = tiny_contents(0)
    served[FILE_NAMES[2]] = tiny_contents(7)[FILE_NAMES[2]]
    server.serve(served)
    with pytest.raises(DataError) as err:
        fetch("tiny", progress=False)
    message = str(err.value)
    url = f"{server.url}{FILE_NAMES[2]}.gz"
    assert url in message and f"{FILE_NAMES[2]}.gz" in message
    assert hashlib.sha256(tiny_contents(0)[FILE_NAMES[2]]).hexdigest() in message
    assert hashlib.sha256(served[FILE_NAMES[2]]).hexdigest() in message
    left = {p.name for p in (tmp_path / "cache" / "tiny").iterdir()}
    assert left == {f"{FILE_NAMES[0]}.gz", f"{FILE_NAMES[1]}.gz"}, "no bad or partial file"


def test_corrupt_gzip_download_is_rejected(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    contents = tiny_contents()
    install_spec(monkeypatch, server.url, sha_pins(contents))
    server.serve(contents)
    bad = server.folder / f"{FILE_NAMES[0]}.gz"
    bad.write_bytes(bad.read_bytes()[:-40])
    with pytest.raises(DataError, match="corrupt gzip stream") as err:
        fetch("tiny", progress=False)
    assert f"{server.url}{FILE_NAMES[0]}.gz" in str(err.value)
    assert not any((tmp_path / "cache" / "tiny").iterdir())


def test_damaged_cached_file_is_downloaded_again(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    contents = tiny_contents()
    server.serve(contents)
    install_spec(monkeypatch, server.url, sha_pins(contents))
    folder = fetch("tiny", progress=False)
    (folder / f"{FILE_NAMES[1]}.gz").write_bytes(b"not gzip, not idx")
    (folder / FILE_NAMES[3]).write_bytes(contents[FILE_NAMES[3]] + b"x")  # bad raw copy
    fetch("tiny", progress=False)
    # The bad raw copy is deleted (it would shadow the .gz); the valid .gz next to it is kept.
    assert server.requests[4:] == [f"/{FILE_NAMES[1]}.gz"]
    assert not (folder / FILE_NAMES[3]).exists()
    assert len(catalog.load_idx_source("tiny").train) == 20


def test_gz_md5_pins_are_checked(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    contents = tiny_contents()
    server.serve(contents)
    md5 = {n: hashlib.md5((server.folder / f"{n}.gz").read_bytes()).hexdigest() for n in FILE_NAMES}
    install_spec(monkeypatch, server.url, tuple(IdxFile(n, gz_md5=md5[n]) for n in FILE_NAMES))
    fetch("tiny", progress=False)
    assert len(server.requests) == 4

    wrong = "0" * 32
    files = tuple(IdxFile(n, gz_md5=wrong if i == 1 else md5[n]) for i, n in enumerate(FILE_NAMES))
    install_spec(monkeypatch, server.url, files)
    with pytest.raises(DataError, match=r"md5 of the \.gz") as err:
        fetch("tiny", cache_dir=tmp_path / "other", progress=False)
    assert wrong in str(err.value) and md5[FILE_NAMES[1]] in str(err.value)
    assert not (tmp_path / "other" / "tiny" / f"{FILE_NAMES[1]}.gz").exists()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_gives_offline_advice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    url = f"http://127.0.0.1:{_closed_port()}/"
    install_spec(monkeypatch, url, sha_pins(tiny_contents()))
    with pytest.raises(DataError, match="download failed") as err:
        fetch("tiny", progress=False)
    message = str(err.value)
    assert f"{url}{FILE_NAMES[0]}.gz" in message
    assert "--data-dir" in message and "FORGETLESS_DATA" in message
    assert not any((tmp_path / "cache" / "tiny").iterdir())


def test_missing_file_on_server_is_a_download_failure(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_spec(monkeypatch, server.url, sha_pins(tiny_contents()))
    with pytest.raises(DataError, match=r"download failed(.|\n)*404"):
        fetch("tiny", progress=False)


def test_real_catalog_urls_are_pinned() -> None:
    spec = IDX_SOURCES["kmnist"]
    assert spec.base_url == "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"
    assert dataclasses.replace(spec).files[0].gz_md5 == "bdb82020997e1d708af4cf47b453dcf7"
    assert IDX_SOURCES["mnist"].base_url == "https://ossci-datasets.s3.amazonaws.com/mnist/"
