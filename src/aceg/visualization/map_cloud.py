"""Coloured point cloud of a map: the scene coordinates it predicts for its mapping images.

For every mapping frame (:func:`map_point_cloud`):

1. the image is prepared exactly as mapping and localization prepare it
   (:func:`aceg.data.images.prepare_image` at the map's short side, cropped to the encoder
   stride), encoded by the localizer's encoder and turned into one world point per patch
   by :meth:`aceg.localization.localizer.Localizer.predict` (world frame, metres);
2. each point gets the mean colour of its patch (the ``s x s`` block of the prepared image
   around the patch centre, :func:`aceg.model.encoder.patch_centres`);
3. filters: non-finite points are dropped; for ACE-G maps only the ``keep_quantile``
   fraction of each image's patches with the smallest predicted uncertainty is kept (the
   filter localization uses); when the frame has a pose, points behind the mapping camera
   or reprojecting more than ``max_reproj_px`` pixels from their patch centre are dropped
   (the map itself says they are wrong).

Camera frusta (:func:`aceg.visualization.pointcloud.frustum_points`) of the posed frames can
be appended in a fixed colour.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from aceg.data.camera import invert_pose
from aceg.data.images import prepare_image
from aceg.data.scene import Scene
from aceg.localization.poses import confident_mask
from aceg.visualization.pointcloud import frustum_points

#: Default reprojection-error bound (pixels of the prepared image), as RANSAC's threshold.
MAX_REPROJ_PX = 10.0

#: Colour of camera frusta (RGB).
FRUSTUM_COLOR = (255, 40, 40)


@dataclass
class MapCloud:
    """Points (N, 3) float64 world coordinates in metres, colours (N, 3) uint8 RGB, and
    per-stage counts ("patches", "finite", "uncertainty", "reprojection", "frames")."""

    points: np.ndarray
    colors: np.ndarray
    counts: dict = field(default_factory=dict)


def patch_colours(rgb: np.ndarray, rows: int, cols: int, stride: int) -> np.ndarray:
    """Mean RGB (rows*cols, 3) uint8 of each ``stride x stride`` block, row-major."""
    block = rgb[: rows * stride, : cols * stride]
    small = cv2.resize(block, (cols, rows), interpolation=cv2.INTER_AREA)
    return small.reshape(-1, 3)


def frame_points(localizer, frame, keep_quantile: float | None = None,
                 max_reproj_px: float | None = MAX_REPROJ_PX) -> tuple[np.ndarray, np.ndarray, dict]:
    """Points, colours and counts of one frame (see module docstring)."""
    prep = prepare_image(frame.image_path, frame.intrinsics, localizer.data.short_side,
                         localizer.encoder.stride)
    feats = localizer.encoder.encode(prep.rgb)[0]
    world, log_unc = localizer.predict(feats)
    rows, cols = feats.shape[1:]
    colours = patch_colours(prep.rgb, rows, cols, localizer.encoder.stride)
    pixels = localizer.encoder.centres(rows, cols).astype(np.float64)
    counts = {"patches": int(len(world)), "finite": int(np.all(np.isfinite(world), axis=1).sum())}
    quantile = localizer.keep_quantile if keep_quantile is None else keep_quantile
    keep = confident_mask(world, log_unc, quantile)
    counts["uncertainty"] = int(keep.sum())
    if frame.cam_to_world is not None and max_reproj_px is not None:
        w2c = invert_pose(frame.cam_to_world)
        pc = world @ w2c[:3, :3].T + w2c[:3, 3]
        z = pc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = (pc @ prep.intrinsics.K.T)[:, :2] / z[:, None]
            err = np.linalg.norm(uv - pixels, axis=1)
        keep &= (z > 0) & (err <= max_reproj_px)
    counts["reprojection"] = int(keep.sum())
    return world[keep], colours[keep], counts


def map_point_cloud(localizer, scene: Scene, keep_quantile: float | None = None,
                    max_reproj_px: float | None = MAX_REPROJ_PX, max_points: int | None = None,
                    seed: int = 0, progress=None) -> MapCloud:
    """Point cloud of ``scene`` (the mapping frames) as predicted by ``localizer``'s map.

    Args:
        localizer: a :class:`~aceg.localization.localizer.Localizer` of the map.
        keep_quantile: ACE-G uncertainty filter (None: the localizer's); 1 keeps all.
        max_reproj_px: reprojection filter for posed frames (None: off).
        max_points: random subsample (seeded) to at most this many points.
        progress: optional callable called once per frame.
    """
    points, colours = [], []
    totals: dict[str, int] = {}
    for frame in scene.frames:
        p, c, counts = frame_points(localizer, frame, keep_quantile, max_reproj_px)
        points.append(p)
        colours.append(c)
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
        if progress is not None:
            progress()
    pts = np.concatenate(points) if points else np.zeros((0, 3))
    cols = np.concatenate(colours) if colours else np.zeros((0, 3), np.uint8)
    if max_points is not None and len(pts) > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(len(pts), max_points, replace=False))
        pts, cols = pts[idx], cols[idx]
    totals["frames"] = len(scene)
    totals["written"] = int(len(pts))
    return MapCloud(pts, cols.astype(np.uint8), totals)


def frusta_cloud(scene: Scene, size: float, color=FRUSTUM_COLOR) -> tuple[np.ndarray, np.ndarray]:
    """Points and colours tracing the frusta of the posed frames of ``scene`` (each with its
    image's aspect ratio), ``size`` metres deep."""
    pts = [frustum_points(f.cam_to_world, size, f.width / max(f.height, 1))
           for f in scene.frames if f.cam_to_world is not None]
    if not pts:
        return np.zeros((0, 3)), np.zeros((0, 3), np.uint8)
    all_pts = np.concatenate(pts)
    return all_pts, np.tile(np.asarray(color, np.uint8), (len(all_pts), 1))


def auto_frustum_size(scene: Scene, points: np.ndarray) -> float:
    """A frustum depth that reads well: 5% of the extent of cameras and points (>= 1 cm)."""
    centres = [f.cam_to_world[:3, 3] for f in scene.frames if f.cam_to_world is not None]
    allp = np.concatenate([np.asarray(centres).reshape(-1, 3), points.reshape(-1, 3)])
    if len(allp) < 2:
        return 0.1
    lo, hi = np.percentile(allp, [2, 98], axis=0)
    return max(0.05 * float(np.linalg.norm(hi - lo)), 0.01)
