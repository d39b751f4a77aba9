"""Epipolar consistency of read poses and intrinsics with the images themselves.

SIFT keypoints (OpenCV, Lowe ratio test) matched between two views must lie on the
epipolar lines implied by the two camera-to-world poses and pinhole intrinsics
(:func:`aceg.data.camera.fundamental_matrix`). Images may be downscaled for speed: the
keypoints are mapped back to full-resolution pixel coordinates with the pixel-centre
convention of :mod:`aceg.data.camera` (``u = (u_small + 0.5) / s - 0.5``), so distances
are reported in full-resolution pixels. Features are cached by file content, so an image
copied by a writer is not processed twice.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

from aceg.data.camera import fundamental_matrix
from aceg.data.images import load_image
from aceg.data.scene import Frame, Scene

#: Longest image side used for SIFT (images are downscaled to it, never upscaled).
SIFT_LONG_SIDE = 800
RATIO = 0.75
MIN_MATCHES = 30

_cache: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}


def sift_features(path: Path, long_side: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) keypoints in full-resolution pixels and (N, 128) descriptors."""
    long_side = long_side or SIFT_LONG_SIDE
    key = (hashlib.sha1(Path(path).read_bytes()).hexdigest(), long_side)
    if key not in _cache:
        grey = load_image(path, grey=True)
        height, width = grey.shape
        scale = min(1.0, long_side / max(width, height))
        if scale < 1.0:
            small_w, small_h = round(width * scale), round(height * scale)
            grey = cv2.resize(grey, (small_w, small_h), interpolation=cv2.INTER_AREA)
            sx, sy = small_w / width, small_h / height
        else:
            sx = sy = 1.0
        sift = cv2.SIFT_create(nfeatures=3000)
        keypoints, descriptors = sift.detectAndCompute(grey, None)
        points = np.array([kp.pt for kp in keypoints], dtype=np.float64).reshape(-1, 2)
        points[:, 0] = (points[:, 0] + 0.5) / sx - 0.5
        points[:, 1] = (points[:, 1] + 0.5) / sy - 0.5
        if descriptors is None:
            descriptors = np.zeros((0, 128), np.float32)
        _cache[key] = (points, descriptors)
    return _cache[key]


def match(frame_a: Frame, frame_b: Frame) -> tuple[np.ndarray, np.ndarray]:
    points_a, desc_a = sift_features(frame_a.image_path)
    points_b, desc_b = sift_features(frame_b.image_path)
    if len(desc_a) < 2 or len(desc_b) < 2:
        return np.zeros((0, 2)), np.zeros((0, 2))
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(desc_a, desc_b, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance]
    ia = np.array([m.queryIdx for m in good], dtype=int)
    ib = np.array([m.trainIdx for m in good], dtype=int)
    return points_a[ia], points_b[ib]


def symmetric_epipolar_distances(
    F: np.ndarray, points_a: np.ndarray, points_b: np.ndarray
) -> np.ndarray:
    """Mean of the two point-to-epipolar-line distances (pixels) for each match."""
    ha = np.hstack([points_a, np.ones((len(points_a), 1))])
    hb = np.hstack([points_b, np.ones((len(points_b), 1))])
    lines_b = ha @ F.T  # epipolar lines in b of points in a
    lines_a = hb @ F  # epipolar lines in a of points in b
    residual = np.abs(np.sum(hb * lines_b, axis=1))
    d_b = residual / np.linalg.norm(lines_b[:, :2], axis=1)
    d_a = residual / np.linalg.norm(lines_a[:, :2], axis=1)
    return 0.5 * (d_a + d_b)


def pair_median(frame_a: Frame, frame_b: Frame) -> tuple[float, int]:
    """(median symmetric epipolar distance in full-resolution pixels, number of matches)."""
    assert not frame_a.intrinsics.has_distortion and not frame_b.intrinsics.has_distortion
    points_a, points_b = match(frame_a, frame_b)
    if len(points_a) < MIN_MATCHES:
        return float("inf"), len(points_a)
    F = fundamental_matrix(
        frame_a.intrinsics.K, frame_a.cam_to_world, frame_b.intrinsics.K, frame_b.cam_to_world
    )
    return float(np.median(symmetric_epipolar_distances(F, points_a, points_b))), len(points_a)


def neighbour_pairs(scene: Scene) -> list[tuple[int, int]]:
    """Each frame with its neighbour: the frame whose optical axis is closest in angle,
    among frames whose centre is not almost at the same place (at least a quarter of the
    typical nearest-centre distance away, so that the baseline is not degenerate)."""
    axes = np.stack([f.cam_to_world[:3, 2] for f in scene])
    centres = scene.camera_centres()
    angles = np.degrees(np.arccos(np.clip(axes @ axes.T, -1.0, 1.0)))
    distances = np.linalg.norm(centres[:, None] - centres[None], axis=2)
    np.fill_diagonal(distances, np.inf)
    typical = np.median(distances.min(axis=1))
    angles[distances < 0.25 * typical] = np.inf
    np.fill_diagonal(angles, np.inf)
    return sorted({tuple(sorted((i, int(np.argmin(angles[i]))))) for i in range(len(scene))})


def neighbour_medians(scene: Scene) -> dict[tuple[str, str], tuple[float, int]]:
    """``{(name_a, name_b): (median distance px, matches)}`` over :func:`neighbour_pairs`."""
    return {
        (scene[a].name, scene[b].name): pair_median(scene[a], scene[b])
        for a, b in neighbour_pairs(scene)
    }


def assert_epipolar_consistent(scene: Scene, max_median_px: float = 1.0) -> float:
    """Assert every neighbour pair's median distance is below ``max_median_px``; return the
    median over all pairs (full-resolution pixels)."""
    results = neighbour_medians(scene)
    bad = {pair: r for pair, r in results.items() if not r[0] < max_median_px}
    assert not bad, f"{scene.name}: pairs off their epipolar lines (median px, matches): {bad}"
    overall = float(np.median([r[0] for r in results.values()]))
    print(
        f"epipolar {scene.name}: {len(results)} pairs, median {overall:.3f} px, "
        f"worst {max(r[0] for r in results.values()):.3f} px"
    )
    return overall
