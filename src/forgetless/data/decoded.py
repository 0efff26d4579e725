"""A decoded copy of gzip-compressed IDX files, so that later runs skip decompressing them.

Decompressing MNIST's 60,000 training images takes about a quarter of a second, a tenth of a
whole Split-MNIST run. The first read of a ``.gz`` IDX file of at least
:data:`MIN_CACHED_BYTES` writes its uncompressed content to ``cache_dir()/decoded/`` (the
user's cache: data folders are often read-only or shared); later reads of the same file take
it from there.

The cache is untrusted input, like any file: an entry is only used when

- its header has the right magic bytes and format, names the source file's current size,
  inode, modification and change times (a replaced or rewritten source misses), and announces
  no more than :data:`~forgetless.data.idx.MAX_IDX_BYTES`;
- the entry is exactly as long as its header says (read with one bounded copy);
- the sha256 of the bytes read equals the one stored at writing.

Anything else (missing, short, stale, corrupt or tampered entries, unreadable folders) falls
back to decompressing the source, and the entry is rewritten. The caller then checks the bytes
as it checks a source file: the pinned sha256 of the data set where one is pinned (which a
tampered entry cannot meet), the IDX structure, shapes and labels. Nothing is ever unpickled:
an entry is a fixed binary header followed by the raw IDX bytes. Entries are written to a
temporary file and renamed into place, so concurrent runs never read half an entry, and the
folder is kept under :data:`CACHE_LIMIT_BYTES` (least recently used entries deleted first).
``FORGETLESS_DECODED_CACHE=0`` turns the cache off.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import warnings
from pathlib import Path

import numpy as np

from forgetless.data.idx import MAX_IDX_BYTES

#: Set to ``0`` to read every IDX file from its source.
CACHE_SWITCH_ENV = "FORGETLESS_DECODED_CACHE"
#: Smaller files decompress in about a millisecond: not worth an entry.
MIN_CACHED_BYTES = 2**20
#: Total size the folder may take; beyond it the least recently used entries are deleted.
CACHE_LIMIT_BYTES = 2**30
_MAGIC = b"FLIDX\x00\x01\n"  # the last two bytes: format 1
#: magic, source size, inode, mtime_ns, ctime_ns, IDX byte count, sha256 of the IDX bytes.
_HEADER = struct.Struct("<8sQQqqQ32s")


def enabled() -> bool:
    """Whether :data:`CACHE_SWITCH_ENV` leaves the cache on (the default)."""
    return os.environ.get(CACHE_SWITCH_ENV, "1").strip().lower() not in ("0", "off", "no", "false")


def entry_path(folder: Path, source: Path) -> Path:
    """The entry for ``source`` in ``folder``: one per source file, named by its resolved path."""
    key = hashlib.sha256(str(Path(source).resolve()).encode()).hexdigest()[:32]
    return Path(folder) / f"{key}.idx"


def _stamp(source: Path) -> tuple[int, int, int, int]:
    # ctime changes on every write and cannot be set back, unlike mtime (cp -p, touch -d).
    st = os.stat(source)
    return st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns


def read(folder: Path, source: Path) -> tuple[memoryview, str] | None:
    """The uncompressed IDX bytes of ``source`` from its entry in ``folder``, and their sha256
    hex digest; ``None`` when there is no usable entry (absent, stale, short, too long, corrupt
    or tampered: the caller then reads ``source`` and calls :func:`write`).

    The bytes are a writable buffer of their own (not a view of the file), so an entry changed
    after it was checked cannot change them.
    """
    path = entry_path(folder, source)
    try:
        stamp = _stamp(source)
        with open(path, "rb") as f:
            head = f.read(_HEADER.size)
            if len(head) != _HEADER.size:
                return _unusable(path, "shorter than its header")
            magic, *entry_stamp, length, digest = _HEADER.unpack(head)
            if magic != _MAGIC:
                return _unusable(path, "not an entry of this format")
            if tuple(entry_stamp) != stamp:
                return None  # the source changed since: rebuilt, nothing to warn about
            if length > MAX_IDX_BYTES or os.fstat(f.fileno()).st_size != _HEADER.size + length:
                return _unusable(path, "its length does not match its header")
            # read, not a mapping: copying from a mapping is 15 ms cheaper on MNIST, but a
            # file truncated meanwhile would kill the process (SIGBUS) instead of falling back.
            data = np.empty(length, dtype=np.uint8)
            if f.readinto(memoryview(data)) != length:
                return _unusable(path, "shorter than its header says")
    except (OSError, ValueError) as err:
        if isinstance(err, (FileNotFoundError, NotADirectoryError)):
            return None  # no entry (yet)
        return _unusable(path, str(err))
    actual = hashlib.sha256(data).digest()
    if actual != digest:
        return _unusable(path, "its checksum does not match its content")
    with contextlib.suppress(OSError):
        os.utime(path)  # recently used: evicted last
    return memoryview(data), actual.hex()


def _unusable(path: Path, why: str) -> None:
    warnings.warn(
        f"ignoring the decoded IDX cache entry {path} ({why}); rebuilding it", stacklevel=4
    )
    return None


def reject(folder: Path, source: Path, why: str) -> None:
    """Say that the entry :func:`read` gave for ``source`` failed the caller's checks (``why``);
    the caller reads the source and writes the entry anew."""
    _unusable(entry_path(folder, source), why)


def write(folder: Path, source: Path, data: bytes, sha256_hex: str) -> None:
    """Store ``data``, the uncompressed content of ``source`` whose sha256 is ``sha256_hex``, as
    its entry in ``folder``. Failing to write (a read-only or full disk) only warns."""
    folder = Path(folder)
    path = entry_path(folder, source)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
    try:
        head = _HEADER.pack(_MAGIC, *_stamp(source), len(data), bytes.fromhex(sha256_hex))
        folder.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(head)
            f.write(data)
        os.replace(tmp, path)
        _evict(folder, keep=path)
    except OSError as err:  # a cache that cannot be written is no reason to fail a run
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        warnings.warn(f"could not write the decoded IDX cache in {folder}: {err}", stacklevel=3)


def _evict(folder: Path, keep: Path) -> None:
    """Delete the least recently used entries until the folder fits in
    :data:`CACHE_LIMIT_BYTES`."""
    entries = []
    for path in folder.glob("*.idx"):
        try:
            st = path.stat()
        except OSError:
            continue
        entries.append((st.st_mtime, st.st_size, path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):
        if total <= CACHE_LIMIT_BYTES:
            break
        if path != keep:
            path.unlink(missing_ok=True)
            total -= size
