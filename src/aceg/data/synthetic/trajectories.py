"""Camera poses: a handheld scanning path for mapping and query viewpoints around it.

World frame: metres, z up (:mod:`aceg.data.synthetic.layout`). Poses are camera-to-world
4x4 with OpenCV camera axes (:mod:`aceg.data.camera`). A camera's orientation is given by
``yaw`` (heading about world z, radians, 0 = looking along +x), ``pitch`` (positive looks
up) and ``roll`` (about the optical axis).

The mapping path is what a person scanning a room does: walk a smooth loop through the free
floor space (waypoints spread over the room, toured in a short order, joined by a closed
Catmull-Rom spline), holding the camera at a scene-specific height with slow variation,
looking at furniture and posters or outward at the walls, with small smooth handheld wobble. Every
candidate pose is checked by a ``validator`` (free position, informative view); frames are
then picked evenly along the valid part of the path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from aceg.data.synthetic.layout import Layout
from aceg.errors import AcegError

#: Clearance (metres) kept between a camera centre and walls, floor, ceiling and objects.
CAMERA_CLEARANCE = 0.3

#: Samples of the dense path representation.
PATH_SAMPLES = 2048

Validator = Callable[[np.ndarray], bool]


def camera_pose(position: np.ndarray, yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    """Camera-to-world 4x4 pose (OpenCV axes) at ``position`` looking along yaw/pitch."""
    forward = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw),
                        math.sin(pitch)])
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c, s = math.cos(roll), math.sin(roll)
    x_axis = c * right + s * down
    y_axis = -s * right + c * down
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2] = x_axis, y_axis, forward
    pose[:3, 3] = position
    return pose


def _catmull_rom_closed(points: np.ndarray, samples: int) -> np.ndarray:
    """Closed uniform Catmull-Rom spline through ``points`` (K, D), ``samples`` points."""
    k = len(points)
    t = np.arange(samples) * k / samples
    segment = np.floor(t).astype(int)
    u = (t - segment)[:, None]
    p0, p1 = points[(segment - 1) % k], points[segment % k]
    p2, p3 = points[(segment + 1) % k], points[(segment + 2) % k]
    return 0.5 * ((2 * p1) + (-p0 + p2) * u + (2 * p0 - 5 * p1 + 4 * p2 - p3) * u**2
                  + (-p0 + 3 * p1 - 3 * p2 + p3) * u**3)


def smooth_wobble(rng: np.random.Generator, samples: int, amplitude: float,
                  cycles=(3, 25)) -> np.ndarray:
    """Sum of three sinusoids over a path of ``samples`` samples, each of a whole number of
    periods drawn from ``cycles`` over the path: smooth, periodic, ~``amplitude``."""
    s = np.arange(samples) / samples
    total = np.zeros(samples)
    for _ in range(3):
        total += np.sin(2 * np.pi * (int(rng.integers(*cycles)) * s + rng.random()))
    return amplitude * total / 1.7


def catmull_rom_open(points: np.ndarray, samples: int) -> np.ndarray:
    """Open uniform Catmull-Rom spline through ``points`` (K, D), K >= 2: ``samples``
    points from the first control point to the last (end points repeated as tangents)."""
    k = len(points)
    padded = np.concatenate([points[:1], points, points[-1:]])
    t = np.linspace(0.0, k - 1, samples)
    segment = np.minimum(np.floor(t).astype(int), k - 2)
    u = (t - segment)[:, None]
    p0, p1, p2, p3 = (padded[segment + i] for i in range(4))
    return 0.5 * ((2 * p1) + (-p0 + p2) * u + (2 * p0 - 5 * p1 + 4 * p2 - p3) * u**2
                  + (-p0 + 3 * p1 - 3 * p2 + p3) * u**3)


def short_tour(points: np.ndarray) -> np.ndarray:
    """Order of ``points`` (K, 2) for a short closed tour (nearest neighbour + 2-opt)."""
    k = len(points)
    order = [0]
    left = set(range(1, k))
    while left:
        last = points[order[-1]]
        nearest = min(left, key=lambda i: float(np.sum((points[i] - last) ** 2)))
        order.append(nearest)
        left.remove(nearest)
    d = lambda a, b: float(np.linalg.norm(points[a] - points[b]))  # noqa: E731
    improved = True
    while improved:
        improved = False
        for i in range(1, k - 1):
            for j in range(i + 1, k):
                a, b, c, e = order[i - 1], order[i], order[j], order[(j + 1) % k]
                if d(a, c) + d(b, e) < d(a, b) + d(c, e) - 1e-9:
                    order[i:j + 1] = order[i:j + 1][::-1]
                    improved = True
    return np.array(order)


@dataclass
class ScanPath:
    """A scanning path sampled densely: arrays of one length (:data:`PATH_SAMPLES` for a
    room's closed loop, more for a longer walk), evenly spaced along the path.

    Attributes:
        positions: (N, 3) camera centres, world metres.
        yaw, pitch, roll: (N,) orientation angles, radians.
        base_height: the scene's camera height (metres) around which the path varies.
    """

    positions: np.ndarray
    yaw: np.ndarray
    pitch: np.ndarray
    roll: np.ndarray
    base_height: float

    @property
    def samples(self) -> int:
        return len(self.positions)

    def pose_at(self, index: int) -> np.ndarray:
        return camera_pose(self.positions[index], self.yaw[index], self.pitch[index],
                           self.roll[index])


def free_floor_points(layout: Layout, rng: np.random.Generator, height: float,
                      count: int = 3000, clearance: float = 0.5) -> np.ndarray:
    """Random points (N, 2) of the floor plan where a camera at ``height`` is free."""
    lo, hi = layout.room.bounds
    points = rng.uniform(lo, hi, (count, 2))
    return points[layout.is_free(points, height, clearance)]


def scan_path(layout: Layout, rng: np.random.Generator) -> ScanPath:
    """A random closed handheld scanning path through the room's free space."""
    base_height = float(rng.uniform(1.2, 1.75))
    free = free_floor_points(layout, rng, base_height)
    if len(free) < 10:
        free = free_floor_points(layout, rng, base_height, clearance=CAMERA_CLEARANCE)
    if len(free) < 4:
        raise AcegError("synthetic room has no free floor space for a camera path")
    area = float(np.prod(layout.room.bounds[1] - layout.room.bounds[0]))
    k = int(np.clip(round(area / 3.0), 5, 10))
    chosen = [int(rng.integers(len(free)))]
    for _ in range(k - 1):  # farthest-point sampling spreads the waypoints
        distance = np.min(np.linalg.norm(free[:, None] - free[chosen][None], axis=2), axis=1)
        chosen.append(int(np.argmax(distance)))
    waypoints = free[chosen][short_tour(free[chosen])]
    # pull waypoints a little towards the middle so the loop does not hug the furniture
    centre = waypoints.mean(axis=0)
    waypoints = centre + (waypoints - centre) * rng.uniform(0.7, 0.95)
    xy = _catmull_rom_closed(waypoints, PATH_SAMPLES)
    # gaze at each waypoint: at a piece of furniture or a poster 1-4 m away (60%), else
    # outward from the path's centre, swinging around
    outward = np.arctan2(waypoints[:, 1] - centre[1], waypoints[:, 0] - centre[0])
    gaze = outward + rng.uniform(-1.2, 1.2, len(waypoints))
    pitch_points = rng.uniform(-0.5, 0.08, len(waypoints))
    things = [o for o in layout.objects if o.kind not in ("skirting", "rug")]
    if things:
        centres = np.array([[o.x, o.y, o.z_base + 0.5 * o.top] for o in things])
        for k, point in enumerate(waypoints):
            offsets = centres[:, :2] - point
            distance = np.linalg.norm(offsets, axis=1)
            candidates = np.flatnonzero((distance > 1.0) & (distance < 4.0))
            if len(candidates) and rng.random() < 0.6:
                target = int(rng.choice(candidates))
                gaze[k] = math.atan2(offsets[target, 1], offsets[target, 0]) + rng.normal(0, 0.2)
                drop = centres[target, 2] - base_height
                pitch_points[k] = np.clip(math.atan2(drop, distance[target]), -0.7, 0.15)
    gaze_vectors = _catmull_rom_closed(np.column_stack([np.cos(gaze), np.sin(gaze)]),
                                       PATH_SAMPLES)
    yaw = np.arctan2(gaze_vectors[:, 1], gaze_vectors[:, 0])
    pitch = _catmull_rom_closed(pitch_points[:, None], PATH_SAMPLES)[:, 0]
    height_points = base_height + rng.uniform(-0.15, 0.15, len(waypoints))
    z = _catmull_rom_closed(height_points[:, None], PATH_SAMPLES)[:, 0]
    positions = np.column_stack([xy, z])
    positions += np.column_stack([smooth_wobble(rng, PATH_SAMPLES, 0.02, (20, 60))
                                  for _ in range(3)])
    yaw = yaw + smooth_wobble(rng, PATH_SAMPLES, math.radians(2.0), (15, 50))
    pitch = pitch + smooth_wobble(rng, PATH_SAMPLES, math.radians(1.5), (15, 50))
    roll = smooth_wobble(rng, PATH_SAMPLES, math.radians(3.0), (3, 20))
    return ScanPath(positions, yaw, pitch, roll, base_height)


def mapping_poses(path: ScanPath, count: int, validator: Validator,
                  oversampling: int = 2) -> tuple[list[np.ndarray], int]:
    """``count`` poses picked evenly along the valid part of ``path``, in path order.

    Returns the poses and the number of candidate poses rejected by ``validator``.
    """
    rejected = 0
    valid_indices: list[int] = []
    checked: dict[int, bool] = {}
    samples = path.samples
    candidates = min(max(count * oversampling, 30), samples)
    while True:
        indices = np.unique(np.round(np.arange(candidates) * samples / candidates)
                            .astype(int) % samples)
        for index in indices:
            if index not in checked:
                checked[index] = bool(validator(path.pose_at(int(index))))
                rejected += not checked[index]
        valid_indices = sorted(i for i, ok in checked.items() if ok)
        if len(valid_indices) >= count or candidates >= samples:
            break
        candidates = min(candidates * 2, samples)
    if len(valid_indices) < count:
        raise AcegError(f"synthetic scene: only {len(valid_indices)} usable mapping views "
                        f"of {count} requested")
    picks = np.round(np.linspace(0, len(valid_indices), count, endpoint=False)).astype(int)
    return [path.pose_at(valid_indices[i]) for i in picks], rejected


def _sample_until_valid(make: Callable[[], np.ndarray], count: int, validator: Validator,
                        what: str, max_tries_per_pose: int = 60) -> tuple[list[np.ndarray], int]:
    poses: list[np.ndarray] = []
    rejected = 0
    tries = 0
    while len(poses) < count:
        pose = make()
        tries += 1
        if validator(pose):
            poses.append(pose)
        else:
            rejected += 1
        if tries > max_tries_per_pose * count + 100:
            raise AcegError(f"synthetic scene: found only {len(poses)} usable {what} views "
                            f"of {count} requested")
    return poses, rejected


def query_near_path(path: ScanPath, count: int, validator: Validator,
                    rng: np.random.Generator) -> tuple[list[np.ndarray], int]:
    """Query poses in the mapping path's area: a random point of the path moved by up to
    0.3 m sideways and 0.1 m up/down, heading +-10 deg, pitch +-5 deg (standard deviations)."""

    def make() -> np.ndarray:
        index = int(rng.integers(path.samples))
        radius, angle = 0.3 * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
        offset = np.array([radius * math.cos(angle), radius * math.sin(angle),
                           rng.uniform(-0.1, 0.1)])
        return camera_pose(path.positions[index] + offset,
                           path.yaw[index] + rng.normal(0, math.radians(10)),
                           path.pitch[index] + rng.normal(0, math.radians(5)),
                           path.roll[index] + rng.normal(0, math.radians(2)))

    return _sample_until_valid(make, count, validator, "query_same")


def query_far_from_path(path: ScanPath, count: int, validator: Validator,
                        rng: np.random.Generator, ceiling: float) -> tuple[list[np.ndarray], int]:
    """Query poses farther from the mapping path: alternately (a) another height (crouched
    ~0.8 m or arm raised ~2 m, looking up or down) or (b) looking the opposite way, each
    0.7-2.0 m to the side of the path."""
    counter = {"n": 0}

    def make() -> np.ndarray:
        index = int(rng.integers(path.samples))
        radius, angle = rng.uniform(0.7, 2.0), rng.uniform(0, 2 * math.pi)
        position = path.positions[index] + [radius * math.cos(angle), radius * math.sin(angle), 0]
        yaw, pitch = path.yaw[index], path.pitch[index]
        if counter["n"] % 2 == 0:
            if rng.random() < 0.5:
                position[2] = rng.uniform(0.6, 0.95)
                pitch = rng.uniform(-0.15, 0.25)
            else:
                position[2] = min(rng.uniform(1.9, 2.3), ceiling - 0.35)
                pitch = rng.uniform(-0.8, -0.35)
            yaw = yaw + rng.uniform(-1.0, 1.0)
        else:
            yaw = yaw + math.pi + rng.uniform(-0.7, 0.7)
            pitch = pitch + rng.normal(0, math.radians(8))
        counter["n"] += 1
        return camera_pose(position, yaw, pitch, rng.normal(0, math.radians(4)))

    return _sample_until_valid(make, count, validator, "query_view")
