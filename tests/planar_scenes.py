"""Tiny posed scenes of textured planes, rendered with exact homographies (for tests).

World frame (metres, OpenCV-like: y points down): a wall z = 0 spanning x in [-2, 2],
y in [-1.5, 1] and a floor y = 1 spanning x in [-2, 2], z in [-3, 0] (a concave corner,
so no plane hides the other). Cameras (OpenCV axes) stand about 1 m above the floor and
2-3 m from the wall, looking at the wall/floor edge region. Two planes avoid the
rotation/translation ambiguity of a single plane.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import skimage.data

from aceg.data.camera import Intrinsics, make_pose
from aceg.data.scene import Frame, Scene

TEXTURES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")


def texture(name: str, size: tuple[int, int] = (640, 480)) -> np.ndarray:
    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=2)
    return cv2.resize(img[..., :3], size, interpolation=cv2.INTER_AREA)


def look_at(centre: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """Camera-to-world pose at ``centre`` looking at ``target`` (OpenCV axes, world y down)."""
    z = target - centre
    z = z / np.linalg.norm(z)
    x = np.cross(np.array([0.0, 1.0, 0.0]), z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c, s = np.cos(roll), np.sin(roll)
    R = np.stack([x, y, z], axis=1) @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    return make_pose(R, centre)


def render_plane(tex: np.ndarray, origin, axis_u, axis_v, K: np.ndarray, cam_to_world: np.ndarray,
                 size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Image and coverage mask of a textured rectangle ``origin + a*axis_u + b*axis_v``,
    ``a, b`` in [0, 1] spanning the texture (pixel centres at integer coordinates)."""
    th, tw = tex.shape[:2]
    u, v, o = (np.asarray(x, dtype=np.float64) for x in (axis_u, axis_v, origin))
    # texture pixel (i, j) centre -> plane point o + (j + 0.5)/tw u + (i + 0.5)/th v
    S = np.stack([u / tw, v / th, o + 0.5 * u / tw + 0.5 * v / th], axis=1)  # 3x3
    w2c = np.linalg.inv(cam_to_world)
    H = K @ (w2c[:3, :3] @ S + np.outer(w2c[:3, 3], [0, 0, 1]))
    img = cv2.warpPerspective(tex, H, size, flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.full((th, tw), 255, np.uint8), H, size, flags=cv2.INTER_NEAREST)
    # Keep only the side in front of the camera (warpPerspective also maps points behind).
    return img, mask > 0


def corner_depth(K: np.ndarray, cam_to_world: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 z-depth in metres of the wall + floor corner (0 where nothing)."""
    w, h = size
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    R, c = cam_to_world[:3, :3], cam_to_world[:3, 3]
    d = rays @ R.T  # world direction per pixel, scaled so that camera z = 1
    depth = np.full((h, w), np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis, value, lo, hi in ((2, 0.0, (-2, -1.5), (2, 1)), (1, 1.0, (-2, -3), (2, 0))):
            t = (value - c[axis]) / d[..., axis]
            p = c + t[..., None] * d
            other = [0, 1] if axis == 2 else [0, 2]
            inside = (t > 0) & (p[..., other[0]] >= lo[0]) & (p[..., other[0]] <= hi[0]) & \
                     (p[..., other[1]] >= lo[1]) & (p[..., other[1]] <= hi[1])
            depth = np.where(inside & (t < depth), t, depth)
    return np.where(np.isfinite(depth), depth, 0).astype(np.float32)


def corner_scene(folder: Path, textures: tuple[str, str] = ("astronaut", "coffee"), n: int = 12,
                 seed: int = 0, size: tuple[int, int] = (160, 120), name: str = "corner",
                 depth: bool = False) -> Scene:
    """``n`` posed views (PNG files in ``folder``) of the wall + floor corner, with fx != fy
    and an off-centre principal point; ``depth`` also writes ``.npy`` z-depth maps."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    wall, floor = texture(textures[0]), texture(textures[1])
    w, h = size
    intr = Intrinsics(0.8 * w, 0.75 * w, w / 2 + 3.3, h / 2 - 2.1)
    frames = []
    for i in range(n):
        centre = np.array([rng.uniform(-0.7, 0.7), rng.uniform(-0.2, 0.2), -rng.uniform(2.2, 2.8)])
        target = np.array([rng.uniform(-0.3, 0.3), rng.uniform(0.3, 0.7), 0.0])
        pose = look_at(centre, target, rng.uniform(-0.15, 0.15))
        img_w, m_w = render_plane(wall, [-2, -1.5, 0], [4, 0, 0], [0, 2.5, 0], intr.K, pose, size)
        img_f, m_f = render_plane(floor, [-2, 1, -3], [4, 0, 0], [0, 0, 3], intr.K, pose, size)
        img = np.where(m_w[..., None], img_w, img_f)
        path = folder / f"{i:04d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        depth_path = None
        if depth:
            depth_path = folder / f"{i:04d}.depth.npy"
            np.save(depth_path, corner_depth(intr.K, pose, size))
        frames.append(Frame(path.name, path, w, h, intr, pose, depth_path))
    return Scene(name, frames, folder, "test")
