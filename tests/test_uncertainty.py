"""The pose spread predicted from inliers, and the confident flag that reads it."""

from __future__ import annotations

import numpy as np

from aceg.data.camera import Intrinsics
from aceg.localization.localizer import CONFIDENT_CENTRE_STD_M, CONFIDENT_INLIERS, solve_pnp
from aceg.localization.pnp import estimate_pose
from aceg.localization.uncertainty import pose_spread

K = Intrinsics(500.0, 500.0, 319.5, 239.5)
W, H = 640, 480


def _pose() -> np.ndarray:
    """A camera-to-world pose a little off the world axes."""
    c, s = np.cos(0.2), np.sin(0.2)
    pose = np.eye(4)
    pose[:3, :3] = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    pose[:3, 3] = [0.3, -0.1, 0.5]
    return pose


def _scene(rng, n: int, depth: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """``n`` world points seen by :func:`_pose` at ``depth`` (metres) and their exact pixels."""
    uv = rng.uniform([20, 20], [W - 20, H - 20], size=(n, 2))
    z = rng.uniform(*depth, size=n)
    cam = np.c_[(uv[:, 0] - K.cx) / K.fx * z, (uv[:, 1] - K.cy) / K.fy * z, z]
    pose = _pose()
    return uv, cam @ pose[:3, :3].T + pose[:3, 3]


def test_predicted_centre_spread_matches_the_spread_over_noise_draws():
    rng = np.random.default_rng(0)
    uv, world = _scene(rng, 300, (2.0, 6.0))
    errors, predicted = [], []
    for _ in range(40):
        noisy = uv + rng.normal(0, 1.0, uv.shape)
        res = estimate_pose(noisy, world, K, 10.0)
        errors.append(res.cam_to_world[:3, 3] - _pose()[:3, 3])
        predicted.append(pose_spread(res.cam_to_world, noisy[res.inlier_mask], world[res.inlier_mask],
                                     K.K).centre_m)
    empirical = float(np.sqrt(np.trace(np.cov(np.array(errors).T))))
    assert 0.6 < np.mean(predicted) / empirical < 1.6


def test_spread_grows_with_pixel_noise_and_is_infinite_without_points():
    rng = np.random.default_rng(1)
    uv, world = _scene(rng, 200, (2.0, 6.0))
    spreads = []
    for sigma in (0.5, 2.0, 8.0):
        noisy = uv + rng.normal(0, sigma, uv.shape)
        spreads.append(pose_spread(_pose(), noisy, world, K.K))
    assert spreads[0].centre_m < spreads[1].centre_m < spreads[2].centre_m
    assert spreads[0].rotation_deg < spreads[1].rotation_deg < spreads[2].rotation_deg
    assert np.isinf(pose_spread(_pose(), uv[:3], world[:3], K.K).centre_m)


def test_confident_needs_a_determined_centre_not_just_many_inliers():
    rng = np.random.default_rng(2)
    n = 2 * CONFIDENT_INLIERS
    for depth, expect in (((2.0, 4.0), True), ((150.0, 200.0), False)):
        uv, world = _scene(rng, n, depth)
        noisy = uv + rng.normal(0, 1.5, uv.shape)
        r = solve_pnp(noisy, world, K, W, H)
        assert r.localized and r.inliers >= CONFIDENT_INLIERS
        assert (r.centre_std_m <= CONFIDENT_CENTRE_STD_M) is expect
        assert r.confident is expect
        assert np.isfinite(r.rotation_std_deg)
