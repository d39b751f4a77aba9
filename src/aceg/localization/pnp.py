"""RANSAC-PnP with poselib: 2D-3D correspondences -> camera pose.

Input pixels are in the image the intrinsics describe (pinhole, no distortion left: use
:func:`aceg.data.images.prepare_image` first); the camera model given to poselib is the
full ``PINHOLE`` model ``(fx, fy, cx, cy)``, so ``fx != fy`` and an off-centre principal
point are honoured. poselib refines the RANSAC winner non-linearly on its inliers.
Returned poses are camera-to-world (OpenCV axes), as everywhere in aceg.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import poselib

from aceg.data.camera import Intrinsics, invert_pose, make_pose

#: Fewest correspondences worth running RANSAC on (P3P needs 3, refinement wants more).
MIN_CORRESPONDENCES = 6


@dataclass
class PnPResult:
    """Outcome of RANSAC-PnP. ``cam_to_world`` is None when no pose was found."""

    cam_to_world: np.ndarray | None
    inliers: int
    inlier_mask: np.ndarray  # (N,) bool over the input correspondences
    reason: str = ""


def estimate_pose(
    points2d: np.ndarray,
    points3d: np.ndarray,
    intrinsics: Intrinsics,
    max_reproj_error_px: float = 10.0,
    max_iterations: int = 10_000,
    min_iterations: int = 100,
    seed: int = 0,
) -> PnPResult:
    """Camera-to-world pose from pixels (N, 2) and world points (N, 3), metres.

    Args:
        max_reproj_error_px: RANSAC inlier threshold in pixels.
        seed: RANSAC seed (results are deterministic for a given seed).
    """
    points2d = np.asarray(points2d, dtype=np.float64).reshape(-1, 2)
    points3d = np.asarray(points3d, dtype=np.float64).reshape(-1, 3)
    finite = np.isfinite(points2d).all(1) & np.isfinite(points3d).all(1)
    n = len(points2d)
    if int(finite.sum()) < MIN_CORRESPONDENCES:
        return PnPResult(None, 0, np.zeros(n, bool),
                         f"too few correspondences ({int(finite.sum())} < {MIN_CORRESPONDENCES})")
    camera = {
        "model": "PINHOLE",
        "width": 0,
        "height": 0,
        "params": [intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy],
    }
    ransac = {
        "max_reproj_error": float(max_reproj_error_px),
        "max_iterations": int(max_iterations),
        "min_iterations": int(min(min_iterations, max_iterations)),
        "seed": int(seed),
    }
    pose, info = poselib.estimate_absolute_pose(points2d[finite], points3d[finite], camera, ransac, {})
    mask = np.zeros(n, bool)
    inlier_flags = np.asarray(info.get("inliers", []), dtype=bool)
    if inlier_flags.size == int(finite.sum()):
        mask[np.flatnonzero(finite)] = inlier_flags
    inliers = int(info.get("num_inliers", mask.sum()))
    if inliers < MIN_CORRESPONDENCES:
        return PnPResult(None, inliers, mask, f"too few inliers ({inliers})")
    world_to_cam = make_pose(pose.R, pose.t)
    if not np.all(np.isfinite(world_to_cam)):
        return PnPResult(None, 0, np.zeros(n, bool), "solver returned a non-finite pose")
    return PnPResult(invert_pose(world_to_cam), inliers, mask)
