"""Camera conventions of aceg, stated once. Every other module refers here.

Frames and axes
    * **Camera axes are OpenCV's**: x right, y down, z forward (the camera looks along +z).
      OpenGL / nerfstudio cameras (x right, y up, looking along -z) are converted on reading
      with :func:`opengl_to_opencv`.
    * **Poses are stored camera-to-world** (``cam_to_world``, 4x4, float64): its rotation
      columns are the camera axes expressed in world coordinates and its translation column
      is the camera centre in world coordinates. World-to-camera is its inverse; the pose
      results file (:mod:`aceg.evaluation.results`) stores world-to-camera, as ACE does.
    * Units: metres for positions, degrees for reported angles, pixels for image
      coordinates.

Pixels
    * Pixel centre convention (OpenCV's): the centre of the pixel in column ``j``, row ``i``
      has image coordinates ``(u, v) = (j, i)``; the image covers ``[-0.5, W - 0.5] x
      [-0.5, H - 0.5]``. Resizing an image by factors ``(sx, sy)`` therefore maps
      ``f' = f * s`` and ``c' = (c + 0.5) * s - 0.5`` (:meth:`Intrinsics.scaled`).
    * Projection of a world point X: ``x ~ K [R | t] X`` with ``[R | t]`` world-to-camera.

Intrinsics are pinhole ``fx, fy, cx, cy`` (``fx != fy`` allowed) plus optional distortion
coefficients in OpenCV order ``(k1, k2, p1, p2[, k3[, k4, k5, k6]])``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aceg.errors import AcegError

#: Largest allowed deviation of a pose rotation from orthonormality:
#: ``max |R^T R - I|`` and ``|det R - 1|`` must both stay below this.
ROTATION_TOLERANCE = 1e-3

#: Camera axes flip between OpenGL (x right, y up, z backward) and OpenCV (x right,
#: y down, z forward): right-multiply a camera-to-world pose by this.
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels, with optional OpenCV distortion coefficients."""

    fx: float
    fy: float
    cx: float
    cy: float
    dist: tuple[float, ...] = ()

    @property
    def K(self) -> np.ndarray:
        """3x3 calibration matrix (float64)."""
        return np.array(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=np.float64
        )

    @property
    def has_distortion(self) -> bool:
        return any(abs(d) > 0.0 for d in self.dist)

    @classmethod
    def from_K(cls, K: np.ndarray, dist: tuple[float, ...] = ()) -> Intrinsics:
        K = np.asarray(K, dtype=np.float64)
        return cls(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), tuple(dist))

    def scaled(self, sx: float, sy: float | None = None) -> Intrinsics:
        """Intrinsics of the same camera after resizing its image by ``(sx, sy)``.

        Uses the pixel-centre convention of this module: ``c' = (c + 0.5) * s - 0.5``.
        Distortion coefficients act on normalised coordinates and are unchanged.
        """
        sy = sx if sy is None else sy
        return Intrinsics(
            self.fx * sx,
            self.fy * sy,
            (self.cx + 0.5) * sx - 0.5,
            (self.cy + 0.5) * sy - 0.5,
            self.dist,
        )

    def without_distortion(self) -> Intrinsics:
        return Intrinsics(self.fx, self.fy, self.cx, self.cy, ())

    def check(self, where: str, width: int | None = None, height: int | None = None) -> None:
        """Raise :class:`AcegError` naming ``where`` if these intrinsics are unusable."""
        values = (self.fx, self.fy, self.cx, self.cy, *self.dist)
        if not all(np.isfinite(values)):
            raise AcegError(f"{where}: intrinsics contain a non-finite value: {values}")
        if self.fx <= 0 or self.fy <= 0:
            raise AcegError(f"{where}: focal length must be positive (fx={self.fx}, fy={self.fy})")
        if width is not None and height is not None:
            if not (-0.5 <= self.cx <= width - 0.5 and -0.5 <= self.cy <= height - 0.5):
                raise AcegError(
                    f"{where}: principal point ({self.cx:.1f}, {self.cy:.1f}) lies outside the "
                    f"{width}x{height} image"
                )


def check_pose(pose: np.ndarray, where: str) -> np.ndarray:
    """Validate a 4x4 rigid transform and return it as float64.

    Raises :class:`AcegError` (naming ``where``) for a wrong shape, a non-finite value, a
    bottom row other than ``[0 0 0 1]`` or a rotation that is not orthonormal with
    determinant +1 within :data:`ROTATION_TOLERANCE`.
    """
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape != (4, 4):
        raise AcegError(f"{where}: pose must be 4x4, got shape {pose.shape}")
    if not np.all(np.isfinite(pose)):
        raise AcegError(f"{where}: pose contains a non-finite value (NaN or inf)")
    if not np.allclose(pose[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
        raise AcegError(f"{where}: last row of the pose must be 0 0 0 1, got {pose[3].tolist()}")
    check_rotation(pose[:3, :3], where)
    return pose


def check_rotation(R: np.ndarray, where: str) -> None:
    """Raise :class:`AcegError` unless ``R`` is a proper rotation within tolerance."""
    R = np.asarray(R, dtype=np.float64)
    if not np.all(np.isfinite(R)):
        raise AcegError(f"{where}: rotation contains a non-finite value (NaN or inf)")
    ortho = float(np.abs(R.T @ R - np.eye(3)).max())
    det = float(np.linalg.det(R))
    if ortho > ROTATION_TOLERANCE or abs(det - 1.0) > ROTATION_TOLERANCE:
        raise AcegError(
            f"{where}: rotation is not orthonormal (max |R^T R - I| = {ortho:.2g}, det = {det:.4g};"
            f" tolerance {ROTATION_TOLERANCE:g})"
        )


def make_pose(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """4x4 transform from a 3x3 rotation and a translation 3-vector."""
    pose = np.eye(4)
    pose[:3, :3] = R
    pose[:3, 3] = np.asarray(t, dtype=np.float64).reshape(3)
    return pose


def invert_pose(pose: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (camera-to-world <-> world-to-camera)."""
    R = pose[:3, :3]
    t = pose[:3, 3]
    return make_pose(R.T, -R.T @ t)


def opengl_to_opencv(cam_to_world_gl: np.ndarray) -> np.ndarray:
    """Camera-to-world pose of an OpenGL-axes camera, re-expressed with OpenCV camera axes."""
    return np.asarray(cam_to_world_gl, dtype=np.float64) @ OPENGL_TO_OPENCV


def project(points_world: np.ndarray, K: np.ndarray, cam_to_world: np.ndarray) -> np.ndarray:
    """Project world points (N, 3) into pixels (N, 2) of a pinhole camera (no distortion).

    Points behind the camera get NaN coordinates.
    """
    world_to_cam = invert_pose(cam_to_world)
    pc = points_world @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    z = pc[:, 2:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (pc @ K.T)[:, :2] / z
    uv[z[:, 0] <= 0] = np.nan
    return uv


def backproject(pixels: np.ndarray, depth: np.ndarray, K: np.ndarray,
                cam_to_world: np.ndarray) -> np.ndarray:
    """(N, 3) world points of ``pixels`` (N, 2; pixel centres at integers) seen at camera
    ``z`` = ``depth`` (N,) metres along the optical axis (not along the ray), for a pinhole
    ``K`` and a camera-to-world pose (OpenCV axes). The inverse of :func:`project`."""
    pixels = np.asarray(pixels, np.float64)
    z = np.asarray(depth, np.float64)
    cam = np.stack([(pixels[:, 0] - K[0, 2]) / K[0, 0] * z,
                    (pixels[:, 1] - K[1, 2]) / K[1, 1] * z, z], axis=1)
    return cam @ cam_to_world[:3, :3].T + cam_to_world[:3, 3]


def fundamental_matrix(
    K_a: np.ndarray, cam_to_world_a: np.ndarray, K_b: np.ndarray, cam_to_world_b: np.ndarray
) -> np.ndarray:
    """F with ``x_b^T F x_a = 0`` for homogeneous pixels ``x_a`` in view a and ``x_b`` in b."""
    rel = invert_pose(cam_to_world_b) @ cam_to_world_a  # camera a -> camera b
    R, t = rel[:3, :3], rel[:3, 3]
    t_cross = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    E = t_cross @ R
    return np.linalg.inv(K_b).T @ E @ np.linalg.inv(K_a)


def rotation_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(w, x, y, z)`` (Hamilton convention, ``w >= 0``) of a rotation matrix."""
    R = np.asarray(R, dtype=np.float64)
    trace = np.trace(R)
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = 2.0 * np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = [(R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif R[1, 1] > R[2, 2]:
        s = 2.0 * np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s]
    q = np.array(q)
    q /= np.linalg.norm(q)
    return -q if q[0] < 0 else q


def quaternion_to_rotation(q: np.ndarray) -> np.ndarray:
    """Rotation matrix of a quaternion ``(w, x, y, z)`` (normalised first)."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
