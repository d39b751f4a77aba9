"""Set-up shared by the service benchmarks (``service_load.py``, ``service_hardening.py``):
the ``--map`` / ``--queries`` options, the default query images, the maps folder the
service is started on, and the form fields of a localization request.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from aceg.data.camera import Intrinsics
from aceg.data.readers import read_scene
from aceg.data.scene import Scene

ROOT = Path(__file__).resolve().parents[1]
#: The Middlebury templeRing images the default maps are built from and queried with.
TEMPLE = ROOT.parent / "shared" / "data" / "middlebury" / "templeRing"
#: Name under which :func:`serve_as_bench` puts a map in the service's maps folder.
BENCH_MAP = "bench"


def add_map_arguments(parser: argparse.ArgumentParser) -> None:
    """``--map`` (a map file) and ``--queries`` (a scene with the query images and their
    intrinsics), which replace the default map and queries together."""
    parser.add_argument("--map", type=Path, default=None, help="map file (default: templeRing)")
    parser.add_argument("--queries", default=None, help="scene with query images and intrinsics")


def map_and_queries(parser: argparse.ArgumentParser, args: argparse.Namespace,
                    build_default: Callable[[], tuple[Path, Scene]]) -> tuple[Path, Scene]:
    """``(map file, query scene)`` of ``--map`` and ``--queries`` when a map is given
    (``--map`` without ``--queries`` is a usage error), else of ``build_default()``."""
    if args.map is None:
        return build_default()
    if args.queries is None:
        parser.error("--map needs --queries")
    return args.map, read_scene(args.queries)


def serve_as_bench(map_path: Path, maps_dir: Path) -> Path:
    """``maps_dir`` (created) holding ``bench.map``, a link to ``map_path`` that replaces
    any earlier one: the service started on ``maps_dir`` serves the map as ``bench``."""
    maps_dir.mkdir(parents=True, exist_ok=True)
    link = maps_dir / f"{BENCH_MAP}.map"
    if link.exists() or link.is_symlink():
        link.unlink()
    link.symlink_to(Path(map_path).resolve())
    return maps_dir


def localize_fields(intrinsics: Intrinsics, distortion: bool = True) -> dict[str, str]:
    """Form fields of a localization request: ``fx fy cx cy`` (pixels) and, with
    ``distortion``, the OpenCV coefficients ``k1 k2 p1 p2 k3`` that ``intrinsics`` holds;
    values as ``repr``."""
    fields = {"fx": repr(intrinsics.fx), "fy": repr(intrinsics.fy), "cx": repr(intrinsics.cx),
              "cy": repr(intrinsics.cy)}
    if distortion:
        for key, value in zip(("k1", "k2", "p1", "p2", "k3"), intrinsics.dist, strict=False):
            fields[key] = repr(value)
    return fields
