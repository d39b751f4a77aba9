"""Entry point of the ``aceg`` command.

Each sub-command lives in ``aceg.cli.<name>`` and exposes ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``. Bad input raises :class:`AcegError`, printed here as one line
(``aceg: error: ...``) with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from aceg.errors import AcegError

#: Sub-commands, in the order ``aceg --help`` lists them.
COMMANDS = ("demo", "info", "convert", "eval", "synth", "map", "localize", "pretrain",
            "pretrain-anchors", "bench", "export", "plot", "serve")

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


def main(argv: list[str] | None = None) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
