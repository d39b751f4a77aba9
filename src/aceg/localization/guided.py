"""Guided second stage for anchor maps of keypoints.

After a first pose, every anchor's point is projected into the query image; each query
keypoint then reads the most similar anchor among those projecting within a small radius
of it (instead of among all the map's anchors), and keeps it when it beats the best
anchor of *another* point there by a margin. The geometric prior removes most of the
look-alikes a global search confuses, so far more keypoints get a correspondence, and
RANSAC runs again with a tighter threshold: the pose gets a keypoint-level refinement
without matching images. The stage only refines: its correspondences are chosen near the
first pose, so their count says little about whether that pose is right, and the
localizer's confident flag takes the inlier count from the first stage (and the spread of
the pose it returns from this one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from aceg.data.camera import Intrinsics, invert_pose


@dataclass(frozen=True)
class GuidedConfig:
    """Settings of the guided stage.

    Attributes:
        radius_px: search radius around a query keypoint, pixels of the prepared image.
        min_similarity: cosine a keypoint's best anchor needs at least (unrelated unit
            descriptors have cosines near 0; without a floor a keypoint near a single
            point's anchors would always be kept).
        min_margin: cosine margin a keypoint's best anchor needs over the best anchor of
            another point within the radius.
        ransac_px: RANSAC inlier threshold of the second pose, pixels. Tight, because the
            fit that ends RANSAC weighs every correspondence within it: keypoints read
            within ``radius_px`` of a rough pose include near misses a loose threshold
            lets pull the pose (docs/experiments.md).
        max_candidates: anchors a keypoint compares at most, the nearest in the image
            within the radius (bounds the work where many anchors project close together).
    """

    radius_px: float = 8.0
    min_similarity: float = 0.5
    min_margin: float = 0.02
    ransac_px: float = 2.0
    max_candidates: int = 32


DEFAULT_GUIDED = GuidedConfig()


def point_ids(points: np.ndarray) -> np.ndarray:
    """(N,) int id per anchor, equal for anchors that share one 3-D point (the keypoints of
    one track): ``points`` (N, 3)."""
    _, ids = np.unique(points, axis=0, return_inverse=True)
    return ids.ravel()


def guided_correspondences(query_keys: np.ndarray, keypoints: np.ndarray, anchor_keys: np.ndarray,
                           anchor_world: np.ndarray, anchor_ids: np.ndarray,
                           intrinsics: Intrinsics, cam_to_world: np.ndarray,
                           config: GuidedConfig = DEFAULT_GUIDED) -> tuple[np.ndarray, np.ndarray]:
    """Correspondences of the guided stage.

    Args:
        query_keys: (P, C) unit-length keys of the query keypoints.
        keypoints: (P, 2) their pixels in the prepared image.
        anchor_keys: (N, C) unit-length anchor keys; anchor_world: (N, 3) their world
            points (metres); anchor_ids: (N,) :func:`point_ids` of those points.
        intrinsics: of the prepared image; cam_to_world: (4, 4) the first pose.

    Returns:
        pixels (M, 2) and world points (M, 3), float64, one per kept keypoint.
    """
    w2c = invert_pose(cam_to_world)
    cam = anchor_world @ w2c[:3, :3].T + w2c[:3, 3]
    front = np.flatnonzero(cam[:, 2] > 1e-6)
    empty = np.zeros((0, 2)), np.zeros((0, 3))
    if len(front) == 0 or len(keypoints) == 0:
        return empty
    uv = (cam[front] @ intrinsics.K.T)[:, :2] / cam[front, 2:3]
    lo, hi = keypoints.min(0) - config.radius_px, keypoints.max(0) + config.radius_px
    seen = np.all((uv >= lo) & (uv <= hi), axis=1)  # only anchors that can be near a keypoint
    front, uv = front[seen], uv[seen]
    if len(front) == 0:
        return empty
    k = min(config.max_candidates, len(front))
    dist, near = cKDTree(uv).query(keypoints, k=k, distance_upper_bound=config.radius_px)
    dist, near = dist.reshape(len(keypoints), k), near.reshape(len(keypoints), k)
    found = np.isfinite(dist)  # (P, k), nearest first; missing ones have index len(front)
    aj = front[np.where(found, near, 0)]  # (P, k) anchor rows
    sims = np.where(found, np.einsum("pc,pkc->pk", query_keys, anchor_keys[aj]), -np.inf)
    best = sims.argmax(1)
    rows = np.arange(len(keypoints))
    best_sim, best_anchor = sims[rows, best], aj[rows, best]
    other = found & (anchor_ids[aj] != anchor_ids[best_anchor][:, None])
    second = np.where(other, sims, -1.0).max(1)
    keep = (best_sim >= config.min_similarity) & (best_sim - second >= config.min_margin)
    return keypoints[keep].astype(np.float64), anchor_world[best_anchor[keep]].astype(np.float64)
