"""Point clouds as PLY files (binary little-endian, float32 xyz + uint8 rgb), written atomically.

Coordinates are world coordinates in metres (the scene's frame, see :mod:`aceg.data.camera`).
Camera frusta can be added as small line-free point sets so any PLY viewer shows them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aceg.io import atomic_path


def write_ply(path: str | Path, points: np.ndarray, colors: np.ndarray | None = None) -> None:
    """Write ``points`` (N, 3) with optional ``colors`` (N, 3) uint8 RGB to a binary PLY."""
    points = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    if colors is None:
        colors = np.full((len(points), 3), 200, np.uint8)
    colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    if len(colors) != len(points):
        raise ValueError("points and colors differ in length")
    vertex = np.empty(
        len(points),
        dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")],
    )
    vertex["x"], vertex["y"], vertex["z"] = points.T
    vertex["red"], vertex["green"], vertex["blue"] = colors.T
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(points)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        "end_header\n"
    )
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(vertex.tobytes())


def frustum_points(
    cam_to_world: np.ndarray, size: float = 0.1, aspect: float = 4 / 3, samples: int = 12
) -> np.ndarray:
    """Points (M, 3) tracing a camera frustum's edges (pyramid of depth ``size`` metres).

    The apex is the camera centre; the base lies ``size`` ahead along the camera's +z
    (OpenCV axes), with half-width ``size * aspect / 2`` along +x and half-height ``size / 2``
    along +y.
    """
    hw, hh = size * aspect / 2, size / 2
    corners = np.array([[-hw, -hh, size], [hw, -hh, size], [hw, hh, size], [-hw, hh, size]])
    apex = np.zeros(3)
    edges = [(apex, c) for c in corners] + [(corners[i], corners[(i + 1) % 4]) for i in range(4)]
    t = np.linspace(0, 1, samples)[:, None]
    local = np.concatenate([a + t * (b - a) for a, b in edges])
    return local @ cam_to_world[:3, :3].T + cam_to_world[:3, 3]
