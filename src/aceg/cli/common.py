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


def add_query_arguments(parser: argparse.ArgumentParser) -> None:
    """``--speed`` (a named trade-off of query time against accuracy,
    :data:`aceg.localization.localizer.SPEEDS`) and ``--encoder-runtime``."""
    from aceg.localization.localizer import DEFAULT_SPEED, ENCODER_RUNTIME, SPEEDS
    from aceg.model.onnx_network import RUNTIMES

    lines = [f"{name}: {patches} query cells, "
             + ("the map's own lists probed" if probed is None else f"{probed} anchor lists probed")
             for name, (patches, probed) in SPEEDS.items()]
    parser.add_argument("--speed", choices=tuple(SPEEDS), default=DEFAULT_SPEED,
                        help=f"query time against accuracy, for maps of the default anchor model "
                             f"({'; '.join(lines)}; default {DEFAULT_SPEED}). 'fast' is for a "
                             "live camera; BENCHMARKS.md has what each costs and gives")
    parser.add_argument("--encoder-runtime", choices=RUNTIMES, default=ENCODER_RUNTIME,
                        help="what runs the query encoder's network: 'auto' is ONNX Runtime on "
                             "the CPU (exported once per image size into ~/.cache/aceg or "
                             "$ACEG_CACHE; the first query at a new size waits a second or two), "
                             f"PyTorch otherwise; 'torch' never uses it (default {ENCODER_RUNTIME})")


def query_settings(args: argparse.Namespace) -> dict:
    """:class:`aceg.localization.localizer.Localizer` keyword arguments of
    :func:`add_query_arguments`' options."""
    from aceg.localization.localizer import speed_settings

    return {**speed_settings(args.speed), "encoder_runtime": args.encoder_runtime}
