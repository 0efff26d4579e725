"""The known MNIST-family IDX data sets: where to find them locally, and how to load them.

The text source ``shakespeare`` (:mod:`forgetless.data.shakespeare`) is listed and located
here too, from its own known places (the installed ``shakespeare`` package's files).

Hashes are pinned on the *uncompressed* content (sha256), so any gzip recompression of a file
(Debian's ``dataset-fashion-mnist`` package ships recompressed ``.gz`` files, for example) is
accepted as long as the data is identical.
"""

from __future__ import annotations

import difflib
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from forgetless.data.arrays import ArraySet, SourceData
from forgetless.data.idx import read_idx_with_hash
from forgetless.errors import ConfigError, DataError

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILE_NAMES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

DATA_ENV = "FORGETLESS_DATA"
CACHE_ENV = "FORGETLESS_CACHE"

# Folders holding system-wide installs, as <folder>/<name>/ (Debian's dataset-fashion-mnist
# installs /usr/share/datasets/fashion-mnist/). A tuple at module level so tests can replace it.
SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets"),)


@dataclass(frozen=True)
class IdxFile:
    """One of the four files of a data set, with what is known to check it.

    Attributes:
        name: file name without ``.gz``, e.g. ``train-images-idx3-ubyte``.
        sha256: sha256 of the uncompressed content, or ``None`` when not known.
        gz_md5: md5 of the ``.gz`` file as published at the download URL, or ``None``.
    """

    name: str
    sha256: str | None = None
    gz_md5: str | None = None


@dataclass(frozen=True)
class IdxSourceSpec:
    """A known IDX data set: its files, download location, classes and credits."""

    name: str
    title: str
    base_url: str
    files: tuple[IdxFile, IdxFile, IdxFile, IdxFile]
    class_names: tuple[str, ...]
    citation: str
    train_count: int = 60000
    test_count: int = 10000
    image_shape: tuple[int, int] = (28, 28)
    system_package: str | None = None

    def file(self, name: str) -> IdxFile:
        """The file entry called ``name`` (one of :data:`FILE_NAMES`)."""
        return next(f for f in self.files if f.name == name)


def _files(
    sha256: tuple[str, str, str, str] | None = None,
    gz_md5: tuple[str, str, str, str] | None = None,
) -> tuple[IdxFile, IdxFile, IdxFile, IdxFile]:
    sha = sha256 or (None,) * 4
    md5 = gz_md5 or (None,) * 4
    a, b, c, d = (IdxFile(n, s, m) for n, s, m in zip(FILE_NAMES, sha, md5, strict=True))
    return a, b, c, d


IDX_SOURCES: dict[str, IdxSourceSpec] = {
    "mnist": IdxSourceSpec(
        name="mnist",
        title="MNIST handwritten digits",
        base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        files=_files(
            sha256=(
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            )
        ),
        class_names=tuple(str(i) for i in range(10)),
        citation="Y. LeCun, C. Cortes, C. J. C. Burges: The MNIST database of handwritten digits "
        "(http://yann.lecun.com/exdb/mnist/); licence CC BY-SA 3.0.",
    ),
    "fashion-mnist": IdxSourceSpec(
        name="fashion-mnist",
        title="Fashion-MNIST clothing images (Zalando)",
        base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        files=_files(
            sha256=(
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            )
        ),
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        citation="H. Xiao, K. Rasul, R. Vollgraf: Fashion-MNIST: a Novel Image Dataset for "
        "Benchmarking Machine Learning Algorithms, arXiv:1708.07747 (2017); licence MIT.",
        system_package="dataset-fashion-mnist",
    ),
    # The sha256 of KMNIST's uncompressed files is not pinned: nobody we could cross-check
    # publishes it. What is pinned is the md5 of the .gz files as served by CODH, identical in
    # torchvision (pytorch/vision, torchvision/datasets/mnist.py, class KMNIST) and the R torch
    # ecosystem (mlverse/torchvision, R/dataset-mnist.R). `fetch` checks it on download; a local
    # copy found elsewhere only gets the structural checks (magic numbers, 60000/10000 images of
    # 28x28, labels 0..9).
    "kmnist": IdxSourceSpec(
        name="kmnist",
        title="Kuzushiji-MNIST cursive Japanese (hiragana) characters",
        base_url="http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        files=_files(
            gz_md5=(
                "bdb82020997e1d708af4cf47b453dcf7",
                "e144d726b3acfaa3e44228e80efcd344",
                "5c965bf0a639b31b8f53240b1b52f4d7",
                "7320c461ea6c1c855c0b718fb2a4b134",
            )
        ),
        class_names=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        citation='"KMNIST Dataset" (created by CODH), adapted from "Kuzushiji Dataset" (created '
        "by NIJL and others), doi:10.20676/00000341; T. Clanuwat et al.: Deep Learning for "
        "Classical Japanese Literature, arXiv:1812.01718 (2018); licence CC BY-SA 4.0.",
    ),
}


def get_spec(name: str) -> IdxSourceSpec:
    """The catalog entry for ``name`` (case and ``_``/``-`` are not significant).

    Raises:
        ConfigError: ``name`` is not a known IDX data set; the message lists the known names
            and the closest match.
    """
    key = name.strip().lower().replace("_", "-")
    if key in IDX_SOURCES:
        return IDX_SOURCES[key]
    if key == "shakespeare":
        from forgetless.data import shakespeare

        raise ConfigError(
            f"shakespeare is a text source that forgetless does not download: "
            f"{shakespeare.HOW_TO_GET}"
        )
    known = sorted(IDX_SOURCES)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown IDX data set {name!r}.{hint} Known: {', '.join(known)}.")


def cache_dir() -> Path:
    """The folder ``forgetless data fetch`` downloads into (one subfolder per data set).

    Returns:
        ``$FORGETLESS_CACHE`` when set, else the per-user cache folder (``pooch.os_cache``'s,
        from ``platformdirs``, which pooch depends on: importing pooch itself costs a run
        about 60 ms, mostly ``requests``).
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("forgetless"))


def decoded_cache_dir() -> Path | None:
    """The folder of decoded IDX copies (``cache_dir()/decoded``), or ``None`` when
    ``FORGETLESS_DECODED_CACHE=0`` turns it off (see :mod:`forgetless.data.decoded`)."""
    from forgetless.data import decoded

    return cache_dir() / "decoded" if decoded.enabled() else None


@dataclass(frozen=True)
class Location:
    """Where a data set was found.

    Attributes:
        folder: the folder holding the four files.
        origin: how it was found: ``"--data-dir"``, ``"FORGETLESS_DATA"``, ``"cache"`` or
            ``"system"``.
        files: the four files, in :data:`FILE_NAMES` order, each raw or ``.gz``.
    """

    folder: Path
    origin: str
    files: tuple[Path, ...]


def find_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` if it exists, else ``folder/name.gz`` if that exists, else ``None``."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def candidate_folders(name: str, data_dir: Path | str | None = None) -> list[tuple[Path, str]]:
    """Every folder :func:`locate` looks in for data set ``name``, in search order.

    Returns:
        ``(folder, origin)`` pairs: ``data_dir/<name>`` and ``data_dir``, the same under
        ``$FORGETLESS_DATA``, then ``cache_dir()/<name>``, then each system folder's ``<name>``.
    """
    places: list[tuple[Path, str]] = []
    for root, origin in ((data_dir, "--data-dir"), (os.environ.get(DATA_ENV), DATA_ENV)):
        if root:
            root = Path(root).expanduser()
            places += [(root / name, origin), (root, origin)]
    places.append((cache_dir() / name, "cache"))
    places += [(Path(d) / name, "system") for d in SYSTEM_DIRS]
    return places


def locate(name: str, data_dir: Path | str | None = None):
    """Find the four files of IDX data set ``name`` (or the texts of ``"shakespeare"``: see
    :func:`forgetless.data.shakespeare.locate`).

    Looks in ``data_dir`` (as ``data_dir/<name>/`` or directly), then ``$FORGETLESS_DATA``
    (same two layouts), then ``cache_dir()/<name>/``, then each of :data:`SYSTEM_DIRS`
    ``/<name>/``. Each file may be raw or ``.gz``.

    Returns:
        the first folder holding all four files, or ``None``.

    Raises:
        ConfigError: ``name`` is not a known IDX data set.
    """
    if name.strip().lower() == "shakespeare":
        from forgetless.data import shakespeare

        return shakespeare.locate(data_dir)
    spec = get_spec(name)
    for folder, origin in candidate_folders(spec.name, data_dir):
        files = [find_file(folder, f) for f in FILE_NAMES]
        if all(files):
            return Location(folder, origin, tuple(f for f in files if f))
    return None


def how_to_get(spec: IdxSourceSpec) -> str:
    """One line saying how to obtain ``spec``'s files."""
    hint = f"run `forgetless data fetch {spec.name}` (needs internet)"
    if spec.system_package:
        hint += f", or on Debian/Ubuntu `apt-get install {spec.system_package}`"
    return hint


def _describe_place(folder: Path, origin: str) -> str:
    if not folder.is_dir():
        state = "no such folder"
    else:
        missing = [f for f in FILE_NAMES if find_file(folder, f) is None]
        state = f"missing {', '.join(missing)}"
    return f"  {origin:<16} {folder} ({state})"


def not_found_message(spec: IdxSourceSpec, data_dir: Path | str | None = None) -> str:
    """The explanation given when ``spec`` cannot be found: where we looked, how to get it."""
    places = [_describe_place(f, o) for f, o in candidate_folders(spec.name, data_dir)]
    if not os.environ.get(DATA_ENV):
        places.insert(len(places) - 1 - len(SYSTEM_DIRS), f"  {DATA_ENV:<16} (not set)")
    lines = [
        f"{spec.name}: data set not found. Looked in:",
        *places,
        "To get it:",
        f"  - with internet: forgetless data fetch {spec.name}",
        f"  - or put the four files {', '.join(FILE_NAMES)} (raw or .gz) into one of those "
        f"folders, or into a folder of your own and pass it with --data-dir or {DATA_ENV}",
    ]
    if spec.system_package:
        lines.append(f"  - or on Debian/Ubuntu: apt-get install {spec.system_package}")
    return "\n".join(lines)


def _verify_hash(spec: IdxSourceSpec, path: Path, name: str, actual: str) -> None:
    expected = spec.file(name).sha256
    if expected is not None and actual != expected:
        raise DataError(
            f"{path}: sha256 of the uncompressed content is {actual}, but {spec.name} "
            f"{name} is pinned to {expected}: the file is corrupt or a different version. "
            f"Run `forgetless data fetch {spec.name} --force` to download a fresh copy, or pass "
            "--data-dir with a folder holding the right files."
        )


def _read_split(
    spec: IdxSourceSpec, paths: tuple[Path, Path], names: tuple[str, str], verify: bool, count: int
) -> ArraySet:
    """Read one images/labels pair, check it, and wrap it as an :class:`ArraySet`."""
    images_path, labels_path = paths
    cache = decoded_cache_dir()
    pinned = [spec.file(n).sha256 if verify else None for n in names]
    images, images_hash = read_idx_with_hash(images_path, cache, pinned[0])
    labels, labels_hash = read_idx_with_hash(labels_path, cache, pinned[1])
    if verify:
        _verify_hash(spec, images_path, names[0], images_hash)
        _verify_hash(spec, labels_path, names[1], labels_hash)
    _check_structure(spec, images_path, images, labels_path, labels)
    if verify and len(images) != count:
        raise DataError(
            f"{images_path}: holds {len(images)} images, but {spec.name} has {count} here; "
            f"the file is from another data set or incomplete. Run `forgetless data fetch "
            f"{spec.name} --force` or pass --data-dir with the right files."
        )
    x = torch.from_numpy(images).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return ArraySet(x, y, scale=1 / 255)


def _check_structure(
    spec: IdxSourceSpec,
    images_path: Path,
    images: np.ndarray,
    labels_path: Path,
    labels: np.ndarray,
) -> None:
    """DataError unless images are ``[N, 28, 28]`` uint8 and labels ``[N]`` in the class range."""
    shape = "x".join(str(d) for d in spec.image_shape)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != spec.image_shape:
        raise DataError(
            f"{images_path}: expected [N, {shape}] uint8 images, found {list(images.shape)} "
            f"{images.dtype}; is this an images file (…-images-idx3-ubyte)?"
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(
            f"{labels_path}: expected a 1-D array of integer labels, found "
            f"{list(labels.shape)} {labels.dtype}; is this a labels file (…-labels-idx1-ubyte)?"
        )
    if len(images) != len(labels):
        raise DataError(
            f"image/label count mismatch: {images_path} holds {len(images)} images but "
            f"{labels_path} holds {len(labels)} labels; one of the files is from another set"
        )
    n_classes = len(spec.class_names)
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(
            f"{labels_path}: labels range over {int(labels.min())}..{int(labels.max())}, but "
            f"{spec.name} has classes 0..{n_classes - 1}"
        )


def _stamp(path: Path) -> tuple[str, int, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=4)
def _load_cached(
    spec: IdxSourceSpec, files: tuple[Path, ...], stamps: tuple[object, ...], verify: bool
) -> SourceData:
    # `stamps` is only part of the key: a replaced or rewritten file misses the cache.
    del stamps
    train = _read_split(
        spec, (files[0], files[1]), (TRAIN_IMAGES, TRAIN_LABELS), verify, spec.train_count
    )
    test = _read_split(
        spec, (files[2], files[3]), (TEST_IMAGES, TEST_LABELS), verify, spec.test_count
    )
    return SourceData(spec.name, train, test, spec.class_names)


def clear_load_cache() -> None:
    """Forget the data sets :func:`load_idx_source` keeps in memory."""
    _load_cached.cache_clear()


def load_idx_source(
    name: str, data_dir: Path | str | None = None, verify: bool = True
) -> SourceData:
    """Load IDX data set ``name`` from the first place :func:`locate` finds it.

    Args:
        name: ``"mnist"``, ``"fashion-mnist"`` or ``"kmnist"``.
        data_dir: a folder to look in first (holding the files, or a ``<name>/`` subfolder).
        verify: check the pinned sha256 of each file's uncompressed content (where pinned) and
            the expected image counts. Structure (shapes, dtypes, label range, counts agreeing)
            is always checked.

    Returns:
        the data set, with ``train``/``test`` images as ``[N, 1, 28, 28]`` uint8 (``scale``
        1/255) and int64 labels. The result is kept in a small in-process cache keyed on the
        files (path, inode, size, mtime), so do not modify its tensors in place.

    Raises:
        ConfigError: ``name`` is not a known IDX data set.
        DataError: the data set is not found (the message lists the places looked and how to
            get it), or a file is corrupt, fails its pinned hash, or does not match its partner.
    """
    spec = get_spec(name)
    location = locate(spec.name, data_dir)
    if location is None:
        raise DataError(not_found_message(spec, data_dir))
    stamps = tuple(_stamp(f) for f in location.files)
    try:
        return _load_cached(spec, location.files, stamps, verify)
    except DataError as err:
        if location.origin not in ("--data-dir", DATA_ENV):
            raise
        # A fresh download lands in the cache, which is searched after this folder.
        raise DataError(
            f"{err}\nNote: these files were found via {location.origin} in {location.folder}, "
            "which is searched before the download cache: replace or remove them."
        ) from err


@dataclass(frozen=True)
class SourceStatus:
    """What ``forgetless data list`` shows for one IDX data set.

    Attributes:
        name: the data set's name.
        title: a one-line description.
        location: where it was found, or ``None``.
        hint: how to get it (when missing) or where it is (when found).
    """

    name: str
    title: str
    location: Location | None
    hint: str

    @property
    def found(self) -> bool:
        return self.location is not None


def source_status(data_dir: Path | str | None = None) -> list[SourceStatus]:
    """One :class:`SourceStatus` per known IDX data set, in catalog order, then the text
    source ``shakespeare`` (reads no data)."""
    from forgetless.data import shakespeare

    statuses = []
    for spec in IDX_SOURCES.values():
        location = locate(spec.name, data_dir)
        if location is None:
            hint = how_to_get(spec)
        else:
            hint = f"found in {location.folder} ({location.origin})"
        statuses.append(SourceStatus(spec.name, spec.title, location, hint))
    texts = shakespeare.locate(data_dir)
    hint = shakespeare.HOW_TO_GET if texts is None else f"found in {texts.folder} ({texts.origin})"
    statuses.append(SourceStatus(shakespeare.NAME, shakespeare.TITLE, texts, hint))
    return statuses
