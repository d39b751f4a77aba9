"""Entry point of the ``aceg`` command.

Each sub-command lives in ``aceg.cli.<name>`` and exposes ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``. Bad input raises :class:`AcegError`, printed here as one line
(``aceg: error: ...``) with exit code 2. Notes for the user (:class:`AcegWarning`, e.g. a
map loaded without a content hash) print as one line, ``aceg: note: ...``. A reader that
stops early (``aceg info SCENE | head -1``) ends the command quietly with exit code 141
(128 + SIGPIPE, as for a program the signal stops).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import sys
import warnings

from aceg.errors import AcegError, AcegWarning

#: Exit code when standard output is a pipe its reader closed (128 + SIGPIPE).
EXIT_BROKEN_PIPE = 141

#: Sub-commands, in the order ``aceg --help`` lists them.
COMMANDS = ("demo", "info", "convert", "reconstruct", "eval", "synth", "map", "localize",
            "pretrain", "pretrain-anchors", "bench", "export", "plot", "view", "serve")

DESCRIPTION = """\
aceg: visual relocalization by scene coordinate regression (ACE-G).

Build a compact map of a place from posed photos, then return the 6-DoF camera pose of
new photos of it. Run `aceg <command> --help` for the details of each command.
"""


def _available_commands():
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"aceg.cli.{name.replace('-', '_')}")
        except ModuleNotFoundError as exc:
            if exc.name == f"aceg.cli.{name}":
                continue
            raise
        yield name, module


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aceg", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    from aceg import __version__

    parser.add_argument("--version", action="version", version=f"aceg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, module in _available_commands():
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _show_warning(previous, message, category, filename, lineno, file=None, line=None) -> None:
    """One line for an :class:`AcegWarning`; any other warning as ``previous`` shows it."""
    if issubclass(category, AcegWarning):
        print(f"aceg: note: {message}", file=sys.stderr)
    else:
        previous(message, category, filename, lineno, file, line)


def _silence_stdout() -> None:
    """Point standard output at /dev/null, so that the interpreter's final flush into the
    closed pipe does not print an error of its own."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, AttributeError, ValueError):  # no real file descriptor (captured)
        pass


def _run_command(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    try:
        return int(args._run(args) or 0)
    except AcegError as exc:
        print(f"aceg: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("aceg: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    try:
        with warnings.catch_warnings():
            warnings.showwarning = functools.partial(_show_warning, warnings.showwarning)
            try:
                return _run_command(argv)
            finally:
                if sys.stdout is not None:
                    sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
