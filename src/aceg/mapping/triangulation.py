"""Sparse depth for RGB-only mapping, triangulated from the mapping images and their poses.

Reprojection-only mapping pins each patch's scene coordinate to its viewing ray; where on
the ray it lies comes only from several views agreeing, and maps of both ACE-G and ACE
end up off along the rays. The poses of the mapping images are known, so matched
keypoints of neighbouring images can be triangulated: :func:`triangulated_depth_maps`
extracts XFeat keypoints (:mod:`aceg.mapping.keypoints`), matches each image with its
nearest cameras (LighterGlue), chains the matches into tracks across images and
triangulates each track from all its views, keeping a point when it is in front of them,
reprojects within a few pixels and is seen under a minimum angle
(:mod:`aceg.mapping.tracks`), then turns the 3-D points into one sparse depth map per
image. Local planes fitted over the patch cells then denoise those depths
(:func:`refine_cell_depth`, which can also fill the empty cells between them; off by
default).

A depth map here is (H, W) float32 metres in the *prepared* image (working short side,
the crop of :func:`aceg.data.images.prepare_image`), camera z along the OpenCV optical
axis, 0 where unknown. Every encoder patch cell (``stride`` x ``stride`` pixels) that holds
triangulated keypoints gets their median depth (then refined) over the whole cell, so a
buffer patch whose centre falls in the cell (also after augmentation, which the buffer
maps back to the prepared image) reads that depth and is supervised in 3-D along its own
ray (:func:`aceg.mapping.buffer.build_buffer` ``depth_maps``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from aceg.data.camera import invert_pose
from aceg.data.scene import Scene
from aceg.errors import AcegError
from aceg.mapping.keypoints import SceneKeypoints, SparseFeatures, extract_scene_keypoints
from aceg.mapping.tracks import TriangulationConfig, triangulate_scene

#: Keypoints, matching and triangulation of mapping (:class:`TriangulationConfig`'s
#: defaults): fewer keypoints than the feature-matching baseline, a sparse depth per patch
#: cell being all mapping needs, and tracks across images rather than pairs, which put
#: more cells near their true depth.
TRIANGULATION_CONFIG = TriangulationConfig()

#: Small scenes get more keypoints per image: with few images the anchors would fall short
#: of the budget, and the matching stays within the work of a large scene at the default
#: keypoints as long as there are at most this many images.
SMALL_SCENE_IMAGES = 70
SMALL_SCENE_KEYPOINTS = 2048
#: Large places get fewer keypoints per image and LighterGlue's early stop: their anchor
#: budget (:func:`aceg.mapping.anchor_budget.anchor_budget`, a fixed number per image
#: beyond the regressor's own budget) keeps only a fraction of the cells that 1,024
#: keypoints give a point, and matching is most of their mapping time
#: (docs/experiments.md).
LARGE_SCENE_IMAGES = 400
LARGE_SCENE_KEYPOINTS = 512
LARGE_SCENE_DEPTH_CONFIDENCE = 0.95

#: Version of what :func:`triangulated_depth_maps` computes by default, a plain number
#: raised whenever its output changes. It stamps the caches of that output (pre-training
#: targets in :mod:`aceg.pretraining.feature_store`, mapped rooms in
#: :mod:`aceg.pretraining.mapped_rooms`); a cache stamped with another value, including
#: the strings older versions wrote, is stale and computed again.
TRIANGULATION_VERSION = 4


def default_keypoints(images: int) -> int:
    """Keypoints per image the triangulation of a scene of ``images`` images uses by default."""
    if images <= SMALL_SCENE_IMAGES:
        return SMALL_SCENE_KEYPOINTS
    return TRIANGULATION_CONFIG.max_keypoints if images <= LARGE_SCENE_IMAGES else LARGE_SCENE_KEYPOINTS


def default_triangulation(images: int, keypoints: int | None = None) -> TriangulationConfig:
    """:data:`TRIANGULATION_CONFIG` for a scene of ``images`` images: ``keypoints`` per image
    (None: :func:`default_keypoints`), and LighterGlue's early stop beyond
    :data:`LARGE_SCENE_IMAGES` images."""
    early = images > LARGE_SCENE_IMAGES
    return replace(TRIANGULATION_CONFIG,
                   max_keypoints=default_keypoints(images) if keypoints is None else keypoints,
                   depth_confidence=LARGE_SCENE_DEPTH_CONFIDENCE if early else TRIANGULATION_CONFIG.depth_confidence)


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


class CellDepthMaps(Sequence):
    """Depth maps that hold one value per patch cell, stored as their cell grids.

    A map of :func:`keypoint_depth_map` (and :func:`refine_cell_depth`) is constant over
    each ``stride`` x ``stride`` cell, so its grid of cells is all of it; item ``i`` is the
    (H, W) float32 map again. A place of thousands of images keeps its maps in a
    ``stride``^2-th of the memory.
    """

    def __init__(self, stride: int) -> None:
        self.stride = stride
        self._grids: list[np.ndarray] = []
        self._shapes: list[tuple[int, int]] = []

    def append(self, depth: np.ndarray) -> None:
        """Store ``depth`` ((H, W), constant over each cell) as its grid of cells."""
        self._grids.append(np.ascontiguousarray(depth[:: self.stride, :: self.stride]))
        self._shapes.append(depth.shape)

    def __len__(self) -> int:
        return len(self._grids)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        h, w = self._shapes[index]
        grid = self._grids[index]
        return np.repeat(np.repeat(grid, self.stride, 0), self.stride, 1)[:h, :w]


def triangulated_depth_maps(scene: Scene, short_side: int, stride: int,
                            config: TriangulationConfig | None = None,
                            progress: bool = True, refine: bool = True,
                            checkpoint=None) -> tuple[CellDepthMaps, dict]:
    """One sparse depth map per frame of ``scene`` (see module docstring) and statistics.
    ``config`` defaults to :func:`default_triangulation` of the scene's size.
    With ``refine`` each map is denoised by :func:`refine_cell_depth` (its defaults).
    ``checkpoint``: see :func:`triangulate_mapping_keypoints`.

    ``short_side`` is the working short side the buffer prepares the images at; every frame
    needs a pose (:func:`aceg.mapping.common.check_mapping_scene`). Returns the maps, in
    frame order (a :class:`CellDepthMaps`), and ``{"points": triangulated keypoints,
    "cells": % of patch cells with a depth, "seconds": wall time}``.
    """
    triangulated = triangulate_mapping_keypoints(scene, short_side, config, progress, checkpoint)
    return depth_maps_of(scene, triangulated, stride, refine)


def depth_maps_of(scene: Scene, triangulated: TriangulatedKeypoints, stride: int,
                  refine: bool = True) -> tuple[CellDepthMaps, dict]:
    """:func:`triangulated_depth_maps` of keypoints already triangulated."""
    maps, cells, total, points = CellDepthMaps(stride), 0, 0, 0
    for frame, feats, xyz in zip(scene.frames, triangulated.keypoints.features, triangulated.world,
                                 strict=True):
        keep = np.isfinite(xyz).all(1)
        # rounded to float32 first, as a point is stored (the depths depend on it bit for bit)
        xyz = xyz[keep].astype(np.float32).astype(np.float64)
        w2c = invert_pose(frame.cam_to_world)
        depth = keypoint_depth_map(feats.keypoints[keep], xyz @ w2c[2, :3] + w2c[2, 3],
                                   feats.height, feats.width, stride)
        if refine:
            depth = refine_cell_depth(depth, stride)
        grid = depth[stride // 2:: stride, stride // 2:: stride]
        cells += int((grid > 0).sum())
        total += grid.size
        points += len(xyz)
        maps.append(depth)
    stats = {"points": points, "keypoints": triangulated.max_keypoints,
             "cells": round(100.0 * cells / max(total, 1), 1),
             "seconds": round(triangulated.seconds, 1)}
    return maps, stats


@dataclass
class TriangulatedKeypoints:
    """The mapping images' keypoints and their tracks' points.

    Attributes:
        keypoints: per frame, in frame order, the XFeat keypoints (pixels of the prepared
            image at the working short side) and descriptors (64-d, at the keypoints).
        world: per frame, (N_i, 3) float64 world points in metres of those keypoints, NaN
            where none was triangulated; the keypoints of one track share one point.
        max_keypoints: keypoints per image asked for; seconds: wall time.
    """

    keypoints: SceneKeypoints
    world: list[np.ndarray]
    max_keypoints: int
    seconds: float


def triangulate_mapping_keypoints(scene: Scene, short_side: int,
                                  config: TriangulationConfig | None = None,
                                  progress: bool = True, checkpoint=None,
                                  keep_cells: bool = False) -> TriangulatedKeypoints:
    """Extract the keypoints of every frame of ``scene`` (posed) at the working short side
    ``short_side`` and triangulate them (:func:`aceg.mapping.tracks.triangulate_scene`);
    ``config`` defaults to :func:`default_triangulation` of the scene's size. With a
    ``checkpoint`` (:class:`aceg.mapping.checkpoint.MappingCheckpoint`) the keypoints and
    matches are kept as they are made, and read back when an earlier run left them. With
    ``keep_cells`` the keypoints also carry their cells' encoder features
    (:meth:`aceg.mapping.keypoints.SparseFeatures.extract`)."""
    if config is None:
        config = default_triangulation(len(scene.frames))
    if not scene.has_poses:
        raise AcegError(f"scene {scene.name!r}: mapping needs a pose for every frame")
    features = SparseFeatures(config.max_keypoints, depth_confidence=config.depth_confidence)
    start = time.perf_counter()
    keypoints = extract_scene_keypoints(scene, scene.working_short_side(short_side), features,
                                        progress=progress, checkpoint=checkpoint,
                                        keep_cells=keep_cells)
    world = triangulate_scene(scene, keypoints, features, config, progress, checkpoint)
    return TriangulatedKeypoints(keypoints, world, config.max_keypoints, time.perf_counter() - start)


def refine_cell_depth(depth: np.ndarray, stride: int, radius: int = 2, min_neighbours: int = 4,
                      max_residual: float = 0.05, max_ratio: float = 1.25, smooth: bool = True,
                      fill: bool = False, robust_iterations: int = 2,
                      keep_unconfirmed: bool = True) -> np.ndarray:
    """Denoise and fill a sparse per-cell depth map with local planes.

    ``depth``: (H, W) metres, one value per ``stride`` cell or 0 (as
    :func:`keypoint_depth_map` makes it). Around every cell, the cells holding a depth
    within ``radius`` cells (at least ``min_neighbours``, not all on one line) get a plane
    fitted in *inverse* depth over the cell grid (a 3-D plane has inverse depth affine in
    the image), by least squares re-weighted ``robust_iterations`` times so that cells off
    the plane count less. The plane is trusted when it explains its cells (weighted RMS
    residual at most ``max_residual`` of its inverse depth) and the farthest of them is at
    most ``max_ratio`` times as far as the nearest (one surface, not an edge between two,
    which two lines of cells would fit exactly). Then a cell with a depth takes the plane's
    (``smooth``: triangulation noise averages out over the neighbours), and an empty cell
    takes it when it lies within the neighbours' range (``fill``; interpolation, never
    extrapolation). Without ``keep_unconfirmed`` a cell whose depth no trusted plane
    confirms is emptied. Returns a new (H, W) map.
    """
    h, w = depth.shape
    rows, cols = (h - 1) // stride + 1, (w - 1) // stride + 1
    centre = depth[np.minimum(np.arange(rows) * stride + stride // 2, h - 1)][
        :, np.minimum(np.arange(cols) * stride + stride // 2, w - 1)]
    known = centre > 0
    out = depth.copy()
    if known.sum() < 3:
        return out if keep_unconfirmed else np.zeros_like(out)
    inv = np.where(known, 1.0 / np.where(known, centre, 1.0), 0.0).astype(np.float64)
    k = 2 * radius + 1
    win_known = np.lib.stride_tricks.sliding_window_view(np.pad(known.astype(np.float64), radius), (k, k))
    win_inv = np.lib.stride_tricks.sliding_window_view(np.pad(inv, radius), (k, k))
    count = win_known.sum((2, 3))
    todo = (count >= min_neighbours) & ((known & (smooth or not keep_unconfirmed)) | (~known & fill))
    if not todo.any():
        return out if keep_unconfirmed else np.zeros_like(out)
    wk, wi = win_known[todo], win_inv[todo]  # (M, k, k)
    dy, dx = np.mgrid[-radius: radius + 1, -radius: radius + 1].astype(np.float64)
    basis = np.stack([dx, dy, np.ones_like(dx)])  # (3, k, k): the plane's unknowns a, b, c
    spread = np.einsum("mab,pab,qab->mpq", wk, basis, basis)
    solvable = np.abs(np.linalg.det(spread)) > 1e-6  # the cells not all on one line
    weight = wk
    for _ in range(robust_iterations + 1):
        ata = np.einsum("mab,pab,qab->mpq", weight, basis, basis) + 1e-9 * np.eye(3)
        aty = np.einsum("mab,pab,mab->mp", weight, basis, wi)
        coef = np.linalg.solve(ata, aty[..., None])[..., 0]  # (M, 3)
        residual = np.abs(np.einsum("mp,pab->mab", coef, basis) - wi) * wk
        scale = 0.02 * np.abs(coef[:, 2])[:, None, None]  # Huber-like: full weight within depth / 50
        weight = wk * np.minimum(1.0, scale / np.maximum(residual, 1e-12))
    value = coef[:, 2]
    rms = np.sqrt((weight * residual ** 2).sum((1, 2)) / np.maximum(weight.sum((1, 2)), 1e-12))
    lo = np.where(wk > 0, wi, np.inf).min((1, 2))
    hi = np.where(wk > 0, wi, -np.inf).max((1, 2))
    ok = solvable & (value > 0) & (rms <= max_residual * value) & (hi <= max_ratio * lo)
    ok &= known[todo] | ((value >= lo) & (value <= hi))
    if not keep_unconfirmed:
        confirmed = np.zeros_like(known)
        confirmed[todo] = ok
        for r, c in np.argwhere(known & ~confirmed):
            out[r * stride: (r + 1) * stride, c * stride: (c + 1) * stride] = 0.0
    for (r, c), v in zip(np.argwhere(todo)[ok], value[ok], strict=True):
        if smooth or not known[r, c]:
            out[r * stride: (r + 1) * stride, c * stride: (c + 1) * stride] = 1.0 / v
    return out
