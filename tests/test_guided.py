"""The guided second stage of keypoint maps (aceg.localization.guided): each query
keypoint re-reads the anchors its first pose projects near it."""

from __future__ import annotations

import numpy as np

from aceg.data.camera import Intrinsics, invert_pose
from aceg.localization.guided import GuidedConfig, guided_correspondences, point_ids

K = Intrinsics(300.0, 300.0, 160.0, 120.0)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _scene(seed: int = 0, n: int = 200):
    """Anchors on a wall 3 m in front of an identity camera, and their exact pixels."""
    rng = np.random.default_rng(seed)
    world = np.c_[rng.uniform(-2, 2, n), rng.uniform(-1.5, 1.5, n), np.full(n, 3.0)]
    keys = _unit(rng.normal(size=(n, 64))).astype(np.float32)
    pixels = world[:, :2] / world[:, 2:] * [K.fx, K.fy] + [K.cx, K.cy]
    return world, keys, pixels, np.eye(4)


def test_each_keypoint_reads_its_own_anchor_near_its_projection():
    world, keys, pixels, pose = _scene()
    rng = np.random.default_rng(1)
    query = pixels + rng.normal(0, 1.0, pixels.shape)  # the first pose is a pixel off
    noisy = _unit(keys + rng.normal(0, 0.05, keys.shape)).astype(np.float32)
    px, xyz = guided_correspondences(noisy, query, keys, world, point_ids(world), K, pose)
    assert len(px) > 0.9 * len(world)
    index = {tuple(p): i for i, p in enumerate(query)}
    for p, x in zip(px, xyz, strict=True):
        np.testing.assert_array_equal(x, world[index[tuple(p)]])


def test_look_alike_far_away_is_not_read_and_one_nearby_is_ambiguous():
    world, keys, pixels, pose = _scene(n=3)
    world[1] = world[0] + [1.0, 0.0, 0.0]  # far in the image, same key as anchor 0
    keys[1] = keys[0]
    pixels[1] = world[1, :2] / world[1, 2] * [K.fx, K.fy] + [K.cx, K.cy]
    px, xyz = guided_correspondences(keys[:1], pixels[:1], keys[:2], world[:2],
                                     point_ids(world[:2]), K, pose)
    np.testing.assert_array_equal(xyz, world[:1])  # the look-alike is outside the radius
    near = world.copy()
    near[1] = world[0] + [0.005, 0.0, 0.0]  # a few pixels away, same key: ambiguous
    px, xyz = guided_correspondences(keys[:1], pixels[:1], keys[:2], near[:2], point_ids(near[:2]),
                                     K, pose)
    assert len(px) == 0
    shared = np.stack([world[0], world[0]])  # two keypoints of one track: not ambiguous
    px, xyz = guided_correspondences(keys[:1], pixels[:1], keys[:2], shared, point_ids(shared),
                                     K, pose)
    np.testing.assert_array_equal(xyz, shared[:1])


def test_anchors_behind_the_camera_or_outside_the_radius_give_nothing():
    world, keys, pixels, pose = _scene(n=20)
    behind = world * [1, 1, -1]
    px, _ = guided_correspondences(keys, pixels, keys, behind, point_ids(behind), K, pose)
    assert len(px) == 0
    grid = np.stack(np.meshgrid(np.arange(-1.0, 1.01, 1.0), np.arange(-1.0, 1.01, 1.0)), -1)
    world = np.c_[grid.reshape(-1, 2), np.full(9, 3.0)]  # anchors 100 px apart
    pixels = world[:, :2] / 3.0 * [K.fx, K.fy] + [K.cx, K.cy]
    moved = np.eye(4)
    moved[:3, 3] = [0.5, 0.0, 0.0]  # a first pose 50 px off: no anchor within 8 px
    assert np.allclose(invert_pose(moved)[:3, 3], [-0.5, 0.0, 0.0])
    px, _ = guided_correspondences(keys[:9], pixels, keys[:9], world, point_ids(world), K, moved,
                                   GuidedConfig(radius_px=8.0))
    assert len(px) == 0
    px, _ = guided_correspondences(keys[:9], pixels, keys[:9], world, point_ids(world), K, pose)
    assert len(px) == 9


def test_unrelated_descriptors_give_no_correspondence():
    """Random query keys against random anchor keys: whatever the first pose, the
    similarity floor leaves (almost) nothing for a second RANSAC to agree with."""
    world, keys, pixels, pose = _scene(seed=3, n=3000)
    rng = np.random.default_rng(4)
    random_keys = _unit(rng.normal(size=keys.shape)).astype(np.float32)
    px, _ = guided_correspondences(random_keys, pixels, keys, world, point_ids(world), K, pose)
    assert len(px) < 0.01 * len(world)
    loose = GuidedConfig(min_similarity=-1.0)  # without the floor most would be kept
    px, _ = guided_correspondences(random_keys, pixels, keys, world, point_ids(world), K, pose, loose)
    assert len(px) > 0.5 * len(world)
