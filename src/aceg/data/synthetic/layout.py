"""Rooms and the objects in them: the data a scene is generated, rendered and moved from.

World frame: metres, **z up**, floor at ``z = 0``; the room's floor plan is a polygon in
the ``(x, y)`` plane (counter-clockwise). Objects are lists of parts (boxes, cylinders,
flat quads) in the object's own frame (origin at the centre of its footprint on its base,
x along its width, y towards its front, z up), placed by ``(x, y, z_base, yaw)``. Moving an
object (the ``query_moved`` split) changes only its placement.

:mod:`~aceg.data.synthetic.rooms` draws a random layout, :mod:`~aceg.data.synthetic.mesh`
turns one into triangles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class Material:
    """How a surface looks.

    Attributes:
        layer: texture layer index in the scene's
            :class:`~aceg.data.synthetic.textures.TextureSet`.
        plain: whether that texture is plain (nothing for a camera to see).
        tint: (3,) linear RGB gain applied to the texture.
        specular: strength of the specular highlight (0 = matte).
        shininess: Blinn-Phong exponent.
        repeats_per_metre: texture repeats per metre along a surface; 0 stretches the
            texture once over each face (posters, pictures).
    """

    layer: int
    plain: bool = False
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    specular: float = 0.05
    shininess: float = 16.0
    repeats_per_metre: float = 1.0


@dataclass(frozen=True)
class Part:
    """A primitive in object coordinates.

    ``kind`` is ``"box"`` (``centre`` = box centre, ``size`` = full extents along x, y, z),
    ``"cylinder"`` (``centre`` = centre of the bottom disc, ``size`` = (radius, radius,
    height)) or ``"quad"`` (vertical rectangle in the plane y = centre[1] facing +y, or
    horizontal facing +z when ``size[2] == 0``; ``size`` = (width, depth or 0, height)).
    """

    kind: str
    centre: tuple[float, float, float]
    size: tuple[float, float, float]
    material: Material


@dataclass(frozen=True)
class SceneObject:
    """Furniture, clutter, posters...: parts placed at ``(x, y, z_base)`` turned by ``yaw``.

    Attributes:
        name: unique within the scene (``cabinet_3``).
        kind: what it is (``cabinet``, ``table``, ``shelf``, ``poster``, ...).
        parts: the primitives, in object coordinates (metres).
        x, y, z_base: placement of the object origin in the world (metres).
        yaw: rotation about world z (radians), object x axis -> world
            ``(cos yaw, sin yaw, 0)``.
        half_extent: (hx, hy) footprint half-sizes in object coordinates; (0, 0) for
            objects cameras may pass over or through (posters, rugs).
        top: height of the object's top above ``z_base`` (metres).
        movable: may be displaced in the ``query_moved`` split.
    """

    name: str
    kind: str
    parts: tuple[Part, ...]
    x: float
    y: float
    z_base: float = 0.0
    yaw: float = 0.0
    half_extent: tuple[float, float] = (0.0, 0.0)
    top: float = 0.0
    movable: bool = False

    @property
    def has_footprint(self) -> bool:
        return self.half_extent[0] > 0 and self.half_extent[1] > 0

    def footprint_corners(self, inflate: float = 0.0) -> np.ndarray:
        """(4, 2) world corners of the (inflated) footprint rectangle."""
        hx, hy = self.half_extent[0] + inflate, self.half_extent[1] + inflate
        local = np.array([[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]])
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return local @ np.array([[c, s], [-s, c]]) + [self.x, self.y]

    def distance_to_footprint(self, xy: np.ndarray) -> np.ndarray:
        """Distance (metres) from world points (N, 2) to the footprint (0 inside)."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        d = np.atleast_2d(xy) - [self.x, self.y]
        local = np.stack([d[:, 0] * c + d[:, 1] * s, -d[:, 0] * s + d[:, 1] * c], axis=1)
        outside = np.maximum(np.abs(local) - np.array(self.half_extent), 0.0)
        return np.hypot(outside[:, 0], outside[:, 1])


@dataclass
class Room:
    """Floor plan polygon (K, 2) counter-clockwise, metres, and ceiling height."""

    polygon: np.ndarray
    height: float
    shape: str

    def contains(self, xy: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Whether points (N, 2) are inside the floor plan, at least ``margin`` from walls."""
        xy = np.atleast_2d(xy)
        inside = _points_in_polygon(xy, self.polygon)
        if margin > 0:
            inside &= _distance_to_polygon_edges(xy, self.polygon) >= margin
        return inside

    def walls(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(start, end) 2D points of each wall, counter-clockwise (room on the left)."""
        k = len(self.polygon)
        return [(self.polygon[i], self.polygon[(i + 1) % k]) for i in range(k)]

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.polygon.min(axis=0), self.polygon.max(axis=0)


def _points_in_polygon(xy: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    x, y = xy[:, 0:1], xy[:, 1:2]
    ax, ay = polygon[:, 0], polygon[:, 1]
    bx, by = np.roll(ax, -1), np.roll(ay, -1)
    crosses = (ay > y) != (by > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = ax + (y - ay) * (bx - ax) / (by - ay)
    return (np.sum(crosses & (x < x_at), axis=1) % 2) == 1


def _distance_to_polygon_edges(xy: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    return distance_to_segments(xy, polygon, np.roll(polygon, -1, axis=0))


def distance_to_segments(xy: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Distance (metres) from each point (N, 2) to the nearest of the segments
    ``starts[i]`` -> ``ends[i]`` (S, 2); inf when there are no segments."""
    if len(starts) == 0:
        return np.full(len(xy), np.inf)
    a = np.asarray(starts, np.float64)[None, :, :]
    b = np.asarray(ends, np.float64)[None, :, :]
    p = xy[:, None, :]
    ab = b - a
    t = np.clip(np.sum((p - a) * ab, axis=2) / np.sum(ab * ab, axis=2), 0.0, 1.0)
    closest = a + t[..., None] * ab
    return np.linalg.norm(p - closest, axis=2).min(axis=1)


@dataclass
class Layout:
    """A room, its fixed surfaces' materials and its objects.

    Attributes:
        room: floor plan and height.
        wall_materials: one material per wall (same order as :meth:`Room.walls`).
        floor_material, ceiling_material: materials of floor and ceiling.
        objects: everything inside the room.
    """

    room: Room
    wall_materials: list[Material]
    floor_material: Material
    ceiling_material: Material
    objects: list[SceneObject] = field(default_factory=list)

    def is_free(self, xy: np.ndarray, z: np.ndarray | float, clearance: float = 0.3) -> np.ndarray:
        """Whether camera centres at ``xy`` (N, 2) and heights ``z`` are at least
        ``clearance`` metres from walls, ceiling, floor and every object."""
        xy = np.atleast_2d(xy)
        z = np.broadcast_to(np.asarray(z, dtype=np.float64), (len(xy),))
        free = self.room.contains(xy, clearance)
        free &= (z > clearance) & (z < self.room.height - clearance)
        return free & self.clear_of_objects(xy, z, clearance)

    def clear_of_objects(self, xy: np.ndarray, z: np.ndarray | float,
                         clearance: float = 0.3) -> np.ndarray:
        """Whether points at ``xy`` (N, 2) and heights ``z`` are at least ``clearance``
        metres from every object with a footprint (or above it by that much)."""
        xy = np.atleast_2d(xy)
        z = np.broadcast_to(np.asarray(z, dtype=np.float64), (len(xy),))
        free = np.ones(len(xy), bool)
        for obj in self.objects:
            if not obj.has_footprint:
                continue
            near = obj.distance_to_footprint(xy) < clearance
            below_top = z < obj.z_base + obj.top + clearance
            free &= ~(near & below_top)
        return free

    def summary(self) -> dict:
        """JSON-ready description for ``scene.json``."""
        return {
            "room_shape": self.room.shape,
            "floor_polygon_m": np.round(self.room.polygon, 4).tolist(),
            "ceiling_height_m": round(self.room.height, 4),
            "objects": [
                {"name": o.name, "kind": o.kind, "x": round(o.x, 4), "y": round(o.y, 4),
                 "z_base": round(o.z_base, 4), "yaw_deg": round(math.degrees(o.yaw), 2)}
                for o in self.objects
            ],
        }


def fits(layout: Layout, candidate: SceneObject, gap: float = 0.05) -> bool:
    """Whether ``candidate``'s footprint lies inside the room and at least ``gap`` metres
    from every other footprint."""
    corners = candidate.footprint_corners()
    edge_points = np.concatenate(
        [corners + t * (np.roll(corners, -1, axis=0) - corners) for t in np.linspace(0, 1, 6)]
    )
    if not layout.room.contains(edge_points, margin=0.0).all():
        return False
    return all(
        not _rectangles_overlap(candidate, other, gap)
        for other in layout.objects
        if other.has_footprint
    )


def _rectangles_overlap(a: SceneObject, b: SceneObject, gap: float) -> bool:
    """Separating-axis test of two footprints, each inflated by ``gap / 2``."""
    ca, cb = a.footprint_corners(gap / 2), b.footprint_corners(gap / 2)
    for yaw in (a.yaw, b.yaw):
        for axis in (np.array([math.cos(yaw), math.sin(yaw)]),
                     np.array([-math.sin(yaw), math.cos(yaw)])):
            pa, pb = ca @ axis, cb @ axis
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


def displace_objects(layout: Layout, rng: np.random.Generator, count: int) -> tuple[Layout, list[str]]:
    """A copy of ``layout`` with up to ``count`` movable objects moved 0.3-1.0 m and turned.

    Returns the new layout and the names of the objects that moved.
    """
    moved = Layout(layout.room, layout.wall_materials, layout.floor_material,
                   layout.ceiling_material, list(layout.objects))
    names = []
    candidates = [i for i, o in enumerate(layout.objects) if o.movable]
    rng.shuffle(candidates)
    for index in candidates[:count]:
        original = moved.objects.pop(index)
        for _ in range(20):
            angle = rng.uniform(0, 2 * np.pi)
            distance = rng.uniform(0.3, 1.0)
            candidate = replace(original, x=original.x + distance * math.cos(angle),
                                y=original.y + distance * math.sin(angle),
                                yaw=original.yaw + rng.uniform(-0.8, 0.8))
            if fits(moved, candidate):
                moved.objects.insert(index, candidate)
                names.append(original.name)
                break
        else:
            moved.objects.insert(index, original)
    return moved, names
