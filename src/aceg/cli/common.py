"""Arguments shared by several commands."""

from __future__ import annotations

import argparse

from aceg.data.readers import format_names, read_scene
from aceg.data.scene import Scene


def add_format_argument(parser: argparse.ArgumentParser, flag: str = "--format") -> None:
    parser.add_argument(
        flag,
        choices=format_names(),
        default=None,
        help="scene format (default: detected from the path)",
    )


def read_scene_arg(path: str, fmt: str | None) -> Scene:
    return read_scene(path, fmt)
