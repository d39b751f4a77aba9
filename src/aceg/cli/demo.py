"""``aceg demo``: the end-to-end demonstration (synthesize, map, localize, evaluate, plot)."""

from __future__ import annotations

HELP = "end-to-end demo on an embedded synthetic scene (map, localize, evaluate, plot)"


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="aceg-demo", help="output folder (default: %(default)s)")


def run(args) -> int:
    print("aceg demo: not yet available (needs the synthetic generator and the core model).")
    return 0
