"""From 2D-3D correspondences to a checked, rated pose: RANSAC-PnP (poselib, through
:func:`aceg.localization.pnp.estimate_pose`), the sanity check that makes a pose
"localized" (:class:`PoseCheck`), the confident flag and the result of one query
(:class:`LocalizationResult`). The query pipeline that feeds it is
:class:`aceg.localization.localizer.Localizer`, whose module docstring tells the steps.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from aceg.data.camera import Intrinsics
from aceg.localization.pnp import estimate_pose
from aceg.localization.uncertainty import pose_spread

#: Inlier count from which a pose is flagged confident.
CONFIDENT_INLIERS = 200
#: Largest standard deviation of the camera centre (metres) of a pose flagged confident:
#: half the 10 cm bound that relocalization benchmarks count as right.
CONFIDENT_CENTRE_STD_M = 0.05
#: Fewer usable 2D-3D correspondences than this: "not localized".
MIN_CORRESPONDENCES = 12
#: RANSAC inlier threshold, pixels of the prepared image (ACE uses 10 px at short side 480).
RANSAC_PX = 10.0


@dataclass(frozen=True)
class PoseCheck:
    """When a RANSAC pose counts as localized: at least ``min_inliers`` inliers, and at
    least ``min_cells`` cells of a ``grid`` x ``grid`` grid over the prepared image holding
    ``min_cell_inliers`` inliers or more each. Poses of random noise, flat images and
    images of other scenes gather their inliers (RANSAC's best of many random hypotheses)
    in a few cells; a true pose has them wherever the image shows mapped structure.
    """

    min_inliers: int = 50
    grid: int = 8
    min_cell_inliers: int = 4
    min_cells: int = 10


def pose_check_failure(inlier_pixels: np.ndarray, width: int, height: int,
                       check: PoseCheck) -> str:
    """Why a pose with inliers at (N, 2) pixels ``inlier_pixels`` (u, v) of a ``width`` x
    ``height`` image fails ``check``, or "" when it passes."""
    n = len(inlier_pixels)
    if n < check.min_inliers:
        return f"pose failed the sanity check: {n} inliers < {check.min_inliers}"
    g = check.grid
    cols = np.clip((inlier_pixels[:, 0] + 0.5) * g // width, 0, g - 1).astype(np.int64)
    rows = np.clip((inlier_pixels[:, 1] + 0.5) * g // height, 0, g - 1).astype(np.int64)
    cells = int((np.bincount(rows * g + cols, minlength=g * g) >= check.min_cell_inliers).sum())
    if cells < check.min_cells:
        return (f"pose failed the sanity check: inliers cover {cells} of {g}x{g} image cells "
                f"(at least {check.min_cells} needed)")
    return ""


DEFAULT_POSE_CHECK = PoseCheck()

@dataclass
class LocalizationResult:
    """Pose of one query image.

    Attributes:
        name: image name (file name, or "array").
        cam_to_world: 4x4 float64 camera-to-world pose (OpenCV axes, metres) or None when
            not localized.
        inliers: RANSAC inliers after refinement.
        correspondences: 2D-3D correspondences given to RANSAC.
        confident: ``inliers >= CONFIDENT_INLIERS`` of the first stage (global search)
            and ``centre_std_m <= CONFIDENT_CENTRE_STD_M`` of the pose returned.
        rotation_std_deg, centre_std_m: standard deviations of the pose's rotation
            (degrees) and camera centre (metres) predicted from its inliers
            (:mod:`aceg.localization.uncertainty`); infinite when not localized.
        stage: which stage gave the pose: "first", "region" (the read-out within a voted
            region of a large map, :mod:`aceg.localization.regions`) or "guided" (keypoint
            maps).
        timings: seconds per stage ("prepare", "encode", "regress", "ransac", "total").
        reason: why the image was not localized ("" when localized).
        bad_input: the image or its intrinsics could not be used (``reason`` says which
            file and why), as opposed to too few correspondences for a pose.
    """

    name: str
    cam_to_world: np.ndarray | None
    inliers: int = 0
    correspondences: int = 0
    confident: bool = False
    timings: dict = field(default_factory=dict)
    reason: str = ""
    bad_input: bool = False
    stage: str = "first"
    rotation_std_deg: float = math.inf
    centre_std_m: float = math.inf

    @property
    def localized(self) -> bool:
        return self.cam_to_world is not None


def confident_mask(world: np.ndarray, log_unc: np.ndarray | None, keep_quantile: float) -> np.ndarray:
    """(P,) bool: the finite ones of (P, 3) ``world`` points and, with an uncertainty
    (ACE-G) and ``keep_quantile`` < 1, only the ``keep_quantile`` fraction of those with the
    smallest (P,) ``log_unc``."""
    keep = np.all(np.isfinite(world), axis=1)
    if log_unc is not None and keep_quantile < 1.0 and keep.any():
        keep &= log_unc <= np.quantile(log_unc[keep], keep_quantile)
    return keep


def solve_pnp(pixels: np.ndarray, world: np.ndarray, intrinsics: Intrinsics, width: int,
              height: int, name: str = "", ransac_px: float = RANSAC_PX,
              confident_inliers: int = CONFIDENT_INLIERS,
              max_iterations: int = 10000,
              pose_check: PoseCheck | None = None,
              confident_centre_std_m: float = CONFIDENT_CENTRE_STD_M) -> LocalizationResult:
    """Camera-to-world pose from 2D-3D correspondences: poselib RANSAC + refinement through
    the shared :func:`aceg.localization.pnp.estimate_pose`, wrapped as a result.

    Args:
        pixels: (M, 2) image points (u, v), pixel centres at integer coordinates.
        world: (M, 3) world points, metres.
        intrinsics: pinhole intrinsics of the image (distortion ignored: prepared images
            are undistorted).
        width, height: size of the image, pixels (the grid of ``pose_check``).
        pose_check: a pose failing it is "not localized" (None: :data:`DEFAULT_POSE_CHECK`).
        confident_inliers, confident_centre_std_m: the confident flag (module docstring).
    """
    t = time.perf_counter()
    finite = np.isfinite(pixels).all(1) & np.isfinite(world).all(1)
    n = int(finite.sum())
    if n < MIN_CORRESPONDENCES:
        return LocalizationResult(
            name, None, 0, n, timings={"ransac": time.perf_counter() - t},
            reason=f"too few correspondences ({n} < {MIN_CORRESPONDENCES})")
    res = estimate_pose(pixels[finite], world[finite], intrinsics, ransac_px, max_iterations)
    elapsed = time.perf_counter() - t
    if res.cam_to_world is None:
        return LocalizationResult(name, None, res.inliers, n, timings={"ransac": elapsed},
                                  reason=res.reason or "RANSAC found no pose")
    inlier_pixels = pixels[finite][res.inlier_mask]
    failure = pose_check_failure(inlier_pixels, width, height, pose_check or DEFAULT_POSE_CHECK)
    if failure:
        return LocalizationResult(name, None, res.inliers, n, timings={"ransac": elapsed},
                                  reason=failure)
    spread = pose_spread(res.cam_to_world, inlier_pixels, world[finite][res.inlier_mask], intrinsics.K)
    confident = res.inliers >= confident_inliers and spread.centre_m <= confident_centre_std_m
    return LocalizationResult(name, res.cam_to_world, res.inliers, n, confident,
                              timings={"ransac": time.perf_counter() - t},
                              rotation_std_deg=spread.rotation_deg, centre_std_m=spread.centre_m)
