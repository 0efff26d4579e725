"""What several commands share: a line for the user, a progress bar of runs, the JSON and
figures an analysis command writes."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any


def say(message: str) -> None:
    """A line for the user on stderr (stdout may be JSON)."""
    print(f"forgetless: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def runs_bar() -> Iterator[Callable[[int, int, float], None]]:
    """A progress bar of runs on stderr; yields the ``progress(done, total, seconds_left)``
    callback that sweeps call after each run."""
    from tqdm.auto import tqdm

    class RunsBar(tqdm):
        # No monitor thread: the bar is redrawn at every run anyway, and with no second
        # thread running a local sweep can fork its workers (forgetless.sweeps.start_method).
        monitor_interval = 0

    with RunsBar(total=None, unit="run", file=sys.stderr, disable=None) as bar:

        def progress(done: int, total: int, left: float) -> None:
            bar.total = total
            bar.n = done
            bar.set_postfix_str(f"about {left / 60:.1f} min left")

        yield progress


def write_outputs(out: str, name: str, data: Any, figures: dict[str, Any]) -> None:
    """``OUT/NAME.json`` and each figure as ``OUT/STEM.png`` and ``.svg``, then one line
    naming the files: how every analysis command ends."""
    import json
    from pathlib import Path

    from forgetless.report.figures import save

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    files = [f for stem, figure in figures.items() for f in save(figure, folder / stem)]
    print(f"wrote {path}, " + ", ".join(str(f) for f in files))


def add_store_options(parser) -> None:
    """``--store`` and ``--workers`` of a study: its runs go into the run store (a second
    call with the same store trains nothing), ``--workers`` at once."""
    parser.add_argument(
        "--store", metavar="DIR", help="the run store (default: $FORGETLESS_RUNS or ./runs)"
    )
    parser.add_argument("--workers", type=int, default=1, help="runs at once (default: 1)")


def store_of(args):
    """The run store a study writes into: ``--store``, else the default one."""
    from pathlib import Path

    from forgetless.runs import default_store

    return Path(args.store) if args.store else default_store()
