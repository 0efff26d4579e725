"""scikit-learn's bundled 8x8 digits: the offline default, no download needed."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from forgetless.data.arrays import ArraySet, SourceData

#: Fraction of each class held out for testing. The split is fixed (not drawn from the run's
#: seed) so that every run is scored on the same test images.
TEST_FRACTION = 0.3


@lru_cache(maxsize=1)
def load_digits() -> SourceData:
    """The 1,797 8x8 digit images (values 0..16) as ``[N, 1, 8, 8]`` uint8, split 70/30 per class.

    Returns:
        SourceData named ``"digits"`` with 10 classes.
    """
    images, labels = _read_bundled()
    test_mask = _stratified_test_mask(labels, TEST_FRACTION, seed=0)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    mask = torch.from_numpy(test_mask)
    scale = 1.0 / 16.0
    return SourceData(
        "digits",
        train=ArraySet(x[~mask], y[~mask], scale),
        test=ArraySet(x[mask], y[mask], scale),
        class_names=tuple(str(i) for i in range(10)),
    )


def _read_bundled() -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 1, 8, 8]`` uint8 and labels, from scikit-learn's bundled CSV file.

    The file is read directly: importing ``sklearn.datasets`` takes longer (about 1.5 s) than
    a whole small run, and every sweep worker and CLI call would pay it. If scikit-learn ever
    moves the file, its own loader is used."""
    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    roots = spec.submodule_search_locations if spec is not None else None
    path = Path(roots[0]) / "datasets" / "data" / "digits.csv.gz" if roots else None
    if path is not None and path.is_file():
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
        pixels, target = table[:, :-1], table[:, -1]
    else:
        from sklearn.datasets import load_digits as sklearn_digits

        bunch = sklearn_digits()
        pixels, target = bunch.data, bunch.target
    images = np.asarray(pixels, dtype=np.uint8).reshape(-1, 1, 8, 8)
    return images, np.asarray(target, dtype=np.int64)


def _stratified_test_mask(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        chosen = rng.choice(members, size=round(fraction * len(members)), replace=False)
        mask[chosen] = True
    return mask
