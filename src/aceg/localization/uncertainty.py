"""How well a pose is determined by its inliers: the first-order covariance of the
reprojection fit.

Around the refined pose, the reprojection residuals r (2M,) of the M inliers are
linearised in six parameters: a small rotation of the camera (axis-angle, radians, applied
on the camera side of the world-to-camera rotation) and a shift of the camera centre
(metres, world frame). With J the (2M, 6) Jacobian (forward differences) and sigma^2 the
residuals' mean square per degree of freedom, sigma^2 (J^T J)^-1 is the pose covariance.
Its square-rooted traces are the rotation and centre standard deviations.

The localizer's confident flag reads the centre's (:mod:`aceg.localization.localizer`):
a pose whose inliers fix where the camera is, and that enough inliers support, is rarely
wrong. It does not see an error shared by all inliers (a biased map), only how well the
inliers agree and how they are spread over the image and in depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

#: Parameter step of the forward differences (radians and metres).
STEP = 1e-6


@dataclass(frozen=True)
class PoseSpread:
    """Standard deviations of a pose: ``rotation_deg`` (degrees) and ``centre_m`` (metres);
    infinite when the inliers do not determine the pose."""

    rotation_deg: float
    centre_m: float


UNDETERMINED = PoseSpread(float("inf"), float("inf"))


def pose_spread(cam_to_world: np.ndarray, pixels: np.ndarray, world: np.ndarray, K: np.ndarray) -> PoseSpread:
    """:class:`PoseSpread` of ``cam_to_world`` (4, 4) from its inliers: ``pixels`` (M, 2)
    in the image ``K`` (3, 3) describes, ``world`` (M, 3) metres."""
    pixels = np.asarray(pixels, np.float64).reshape(-1, 2)
    world = np.asarray(world, np.float64).reshape(-1, 3)
    if len(pixels) < 4:
        return UNDETERMINED
    R0 = cam_to_world[:3, :3].T
    C0 = cam_to_world[:3, 3]

    def residuals(p: np.ndarray) -> np.ndarray:
        R = Rotation.from_rotvec(p[:3]).as_matrix() @ R0
        cam = (world - (C0 + p[3:])) @ R.T
        uv = (cam @ K.T)[:, :2] / cam[:, 2:3]
        return (uv - pixels).ravel()

    r0 = residuals(np.zeros(6))
    J = np.stack([(residuals(STEP * np.eye(6)[i]) - r0) / STEP for i in range(6)], axis=1)
    if not (np.isfinite(r0).all() and np.isfinite(J).all()):
        return UNDETERMINED
    sigma2 = float(r0 @ r0) / max(len(r0) - 6, 1)
    try:
        cov = sigma2 * np.linalg.inv(J.T @ J)
    except np.linalg.LinAlgError:
        return UNDETERMINED
    rot, centre = np.trace(cov[:3, :3]), np.trace(cov[3:, 3:])
    if not (rot >= 0 and centre >= 0):
        return UNDETERMINED
    return PoseSpread(float(np.degrees(np.sqrt(rot))), float(np.sqrt(centre)))
