"""Reading IDX files (the MNIST file format), raw or gzip-compressed, with strict validation.

An IDX file is a 4-byte magic number ``00 00 TT DD`` (``TT`` the element type, ``DD`` the
number of dimensions), then ``DD`` big-endian uint32 sizes, then the elements in C order.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from pathlib import Path

import numpy as np

from forgetless.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"

# IDX element type code -> big-endian numpy dtype. MNIST and its relatives use 0x08 (ubyte).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


#: The most element bytes an IDX header may announce. The largest files of the format in use
#: (EMNIST ByClass) hold 0.55 GB; a header announcing more is corrupt or crafted.
MAX_IDX_BYTES = 2**30

#: Deflate never compresses better than about 1032:1, so a gzip file of n bytes cannot hold more
#: than this many times n uncompressed bytes (plus a little for its own header).
MAX_DEFLATE_RATIO = 1032


def read_idx_bytes(path: Path) -> bytes:
    """The uncompressed content of the IDX file at ``path``: its header, and at most the data
    bytes that header announces.

    A file starting with the gzip magic bytes is decompressed whatever its suffix. The stream is
    decompressed only as far as the header says the data reaches (plus one byte, to tell a
    file with trailing garbage), so a small gzip of zeros claiming gigabytes cannot make the
    process allocate them ("gzip bomb"): memory stays bounded by the header's claim, itself
    capped at :data:`MAX_IDX_BYTES` and at what the compressed size can hold.

    Returns:
        the raw IDX bytes (header and data); a short file comes back short, for
        :func:`parse_idx` to report.

    Raises:
        DataError: the file cannot be read, it is a corrupt or truncated gzip stream, its header
            announces more data than the format allows, or data follows the announced end.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as raw:
            compressed = raw.read(2) == GZIP_MAGIC
            raw.seek(0)
            if not compressed:
                return _read_bounded(raw, path, size, limit=None)
            limit = MAX_DEFLATE_RATIO * size + 1024
            try:
                with gzip.GzipFile(fileobj=raw) as stream:
                    return _read_bounded(stream, path, size, limit)
            except (OSError, EOFError, zlib.error) as err:
                raise DataError(
                    f"{path}: corrupt gzip stream ({err}); the file is damaged or was only "
                    "partly downloaded, replace it with a fresh copy"
                ) from err
    except OSError as err:
        raise DataError(f"{path}: cannot read the file: {err}") from err


def _read_bounded(stream, path: Path, size: int, limit: int | None) -> bytes:
    """Header then data from ``stream``, no more than the header announces; ``limit`` bounds
    what a compressed file of ``size`` bytes can hold (``None``: ``stream`` is the raw file)."""
    head = stream.read(4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in IDX_DTYPES or not head[3]:
        return head + stream.read(64)  # parse_idx names what is wrong with so little
    dtype, ndim = IDX_DTYPES[head[2]], head[3]
    dims_bytes = stream.read(4 * ndim)
    if len(dims_bytes) < 4 * ndim:
        return head + dims_bytes
    dims = tuple(int(d) for d in np.frombuffer(dims_bytes, dtype=">u4"))
    expected = math.prod(dims) * dtype.itemsize
    shape = "x".join(str(d) for d in dims)
    if expected > MAX_IDX_BYTES:
        raise DataError(
            f"{path}: the IDX header announces {shape} elements of {dtype.itemsize} byte(s) = "
            f"{expected} data bytes, more than the {MAX_IDX_BYTES} this reader accepts; the "
            "file is corrupt or not an IDX file"
        )
    header_size = 4 + 4 * ndim
    available = size - header_size if limit is None else limit
    if expected > available:
        what = "the file has" if limit is None else f"a gzip file of {size} bytes can hold"
        raise DataError(
            f"{path}: truncated IDX file: the header says {shape} elements of "
            f"{dtype.itemsize} byte(s) = {expected} data bytes, but {what} only {available} "
            "after the header; replace the file"
        )
    if limit is None and expected < available:
        raise DataError(
            f"{path}: trailing garbage after IDX data: the header says {shape} elements of "
            f"{dtype.itemsize} byte(s) = {expected} data bytes, but {available} follow the "
            "header; replace the file"
        )
    data = stream.read(expected)
    if len(data) == expected and stream.read(1):  # also makes gzip check its CRC at the end
        raise DataError(
            f"{path}: trailing garbage after IDX data: the header says {shape} elements of "
            f"{dtype.itemsize} byte(s) = {expected} data bytes, but more follow; replace the "
            "file"
        )
    return head + dims_bytes + data


def sha256_hex(data: bytes) -> str:
    """The sha256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def parse_idx(data: bytes | bytearray | memoryview, source: str | Path = "<bytes>") -> np.ndarray:
    """Parse uncompressed IDX bytes into an array.

    Args:
        data: the whole uncompressed file content.
        source: the file name to put in error messages.

    Returns:
        a writable array in native byte order, shaped as the header says; it shares memory
        with ``data`` when ``data`` is a writable buffer and the elements need no byte swap.

    Raises:
        DataError: naming ``source`` and the problem: too short for its header or for the data
            the header announces, bytes left over after the data, or a bad magic number.
    """
    if len(data) < 4:
        what = "empty" if not data else f"only {len(data)} bytes long"
        raise DataError(f"{source}: not an IDX file: it is {what} (an IDX header needs 4+ bytes)")
    dtype, ndim = _check_magic(data, source)
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(
            f"{source}: truncated IDX file: the header announces {ndim} dimensions "
            f"({header_size} header bytes) but the file has only {len(data)} bytes"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(dims) * dtype.itemsize
    actual = len(data) - header_size
    if actual != expected:
        shape = "x".join(str(d) for d in dims)
        problem = "truncated IDX file" if actual < expected else "trailing garbage after IDX data"
        raise DataError(
            f"{source}: {problem}: the header says {shape} elements of {dtype.itemsize} byte(s) "
            f"= {expected} data bytes, but {actual} follow the header; replace the file"
        )
    array = np.frombuffer(data, dtype=dtype, count=math.prod(dims), offset=header_size)
    if array.flags.writeable and dtype.isnative:
        return array.reshape(dims)  # a writable buffer of single bytes: already as needed
    # The copy makes the array writable (bytes are immutable) and native-endian in one pass.
    return array.reshape(dims).astype(dtype.newbyteorder("="), copy=True)


def _check_magic(data: bytes, source: str | Path) -> tuple[np.dtype, int]:
    """The element dtype and dimension count from the 4 magic bytes; DataError if invalid."""
    magic = data[:4].hex()
    if data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{source}: wrong magic number 0x{magic}: an IDX file starts with two zero bytes "
            "(is this really an IDX file, e.g. train-images-idx3-ubyte?)"
        )
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        raise DataError(
            f"{source}: wrong magic number 0x{magic}: unknown IDX type code 0x{code:02x} "
            f"(known: {known})"
        )
    if ndim == 0:
        raise DataError(f"{source}: wrong magic number 0x{magic}: zero dimensions")
    return IDX_DTYPES[code], ndim


def read_idx_with_hash(
    path: Path, cache: Path | None = None, expected: str | None = None
) -> tuple[np.ndarray, str]:
    """Read an IDX file and hash its uncompressed content, reading the file once.

    Args:
        path: the file, raw or gzip-compressed.
        cache: a folder of decoded copies (:mod:`forgetless.data.decoded`): a gzip file of at
            least ``decoded.MIN_CACHED_BYTES`` is read from its checked entry there when one
            matches, else decompressed and its entry written. ``None``: no cache.
        expected: the sha256 the content should have (a pinned hash), if known: an entry
            whose content has another is not used. The file itself is returned whatever its
            hash, for the caller to report.

    Returns:
        the array (see :func:`parse_idx`) and the sha256 hex digest of the uncompressed bytes,
        so a recompressed ``.gz`` hashes the same as the raw file (and as its cached copy).

    Raises:
        DataError: the file is unreadable, corrupt gzip, or not a valid IDX file.
    """
    if cache is None or not _is_gzip(path):
        data = read_idx_bytes(path)
        return parse_idx(data, path), sha256_hex(data)
    from forgetless.data import decoded

    cached = decoded.read(cache, path)
    if cached is not None:
        content, digest = cached
        if expected is not None and digest != expected:
            decoded.reject(cache, path, "its content is not the pinned data")
        else:
            try:
                return parse_idx(content, path), digest
            except DataError as err:
                decoded.reject(cache, path, str(err))
    data = read_idx_bytes(path)
    array, digest = parse_idx(data, path), sha256_hex(data)
    if len(data) >= decoded.MIN_CACHED_BYTES:
        decoded.write(cache, path, data, digest)
    return array, digest


def _is_gzip(path: Path) -> bool:
    try:
        with open(path, "rb") as raw:
            return raw.read(2) == GZIP_MAGIC
    except OSError:
        return False  # read_idx_bytes names the problem


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed (detected by its magic bytes).

    Returns:
        a writable native-endian array shaped as the header says (``[N, 28, 28]`` uint8 for
        MNIST images, ``[N]`` uint8 for labels).

    Raises:
        DataError: naming the file and the problem (unreadable, corrupt gzip, wrong magic
            number, truncated, trailing garbage).
    """
    return parse_idx(read_idx_bytes(path), path)
