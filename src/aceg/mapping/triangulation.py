"""Sparse depth for RGB-only mapping, triangulated from the mapping images and their poses.

Reprojection-only mapping pins each patch's scene coordinate to its viewing ray; where on
the ray it lies comes only from several views agreeing, and the maps of both ACE-G and ACE
end up 0.36-0.46 m off along the rays on held-out synthetic scenes (MODEL_CARD.md, "Map
geometry"). The poses of the mapping images are known, so matched keypoints of
neighbouring images can be triangulated: :func:`triangulated_depth_maps` runs the
feature-matching baseline's mapping step (:func:`aceg.baselines.feature_matching.build_feature_map`
without depth: XFeat keypoints, LighterGlue matches with the nearest cameras, triangulation
kept when in front of both cameras, reprojecting within a few pixels and seen under a
minimum angle) and turns its 3-D points into one sparse depth map per image.

A depth map here is (H, W) float32 metres in the *prepared* image (working short side,
the crop of :func:`aceg.data.images.prepare_image`), camera z along the OpenCV optical
axis, 0 where unknown. Every encoder patch cell (``stride`` x ``stride`` pixels) that holds
triangulated keypoints gets their median depth over the whole cell, so a buffer patch whose
centre falls in the cell (also after augmentation, which the buffer maps back to the
prepared image) reads that depth and is supervised in 3-D along its own ray
(:func:`aceg.mapping.buffer.build_buffer` ``depth_maps``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from aceg.baselines.feature_matching import FeatureMatchingConfig, build_feature_map
from aceg.data.camera import invert_pose
from aceg.data.scene import Scene

#: Keypoints and matching of the triangulation (the feature-matching baseline's settings,
#: with fewer keypoints: a sparse depth per patch cell is all mapping needs).
TRIANGULATION_CONFIG = FeatureMatchingConfig(max_keypoints=1024, triangulation_max_error_px=1.5,
                                             min_triangulation_angle_deg=2.0)


def keypoint_depth_map(keypoints: np.ndarray, depths: np.ndarray, height: int, width: int,
                       stride: int) -> np.ndarray:
    """(H, W) sparse depth map: each ``stride`` cell holding keypoints gets their median depth.

    ``keypoints``: (N, 2) pixels (u, v) of the prepared image; ``depths``: (N,) camera z in
    metres (non-positive or non-finite ones are ignored). Cells without keypoints are 0.
    """
    out = np.zeros((height, width), np.float32)
    ok = np.isfinite(depths) & (depths > 0) & np.isfinite(keypoints).all(1)
    if not ok.any():
        return out
    col = np.clip((keypoints[ok, 0] + 0.5) // stride, 0, (width - 1) // stride).astype(int)
    row = np.clip((keypoints[ok, 1] + 0.5) // stride, 0, (height - 1) // stride).astype(int)
    z = depths[ok]
    cell = row * (width // stride + 1) + col
    order = np.argsort(cell, kind="stable")
    cell, row, col, z = cell[order], row[order], col[order], z[order]
    starts = np.flatnonzero(np.r_[True, cell[1:] != cell[:-1]])
    ends = np.r_[starts[1:], len(cell)]
    for s, e in zip(starts, ends, strict=True):
        r, c = row[s] * stride, col[s] * stride
        out[r: r + stride, c: c + stride] = np.median(z[s:e])
    return out


def triangulated_depth_maps(scene: Scene, short_side: int, stride: int,
                            config: FeatureMatchingConfig = TRIANGULATION_CONFIG,
                            progress: bool = True) -> tuple[list[np.ndarray], dict]:
    """One sparse depth map per frame of ``scene`` (see module docstring) and statistics.

    ``short_side`` is the working short side the buffer prepares the images at; every frame
    needs a pose (:func:`aceg.mapping.mapper.check_mapping_scene`). Returns the maps, in
    frame order, and ``{"points": triangulated keypoints, "cells": % of patch cells with a
    depth, "seconds": wall time}``.
    """
    fmap = build_feature_map(scene, replace(config, short_side=short_side), use_depth=False,
                             progress=progress)
    maps, cells, total = [], 0, 0
    for frame, image in zip(scene.frames, fmap.images, strict=True):
        w2c = invert_pose(frame.cam_to_world)
        z = image.points3d.astype(np.float64) @ w2c[2, :3] + w2c[2, 3]
        depth = keypoint_depth_map(image.keypoints, z, image.height, image.width, stride)
        grid = depth[stride // 2:: stride, stride // 2:: stride]
        cells += int((grid > 0).sum())
        total += grid.size
        maps.append(depth)
    stats = {"points": fmap.num_points, "cells": round(100.0 * cells / max(total, 1), 1),
             "seconds": round(fmap.stats["mapping_seconds"], 1)}
    return maps, stats


def densify_cell_depth(depth: np.ndarray, stride: int, radius: int = 2, min_neighbours: int = 4,
                       max_residual: float = 0.05, max_ratio: float = 1.25) -> np.ndarray:
    """Fill the empty patch cells of a sparse per-cell depth map from their neighbours.

    ``depth``: (H, W) metres, one value per ``stride`` cell or 0 (as
    :func:`keypoint_depth_map` makes it). An empty cell with at least ``min_neighbours``
    cells holding a depth within ``radius`` cells fits a plane to them in *inverse* depth
    over the cell grid (a 3-D plane has inverse depth affine in the image), by least
    squares. The cell takes the plane's depth when the fit explains its neighbours (RMS
    residual at most ``max_residual`` of their mean inverse depth, and the farthest
    neighbour at most ``max_ratio`` times as far as the nearest: one surface, not an edge
    between two, which two lines of neighbours would fit exactly) and the value lies within
    the neighbours' range (interpolation, never extrapolation). Returns a new (H, W) map;
    cells that held a depth keep it.
    """
    h, w = depth.shape
    rows, cols = (h - 1) // stride + 1, (w - 1) // stride + 1
    centre = depth[np.minimum(np.arange(rows) * stride + stride // 2, h - 1)][
        :, np.minimum(np.arange(cols) * stride + stride // 2, w - 1)]
    known = centre > 0
    inv = np.where(known, 1.0 / np.where(known, centre, 1.0), 0.0).astype(np.float64)
    k = 2 * radius + 1
    pad_known = np.pad(known.astype(np.float64), radius)
    pad_inv = np.pad(inv, radius)
    win_known = np.lib.stride_tricks.sliding_window_view(pad_known, (k, k))  # (rows, cols, k, k)
    win_inv = np.lib.stride_tricks.sliding_window_view(pad_inv, (k, k))
    dy, dx = np.mgrid[-radius: radius + 1, -radius: radius + 1].astype(np.float64)
    basis = np.stack([dx, dy, np.ones_like(dx)])  # (3, k, k): the plane's unknowns a, b, c
    ata = np.einsum("ijab,pab,qab->ijpq", win_known, basis, basis)
    aty = np.einsum("ijab,pab,ijab->ijp", win_known, basis, win_inv)
    count = win_known.sum((2, 3))
    todo = (~known) & (count >= min_neighbours)
    todo &= np.abs(np.linalg.det(ata)) > 1e-6  # neighbours not all on one line
    out = depth.copy()
    if not todo.any():
        return out
    coef = np.linalg.solve(ata[todo], aty[todo][..., None])[..., 0]  # (M, 3)
    wk, wi = win_known[todo], win_inv[todo]
    fit = np.einsum("mp,pab->mab", coef, basis)
    n = count[todo]
    rms = np.sqrt((wk * (fit - wi) ** 2).sum((1, 2)) / n)
    mean_inv = (wk * wi).sum((1, 2)) / n
    lo = np.where(wk > 0, wi, np.inf).min((1, 2))
    hi = np.where(wk > 0, wi, -np.inf).max((1, 2))
    value = coef[:, 2]
    ok = (rms <= max_residual * mean_inv) & (hi <= max_ratio * lo) & (value >= lo) & (value <= hi) & (value > 0)
    for (r, c), v in zip(np.argwhere(todo)[ok], value[ok], strict=True):
        out[r * stride: (r + 1) * stride, c * stride: (c + 1) * stride] = 1.0 / v
    return out
