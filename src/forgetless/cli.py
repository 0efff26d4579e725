"""The ``forgetless`` command. Thin: it finds the command, builds that command's parser from its
module (:mod:`forgetless.commands`), and calls it. Only the command being run is imported, so
``forgetless --help`` and ``forgetless run --help`` start without torch."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import difflib
import gc
import os
import sys
import threading
import warnings
from collections.abc import Sequence

from forgetless.commands import COMMANDS
from forgetless.errors import ForgetlessError


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``forgetless``: every command listed, and ``command``'s options declared
    (every command's, with ``None``; that imports each command's module)."""
    from forgetless import __version__

    parser = argparse.ArgumentParser(
        prog="forgetless",
        description="Show, measure and mitigate catastrophic forgetting.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"forgetless {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, entry in COMMANDS.items():
        p = sub.add_parser(name, help=entry.help, allow_abbrev=False)
        if command is None or name == command:
            getattr(entry.load(), entry.add)(p)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """The command named in ``argv`` (the first word that is not an option)."""
    for token in argv:
        if not token.startswith("-"):
            return token if token in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``forgetless`` command; returns the exit code.

    Called without ``argv`` (the command line: the process ends next) after a command that
    imported torch, it ends the process itself once the exit handlers have run and the output
    is flushed (:func:`_end_process`), rather than return: tearing torch's modules down at
    interpreter exit cost a run 0.1-0.5 s, and the memory it frees is freed by the exit all
    the same.
    """
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    with warnings.catch_warnings():  # deprecated spellings warn while parsing too
        warnings.simplefilter("default", DeprecationWarning)
        warnings.showwarning = _show_warning
        code = _main(argv)
    if from_command_line and "torch" in sys.modules:
        _end_process(code)
    return code


def _end_process(code: int) -> None:
    """Exit now with ``code``, doing what the interpreter's exit does that anyone sees.

    The ``atexit`` handlers run (multiprocessing's, logging's flush, temporary folders, a
    logger's last writes) and the standard streams are flushed; what is skipped is the
    teardown of every module and the cycle collector's passes over them (``gc.freeze`` keeps
    them out of a collection the handlers might start). Every file a command writes is closed
    before it returns. With another thread alive whose end the interpreter would wait for (not
    a daemon, such as tqdm's monitor, which an exit abandons anyway), the exit is left to the
    interpreter."""
    gc.freeze()
    main = threading.main_thread()
    if any(t is not main and not t.daemon for t in threading.enumerate()):
        return
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to write
            stream.flush()
    os._exit(code)


def _main(argv: list[str]) -> int:
    command = _command_in(argv)
    parser = build_parser(command or "")
    args, extra = parser.parse_known_args(argv)
    if command is None:
        parser.print_help()
        return 2
    entry = COMMANDS[command]
    if extra and not entry.strategy_parameters:
        _refuse(parser, command, extra)
    args.extra = extra
    args.argv = argv[argv.index(command) + 1 :]
    args.command_parser = _subparser(parser, command)
    return _dispatch(args, getattr(entry.load(), entry.run))


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def _refuse(parser: argparse.ArgumentParser, command: str, extra: Sequence[str]) -> None:
    """argparse's "unrecognized arguments", with the closest option of the command."""
    own = _subparser(parser, command)
    known = list(own._option_string_actions)
    flags = [t.split("=")[0] for t in extra if t.startswith("--")]
    hints = [m[0] for f in flags if (m := difflib.get_close_matches(f, known, n=1))]
    hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
    own.error(f"unrecognized arguments: {' '.join(extra)}{hint}")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line a user reads, not a source location."""
    print(f"forgetless: warning: {message}", file=file or sys.stderr)


def _dispatch(args: argparse.Namespace, run) -> int:
    try:
        return run(args)
    except ForgetlessError as err:
        print(f"forgetless: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("forgetless: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`forgetless runs ls | head`): stop quietly, as Unix tools do.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (stdout must stay open until exit)
        return 0
    except OSError as err:  # a folder that cannot be written, a disk that is full, ...
        where = f": {err.filename}" if err.filename else ""
        print(f"forgetless: error: {err.strerror or err}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
