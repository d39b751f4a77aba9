"""Triangulation of matched keypoints between posed images: which images are matched,
pairwise or multi-view (track) triangulation with the known poses, and the checks a
point must pass.

Used by the default model's mapping (:func:`aceg.mapping.triangulation.triangulated_depth_maps`)
and by the feature-matching baseline's map (:func:`aceg.baselines.feature_matching.build_feature_map`).
Poses are camera-to-world 4x4 (OpenCV axes, metres; :mod:`aceg.data.camera`); keypoints are
pixels of the prepared images (:mod:`aceg.mapping.keypoints`); points are world
coordinates in metres.

Each image is matched with its nearest cameras (:class:`TriangulationConfig`
``neighbours``, ``neighbour_step``). A pair's matches are triangulated with the two poses
and kept when in front of both cameras and reprojecting within ``max_error_px``. Then
either ("pairs") each pair's point also needs rays at least ``min_angle_deg`` apart and a
keypoint takes the median of its pairs' points, or ("tracks") the consistent matches are
chained into tracks across images and each track is triangulated from all its views at
once (:func:`triangulate_tracks`; wider baselines).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from tqdm import tqdm

from aceg.data.camera import Intrinsics, invert_pose
from aceg.data.scene import Scene
from aceg.mapping.keypoints import SceneKeypoints, SparseFeatures

#: How matched keypoints become points (:class:`TriangulationConfig` ``method``).
TRIANGULATION_METHODS = ("pairs", "tracks")


@dataclass(frozen=True)
class TriangulationConfig:
    """Keypoints, matching and triangulation between posed images (module docstring).

    The defaults are those of the default model's mapping
    (:data:`aceg.mapping.triangulation.TRIANGULATION_CONFIG`); the feature-matching
    baseline derives its own (:meth:`aceg.baselines.feature_matching.FeatureMatchingConfig.triangulation_config`).

    Attributes:
        max_keypoints: XFeat keypoints per image at most.
        match_min_confidence: LighterGlue's threshold on a match's confidence (0-1).
        neighbours: cameras each image is matched with: its nearest ones (camera centres)
            whose optical axes differ from its own by less than 75 deg.
        neighbour_step: match with the nearest cameras of ranks 0, step, 2 step, ... (wider
            baselines).
        depth_confidence: LighterGlue's early stop (LightGlue's adaptive depth): a pair
            leaves the layers once this share of its keypoints is confidently matched or
            not (-1: all layers).
        method: "pairs" or "tracks" (:data:`TRIANGULATION_METHODS`, module docstring).
        max_error_px: reprojection error (pixels of the prepared images) every view of a
            point must stay within.
        min_angle_deg: smallest accepted widest angle between a point's rays (degrees).
    """

    max_keypoints: int = 1024
    match_min_confidence: float = 0.1
    neighbours: int = 3
    neighbour_step: int = 1
    method: str = "tracks"
    max_error_px: float = 1.5
    min_angle_deg: float = 2.0
    depth_confidence: float = -1.0

    def __post_init__(self) -> None:
        if self.method not in TRIANGULATION_METHODS:
            raise ValueError(f"unknown triangulation {self.method!r}: 'pairs' or 'tracks'")


def _projection(intrinsics: Intrinsics, cam_to_world: np.ndarray) -> np.ndarray:
    """3x4 projection matrix K [R|t] of the world-to-camera pose of ``cam_to_world``."""
    return intrinsics.K @ invert_pose(cam_to_world)[:3, :4]


def _reprojection_error(P: np.ndarray, X: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pixel error, depth) of world points X (N, 3) in the camera with projection P (3x4)."""
    h = np.c_[X, np.ones(len(X))] @ P.T
    depth = h[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.linalg.norm(h[:, :2] / depth[:, None] - uv, axis=1)
    return err, depth


def _neighbour_cameras(centres: np.ndarray, axes: np.ndarray, k: int, step: int = 1) -> list[list[int]]:
    """For each camera, k other cameras whose optical axes differ by < 75 deg: the nearest,
    the ``step``-th nearest after it, and so on (ranks 0, step, 2 step, ...)."""
    d = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    cos = axes @ axes.T
    d[cos < np.cos(np.radians(75))] = np.inf
    np.fill_diagonal(d, np.inf)
    order = np.argsort(d, axis=1)
    return [[int(j) for j in order[i, : k * step: step] if np.isfinite(d[i, j])] for i in range(len(centres))]


def triangulate_scene(scene: Scene, keypoints: SceneKeypoints, features: SparseFeatures,
                      config: TriangulationConfig, progress: bool = True,
                      checkpoint=None) -> list[np.ndarray]:
    """(N_i, 3) float64 world points (NaN where none) per frame's keypoints, by
    ``config.method``; ``keypoints`` of every frame of ``scene`` (posed), in frame order,
    matched by ``features``. With a ``checkpoint``
    (:class:`aceg.mapping.checkpoint.MappingCheckpoint`) the matches are kept chunk by chunk
    of pairs and read back when an earlier run left them."""
    extracted, intrinsics = keypoints.features, keypoints.intrinsics
    centres = scene.camera_centres()
    axes = np.stack([f.cam_to_world[:3, 2] for f in scene.frames])
    neighbours = _neighbour_cameras(centres, axes, config.neighbours, config.neighbour_step)
    pairs = sorted({(min(i, j), max(i, j)) for i, ns in enumerate(neighbours) for j in ns})
    projections = [_projection(k, f.cam_to_world) for k, f in zip(intrinsics, scene.frames, strict=True)]
    tracks = config.method == "tracks"
    edges: list[tuple[int, int, np.ndarray]] = []  # tracks: the consistent matches of each pair
    estimates: list[list[list[np.ndarray]]] = [] if tracks else [[[] for _ in f.keypoints] for f in extracted]
    for i, j, matches in _pair_matches(pairs, extracted, features, config, progress, checkpoint):
        if len(matches) == 0:
            continue
        uv_i = extracted[i].keypoints[matches[:, 0]].astype(np.float64)
        uv_j = extracted[j].keypoints[matches[:, 1]].astype(np.float64)
        X = cv2.triangulatePoints(projections[i], projections[j], uv_i.T, uv_j.T)
        with np.errstate(divide="ignore", invalid="ignore"):
            X = (X[:3] / X[3]).T
        err_i, z_i = _reprojection_error(projections[i], X, uv_i)
        err_j, z_j = _reprojection_error(projections[j], X, uv_j)
        consistent = (np.isfinite(X).all(1) & (z_i > 0) & (z_j > 0)
                      & (err_i < config.max_error_px)
                      & (err_j < config.max_error_px))
        if tracks:
            edges.append((i, j, matches[consistent]))
            continue
        wide = _ray_angle_cos(X, centres[i], centres[j]) < np.cos(np.radians(config.min_angle_deg))
        good = consistent & wide
        for (a, b), x in zip(matches[good], X[good], strict=True):
            estimates[i][a].append(x)
            estimates[j][b].append(x)
    if tracks:
        return triangulate_tracks([f.keypoints for f in extracted], edges, projections, centres,
                                  config.max_error_px, config.min_angle_deg)
    points = []
    for per_image in estimates:
        world = np.full((len(per_image), 3), np.nan)
        for k, xs in enumerate(per_image):
            if xs:
                world[k] = np.median(np.stack(xs), axis=0)
        points.append(world)
    return points


def _pair_matches(pairs: list[tuple[int, int]], extracted, features: SparseFeatures,
                  config: TriangulationConfig, progress: bool, checkpoint):
    """Yield (i, j, (M, 2) matches) for each image pair, matched by ``features`` or read
    from ``checkpoint`` chunks (:func:`triangulate_scene`)."""
    from aceg.mapping.checkpoint import kept_chunks

    bar = tqdm(total=len(pairs), desc="triangulation", unit="pair", disable=not progress)

    def match(indices: range) -> dict[str, np.ndarray]:
        found = []
        for k in indices:
            i, j = pairs[k]
            found.append(features.match(extracted[i], extracted[j], config.match_min_confidence))
            bar.update(1)
        return {"matches": np.concatenate(found).reshape(-1, 2).astype(np.int64),
                "counts": np.array([len(m) for m in found], np.int64)}

    for indices, arrays, read_back in kept_chunks(checkpoint, "matches", len(pairs), "counts", match):
        if read_back:
            bar.update(len(indices))
        found = np.split(arrays["matches"], np.cumsum(arrays["counts"])[:-1])
        for k, matches in zip(indices, found, strict=True):
            yield (*pairs[k], matches.reshape(-1, 2))
    bar.close()


def _ray_angle_cos(X: np.ndarray, centre_a: np.ndarray, centre_b: np.ndarray) -> np.ndarray:
    """(N,) cosine of the angle at the points X (N, 3) between the rays to two camera centres."""
    ray_a, ray_b = X - centre_a, X - centre_b
    return np.sum(ray_a * ray_b, 1) / (np.linalg.norm(ray_a, axis=1) * np.linalg.norm(ray_b, axis=1) + 1e-12)


def track_labels(num_nodes: int, links: np.ndarray) -> np.ndarray:
    """Connected components of an undirected graph: (num_nodes,) label per node, the
    smallest node index of its component. ``links``: (E, 2) node index pairs."""
    labels = np.arange(num_nodes)
    if len(links) == 0:
        return labels
    a, b = links[:, 0], links[:, 1]
    while True:
        low = np.minimum(labels[a], labels[b])
        before = labels.copy()
        np.minimum.at(labels, a, low)
        np.minimum.at(labels, b, low)
        labels = labels[labels]  # jump to the label's label: halves the remaining hops
        if np.array_equal(labels, before):
            return labels


def _multiview_dlt(P: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """(T, 3) points from T tracks of n views each: P (T, n, 3, 4), uv (T, n, 2) pixels.
    Linear triangulation: the null vector of the stacked u P_3 - P_1, v P_3 - P_2 rows."""
    rows = np.concatenate([uv[..., 0:1] * P[:, :, 2] - P[:, :, 0],
                           uv[..., 1:2] * P[:, :, 2] - P[:, :, 1]], axis=1)  # (T, 2n, 4)
    rows = rows / np.maximum(np.linalg.norm(rows, axis=2, keepdims=True), 1e-12)
    X = np.linalg.svd(rows)[2][:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return X[:, :3] / X[:, 3:4]


def triangulate_tracks(keypoints: list[np.ndarray], edges: list[tuple[int, int, np.ndarray]],
                       projections: list[np.ndarray], centres: np.ndarray, max_error_px: float,
                       min_angle_deg: float) -> list[np.ndarray]:
    """Chain pairwise matches into tracks and triangulate each from all its views.

    ``edges``: (image i, image j, (M, 2) keypoint index pairs) of matches already checked
    pairwise; ``keypoints[i]``: (N_i, 2) pixels; ``projections[i]``: 3x4 K [R|t] of the
    world-to-camera pose; ``centres``: (I, 3) camera centres in the world frame. Each
    track's point is the multi-view linear triangulation of its views. A track that holds
    two keypoints of one image is ambiguous (a wrong match joined two points) and dropped
    (triangulating its keypoints from their direct matches instead gives more points, but
    they lead to worse poses). While some view reprojects worse than
    ``max_error_px`` (or lies behind its camera), the worst view leaves the track and the
    rest is triangulated again; the point is kept when every remaining view (at least two)
    agrees and the widest angle between two of its rays is at least ``min_angle_deg``.
    Returns per image (N_i, 3) world points, NaN where none.
    """
    counts = [len(k) for k in keypoints]
    offsets = np.r_[0, np.cumsum(counts)].astype(int)
    image_of = np.repeat(np.arange(len(counts)), counts)
    links = [np.c_[offsets[i] + m[:, 0], offsets[j] + m[:, 1]] for i, j, m in edges if len(m)]
    world = np.full((int(offsets[-1]), 3), np.nan)  # every image's keypoints, one after another
    if not links:
        return np.split(world, offsets[1:-1])
    links = np.concatenate(links)
    labels = track_labels(len(world), links)
    linked = np.zeros(len(world), bool)
    linked[links.ravel()] = True
    nodes = np.flatnonzero(linked)
    order = nodes[np.argsort(labels[nodes], kind="stable")]
    lab = labels[order]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    tracks = np.split(order, starts[1:])
    P_all = np.stack(projections)
    uv_all = np.concatenate(keypoints).astype(np.float64)
    min_cos = np.cos(np.radians(min_angle_deg))

    def views_fit(views: np.ndarray, X: np.ndarray) -> np.ndarray:
        """(T, n) whether each view of tracks ``views`` (T, n) sees X (T, 3) within the error."""
        h = np.einsum("tnij,tj->tni", P_all[image_of[views]], np.c_[X, np.ones(len(X))])
        with np.errstate(divide="ignore", invalid="ignore"):
            err = np.linalg.norm(h[..., :2] / h[..., 2:3] - uv_all[views], axis=2)
        return np.isfinite(err) & (err < max_error_px) & (h[..., 2] > 0)

    def accept(views: np.ndarray, X: np.ndarray) -> None:
        """Keep the points of tracks ``views`` (T, n) whose rays are wide enough apart."""
        rays = X[:, None] - centres[image_of[views]]
        rays /= np.maximum(np.linalg.norm(rays, axis=2, keepdims=True), 1e-12)
        wide = np.einsum("tad,tbd->tab", rays, rays).min((1, 2)) < min_cos
        world[views[wide]] = X[wide][:, None]

    by_size: dict[int, list[np.ndarray]] = {}  # unambiguous tracks by their number of views
    for t in tracks:
        if len(np.unique(image_of[t])) == len(t):
            by_size.setdefault(len(t), []).append(t)
    for group in by_size.values():
        views = np.stack(group)  # (T, n) node indices
        X = _multiview_dlt(P_all[image_of[views]], uv_all[views])
        whole = views_fit(views, X).all(1)
        accept(views[whole], X[whole])
        for k in np.flatnonzero(~whole):  # drop the worst view until the rest agree
            sub = views[k]
            while len(sub) > 2:
                h = P_all[image_of[sub]] @ np.r_[X[k], 1.0]
                with np.errstate(divide="ignore", invalid="ignore"):
                    err = np.linalg.norm(h[:, :2] / h[:, 2:] - uv_all[sub], axis=1)
                sub = np.delete(sub, np.argmax(np.where(np.isfinite(err) & (h[:, 2] > 0), err, np.inf)))
                X[k] = _multiview_dlt(P_all[image_of[sub]][None], uv_all[sub][None])[0]
                if views_fit(sub[None], X[k][None]).all():
                    accept(sub[None], X[k][None])
                    break
    return np.split(world, offsets[1:-1])
