"""The conventions module: poses, quaternions, projection, intrinsics scaling."""

from __future__ import annotations

import numpy as np
import pytest

from aceg.data.camera import (
    Intrinsics,
    check_pose,
    fundamental_matrix,
    invert_pose,
    make_pose,
    opengl_to_opencv,
    project,
    quaternion_to_rotation,
    rotation_to_quaternion,
)
from aceg.errors import AcegError


def rot_z(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def rot_y(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def test_projection_follows_opencv_axes():
    # Camera at the origin looking along +z; a point 1 m ahead, 0.1 m right, 0.2 m down.
    K = Intrinsics(500.0, 400.0, 320.0, 240.0).K
    uv = project(np.array([[0.1, 0.2, 1.0]]), K, np.eye(4))
    assert uv[0] == pytest.approx([320 + 50, 240 + 80])


def test_projection_uses_camera_to_world():
    # Camera centre at (0, 0, -2): a point at the world origin is 2 m ahead, on the axis.
    K = Intrinsics(500.0, 500.0, 320.0, 240.0).K
    pose = make_pose(np.eye(3), [0, 0, -2])
    assert project(np.zeros((1, 3)), K, pose)[0] == pytest.approx([320, 240])
    # Turn the camera 90 deg about y: its z axis now points along world +x; point behind -> NaN.
    turned = make_pose(rot_y(90), [0, 0, -2])
    ahead = project(np.array([[3.0, 0.0, -2.0]]), K, turned)
    assert ahead[0] == pytest.approx([320, 240])


def test_point_behind_camera_is_nan():
    uv = project(np.array([[0.0, 0.0, -1.0]]), np.eye(3), np.eye(4))
    assert np.isnan(uv).all()


def test_invert_pose_round_trip():
    pose = make_pose(rot_z(30) @ rot_y(20), [1, 2, 3])
    assert invert_pose(invert_pose(pose)) == pytest.approx(pose)
    assert (invert_pose(pose) @ pose) == pytest.approx(np.eye(4))


def test_quaternion_known_values_and_round_trip():
    assert rotation_to_quaternion(np.eye(3)) == pytest.approx([1, 0, 0, 0])
    # 90 deg about z: q = (cos 45, 0, 0, sin 45)
    s = np.sqrt(0.5)
    assert rotation_to_quaternion(rot_z(90)) == pytest.approx([s, 0, 0, s])
    rng = np.random.default_rng(0)
    for _ in range(50):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        R = quaternion_to_rotation(q)
        q2 = rotation_to_quaternion(R)
        assert quaternion_to_rotation(q2) == pytest.approx(R, abs=1e-12)
    # 180 deg rotations exercise the non-trace branches
    for R in (np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1])):
        assert quaternion_to_rotation(rotation_to_quaternion(R)) == pytest.approx(R, abs=1e-12)


def test_opengl_to_opencv_flips_y_and_z_axes():
    gl = make_pose(np.eye(3), [1, 2, 3])
    cv = opengl_to_opencv(gl)
    # An OpenGL camera looks along its -z: in OpenCV axes that direction is +z.
    assert cv[:3, 2] == pytest.approx([0, 0, -1])
    assert cv[:3, 1] == pytest.approx([0, -1, 0])
    assert cv[:3, 3] == pytest.approx([1, 2, 3])


def test_check_pose_rejects_bad_rotations_and_nan():
    check_pose(make_pose(rot_z(10), [0, 0, 0]), "ok")
    with pytest.raises(AcegError, match="not orthonormal"):
        check_pose(make_pose(rot_z(10) * 1.01, [0, 0, 0]), "poses/a.txt")
    with pytest.raises(AcegError, match="not orthonormal"):
        check_pose(make_pose(np.diag([1.0, 1, -1]), [0, 0, 0]), "reflection")
    bad = np.eye(4)
    bad[0, 3] = np.nan
    with pytest.raises(AcegError, match="non-finite"):
        check_pose(bad, "poses/b.txt")
    with pytest.raises(AcegError, match="last row"):
        check_pose(np.ones((4, 4)), "poses/c.txt")


def test_intrinsics_scaling_uses_pixel_centres():
    k = Intrinsics(600.0, 500.0, 319.5, 239.5)
    half = k.scaled(0.5)
    # The centre of a 640x480 image (319.5, 239.5) is the centre of the 320x240 image.
    assert (half.cx, half.cy) == pytest.approx((159.5, 119.5))
    assert (half.fx, half.fy) == pytest.approx((300.0, 250.0))


def test_intrinsics_check():
    Intrinsics(500, 500, 320, 240).check("x", 640, 480)
    with pytest.raises(AcegError, match="positive"):
        Intrinsics(-5, 500, 320, 240).check("calib.txt")
    with pytest.raises(AcegError, match="outside"):
        Intrinsics(500, 500, 900, 240).check("calib.txt", 640, 480)


def test_fundamental_matrix_epipolar_constraint():
    rng = np.random.default_rng(1)
    K_a = Intrinsics(500, 480, 300, 220).K
    K_b = Intrinsics(450, 470, 330, 250).K
    pose_a = make_pose(rot_y(5), [0, 0, 0])
    pose_b = make_pose(rot_y(-10) @ rot_z(3), [0.5, 0.1, 0.05])
    pts = rng.uniform([-1, -1, 4], [1, 1, 6], size=(20, 3))
    xa = np.c_[project(pts, K_a, pose_a), np.ones(20)]
    xb = np.c_[project(pts, K_b, pose_b), np.ones(20)]
    F = fundamental_matrix(K_a, pose_a, K_b, pose_b)
    residual = np.abs(np.einsum("ni,ij,nj->n", xb, F, xa))
    assert residual.max() < 1e-8


def test_backproject_inverts_project():
    """A point projected to a pixel and lifted back with its camera z is the same point
    (fx != fy, off-centre principal point, rotated camera)."""
    from aceg.data.camera import (
        backproject,
        invert_pose,
        make_pose,
        project,
        quaternion_to_rotation,
    )

    rng = np.random.default_rng(3)
    K = np.array([[410.0, 0.0, 161.3], [0.0, 395.0, 118.7], [0.0, 0.0, 1.0]])
    pose = make_pose(quaternion_to_rotation(np.array([0.9, 0.1, -0.3, 0.2]) / np.linalg.norm([0.9, 0.1, -0.3, 0.2])),
                     np.array([0.5, -1.0, 2.0]))
    cam = np.column_stack([rng.uniform(-1, 1, (50, 2)), rng.uniform(0.5, 6, 50)])
    world = cam @ pose[:3, :3].T + pose[:3, 3]
    uv = project(world, K, pose)
    z = (world @ invert_pose(pose)[:3, :3].T + invert_pose(pose)[:3, 3])[:, 2]
    np.testing.assert_allclose(backproject(uv, z, K, pose), world, atol=1e-9)
