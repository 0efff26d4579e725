"""Downloading the known IDX data sets into the cache, each file checked against its pin."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pooch
import requests

from forgetless.data import catalog
from forgetless.data.catalog import DATA_ENV, FILE_NAMES, IdxFile, IdxSourceSpec, get_spec
from forgetless.data.idx import parse_idx, read_idx_bytes, sha256_hex
from forgetless.errors import DataError

DOWNLOAD_TIMEOUT_S = 60


def fetch(
    name: str,
    cache_dir: Path | str | None = None,
    force: bool = False,
    progress: bool = True,
    base_url: str | None = None,
) -> Path:
    """Download the four files of IDX data set ``name`` into ``cache_dir/<name>/``.

    Files already there and valid are kept unless ``force``. Each download is checked before it
    takes its final name: the sha256 of its uncompressed content where pinned (MNIST,
    Fashion-MNIST), else the md5 of the ``.gz`` as published (KMNIST), and always its IDX
    structure.

    Args:
        name: ``"mnist"``, ``"fashion-mnist"`` or ``"kmnist"``.
        cache_dir: the folder to download into; default :func:`catalog.cache_dir`.
        force: download again even if valid files are present.
        progress: show a progress bar per file.
        base_url: where the ``<file>.gz`` are served; default the catalog's pinned URL.

    Returns:
        the folder now holding the four files.

    Raises:
        ConfigError: ``name`` is not a known IDX data set.
        DataError: a download failed (offline, server error) or a downloaded file does not
            match its pinned hash (the bad file is deleted); the message names the URL.
    """
    spec = get_spec(name)
    target = Path(cache_dir).expanduser() if cache_dir else catalog.cache_dir()
    target = target / spec.name
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(
            f"cannot create the download folder {target}: {err}; set {catalog.CACHE_ENV} "
            "to a writable folder"
        ) from err
    base = base_url or spec.base_url
    base = base if base.endswith("/") else base + "/"
    downloader = pooch.HTTPDownloader(
        progressbar=progress, chunk_size=1 << 16, timeout=DOWNLOAD_TIMEOUT_S
    )
    for file in spec.files:
        if not force and _has_valid_copy(target, file):
            continue
        _download(downloader, f"{base}{file.name}.gz", target / f"{file.name}.gz", file, spec)
        # A raw copy next to the fresh .gz would be read first by `locate`.
        (target / file.name).unlink(missing_ok=True)
    return target


def _has_valid_copy(folder: Path, file: IdxFile) -> bool:
    """Whether ``folder`` holds ``file`` (raw or .gz) passing its checks; bad copies are deleted.

    A raw copy of a file pinned only by its ``.gz`` md5 can only be checked for structure.
    """
    valid = False
    for path in (folder / file.name, folder / f"{file.name}.gz"):
        if not path.is_file():
            continue
        try:
            _verify(path, file, url=None)
            valid = True
        except DataError:
            path.unlink()
    return valid


def _download(
    downloader: pooch.HTTPDownloader, url: str, path: Path, file: IdxFile, spec: IdxSourceSpec
) -> None:
    """Download ``url`` to ``path`` via a ``.part`` file renamed only once verified."""
    part = path.with_name(path.name + ".part")
    if downloader.progressbar:
        print(f"{spec.name}: downloading {url}", file=sys.stderr)
    try:
        downloader(url, str(part), None)
        _verify(part, file, url)
        os.replace(part, path)
    except requests.exceptions.RequestException as err:  # before OSError: it derives from it
        raise DataError(_offline_message(spec, url, err)) from err
    except DataError as err:
        raise DataError(
            f"{err}\nThe file downloaded from {url} was deleted. The server may be serving a "
            f"changed or damaged file: try `forgetless data fetch {spec.name} --force` later, or "
            f"get the files elsewhere and pass their folder with --data-dir or {DATA_ENV}."
        ) from err
    except OSError as err:
        raise DataError(f"cannot save {url} as {path}: {err}") from err
    finally:
        part.unlink(missing_ok=True)


def _verify(path: Path, file: IdxFile, url: str | None) -> None:
    """Check a copy of ``file`` at ``path``; DataError naming file, URL and hashes if bad."""
    where = f"{file.name}.gz from {url}" if url else str(path)
    if file.gz_md5 and path.name.endswith((".gz", ".gz.part")):
        actual = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
        _compare(where, "md5 of the .gz", file.gz_md5, actual)
    data = read_idx_bytes(path)
    if file.sha256:
        _compare(where, "sha256 of the uncompressed content", file.sha256, sha256_hex(data))
    parse_idx(data, where)


def _compare(where: str, what: str, expected: str, actual: str) -> None:
    if actual != expected:
        raise DataError(f"{where}: hash mismatch: {what} is {actual}, expected {expected}")


def _offline_message(spec: IdxSourceSpec, url: str, err: Exception) -> str:
    lines = [
        f"download failed: {url}: {err}",
        f"Without a working connection, get the four files {', '.join(FILE_NAMES)} (raw or "
        f".gz) some other way, put them into a folder and pass it with --data-dir, or set "
        f"{DATA_ENV} to that folder.",
    ]
    if spec.system_package:
        lines.append(f"On Debian/Ubuntu: apt-get install {spec.system_package}")
    return "\n".join(lines)
