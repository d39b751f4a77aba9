"""Image loading and the one image-preparation function (resize, undistort, crop)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from aceg.data.camera import Intrinsics
from aceg.data.images import load_depth, load_image, prepare_image
from aceg.errors import AcegError


def blob_image(width: int, height: int, centres, sigma: float = 4.0) -> np.ndarray:
    """RGB image with Gaussian blobs centred at sub-pixel (u, v) positions (pixel-centre convention)."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.zeros((height, width))
    for cu, cv_ in centres:
        img += np.exp(-((u - cu) ** 2 + (v - cv_) ** 2) / (2 * sigma**2))
    grey = (255 * img / img.max()).astype(np.uint8)
    return np.dstack([grey] * 3)


def centroid(grey: np.ndarray, around: tuple[float, float], radius: int) -> tuple[float, float]:
    v, u = np.mgrid[0 : grey.shape[0], 0 : grey.shape[1]].astype(np.float64)
    mask = (u - around[0]) ** 2 + (v - around[1]) ** 2 < radius**2
    w = grey.astype(np.float64) * mask
    return float((w * u).sum() / w.sum()), float((w * v).sum() / w.sum())


def test_resize_keeps_projection_consistent(tmp_path: Path):
    # A blob at the principal point and one off-centre stay where the scaled intrinsics
    # say they project, after resizing 640x480 -> short side 240 (factor 0.5).
    k = Intrinsics(500.0, 450.0, 301.3, 233.7)
    point_cam = np.array([0.2, -0.1, 1.0])
    u = k.fx * point_cam[0] / point_cam[2] + k.cx
    v = k.fy * point_cam[1] / point_cam[2] + k.cy
    path = tmp_path / "blob.png"
    cv2.imwrite(str(path), blob_image(640, 480, [(u, v)], sigma=6.0))
    prepared = prepare_image(path, k, short_side=240)
    assert prepared.rgb.shape == (240, 320, 3)
    k2 = prepared.intrinsics
    u2 = k2.fx * point_cam[0] / point_cam[2] + k2.cx
    v2 = k2.fy * point_cam[1] / point_cam[2] + k2.cy
    cu, cv_ = centroid(prepared.rgb[..., 0], (u2, v2), 12)
    assert (cu, cv_) == pytest.approx((u2, v2), abs=0.05)


def test_crop_to_stride_keeps_principal_point(tmp_path: Path):
    path = tmp_path / "img.png"
    cv2.imwrite(str(path), np.full((100, 150, 3), 128, np.uint8))
    k = Intrinsics(100.0, 100.0, 74.5, 49.5)
    prepared = prepare_image(path, k, short_side=None, multiple_of=8)
    assert prepared.rgb.shape[:2] == (96, 144)
    assert (prepared.intrinsics.cx, prepared.intrinsics.cy) == (74.5, 49.5)


def test_undistortion_moves_points_to_pinhole_projection(tmp_path: Path):
    k = Intrinsics(400.0, 380.0, 330.0, 245.0, dist=(-0.25, 0.08, 0.001, -0.0015))
    points_cam = np.array([[0.5, 0.35, 1.0], [-0.45, -0.3, 1.0], [0.0, 0.0, 1.0]])
    distorted, _ = cv2.projectPoints(points_cam, np.zeros(3), np.zeros(3), k.K, np.array(k.dist))
    distorted = distorted.reshape(-1, 2)
    path = tmp_path / "distorted.png"
    cv2.imwrite(str(path), blob_image(640, 480, distorted, sigma=3.0))
    prepared = prepare_image(path, k, short_side=None)
    assert not prepared.intrinsics.has_distortion
    pinhole = (points_cam[:, :2] / points_cam[:, 2:]) * [k.fx, k.fy] + [k.cx, k.cy]
    for p, d in zip(pinhole, distorted, strict=True):
        assert np.linalg.norm(p - d) > 5 or np.allclose(p, d)  # distortion moved it (except centre)
        assert centroid(prepared.rgb[..., 0], tuple(p), 8) == pytest.approx(tuple(p), abs=0.15)


def test_grey_and_rgba_images_become_rgb(tmp_path: Path):
    grey = tmp_path / "g.png"
    cv2.imwrite(str(grey), np.full((10, 12), 77, np.uint8))
    assert load_image(grey).shape == (10, 12, 3)
    rgba = tmp_path / "a.png"
    cv2.imwrite(str(rgba), np.full((10, 12, 4), 200, np.uint8))
    assert load_image(rgba).shape == (10, 12, 3)
    bgr = tmp_path / "c.png"
    pixel = np.zeros((2, 2, 3), np.uint8)
    pixel[..., 2] = 255  # red in OpenCV's BGR order
    cv2.imwrite(str(bgr), pixel)
    assert load_image(bgr)[0, 0].tolist() == [255, 0, 0]


def test_missing_empty_and_corrupt_images_name_the_file(tmp_path: Path):
    with pytest.raises(AcegError, match="not found"):
        load_image(tmp_path / "nope.png")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(AcegError, match="empty"):
        load_image(empty)
    good = tmp_path / "good.jpg"
    cv2.imwrite(str(good), np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(AcegError, match="truncated.jpg") as err:
        load_image(truncated)
    assert "cannot decode" in str(err.value)


def test_depth_png_millimetres(tmp_path: Path):
    path = tmp_path / "d.png"
    cv2.imwrite(str(path), np.array([[1500, 0]], np.uint16))
    assert load_depth(path).tolist() == [[1.5, 0.0]]
    bad = tmp_path / "d8.png"
    cv2.imwrite(str(bad), np.array([[15, 0]], np.uint8))
    with pytest.raises(AcegError, match="16-bit"):
        load_depth(bad)
