"""The triangle mesh of a :class:`~aceg.data.synthetic.layout.Layout`, world coordinates.

One float32 vertex array with, per vertex, the attributes of :data:`VERTEX_FORMAT`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from aceg.data.synthetic.layout import Layout, Material, Part, SceneObject

#: Floats per vertex: position (3, metres), normal (3), texture coordinates (2, repeats),
#: texture layer (1), tint (3, linear RGB gain), specular strength and shininess (2),
#: surface code (1: ``2 * surface_id + plain``).
VERTEX_FORMAT = "3f 3f 2f 1f 3f 2f 1f"
VERTEX_ATTRIBUTES = ("in_position", "in_normal", "in_uv", "in_layer", "in_tint", "in_specular",
                     "in_surface")
FLOATS_PER_VERTEX = 15

#: Segments around a cylinder.
CYLINDER_SEGMENTS = 20


@dataclass
class Mesh:
    """Triangle soup: ``vertices`` (3 * T, FLOATS_PER_VERTEX) float32, world coordinates.

    ``surface_names[i]`` names surface id ``i`` (walls, floor, ceiling, objects).
    ``zones``: for a mesh of several lighting zones (the rooms of a place), the
    ``(first_vertex, vertex_count)`` of each zone, consecutive; None for one zone.
    """

    vertices: np.ndarray
    surface_names: list[str]
    zones: list[tuple[int, int]] | None = None


class MeshBuilder:
    """Accumulates triangles (world coordinates) into a :class:`Mesh`; surfaces get ids
    in the order they are declared with :meth:`surface`."""

    def __init__(self):
        self.chunks: list[np.ndarray] = []
        self.surface_names: list[str] = []
        self.zone_starts: list[int] = []
        self.vertex_count = 0

    def start_zone(self) -> None:
        """Triangles added from now on belong to a new lighting zone (see :class:`Mesh`)."""
        self.zone_starts.append(self.vertex_count)

    def surface(self, name: str) -> int:
        self.surface_names.append(name)
        return len(self.surface_names) - 1

    def triangles(self, positions, normals, uvs, material: Material, surface: int) -> None:
        """Add triangles: positions/normals (N, 3), uvs (N, 2), N a multiple of 3."""
        n = len(positions)
        data = np.empty((n, FLOATS_PER_VERTEX), np.float32)
        data[:, 0:3] = positions
        data[:, 3:6] = normals
        data[:, 6:8] = uvs
        data[:, 8] = material.layer
        data[:, 9:12] = material.tint
        data[:, 12] = material.specular
        data[:, 13] = material.shininess
        data[:, 14] = 2 * surface + int(material.plain)
        self.chunks.append(data)
        self.vertex_count += n

    def quad(self, corners: np.ndarray, uv_corners: np.ndarray, material: Material,
             surface: int) -> None:
        """Planar quad with corners (4, 3) in order around it, uvs (4, 2)."""
        normal = np.cross(corners[1] - corners[0], corners[3] - corners[0])
        normal /= np.linalg.norm(normal)
        index = [0, 1, 2, 0, 2, 3]
        self.triangles(corners[index], np.tile(normal, (6, 1)), uv_corners[index], material, surface)

    def build(self) -> Mesh:
        zones = None
        if self.zone_starts:
            ends = [*self.zone_starts[1:], self.vertex_count]
            zones = [(start, end - start) for start, end in zip(self.zone_starts, ends,
                                                                strict=True)]
        return Mesh(np.concatenate(self.chunks), self.surface_names, zones)


def uv_for_face(width: float, height: float, material: Material, offset: np.ndarray) -> np.ndarray:
    """Texture coordinates (4, 2) of a ``width`` x ``height`` face (metres) for its corners
    bottom-left, bottom-right, top-right, top-left seen from the front (u grows to the
    right, v downwards), shifted by ``offset`` (2,); ``repeats_per_metre`` 0 stretches the
    texture once over the face."""
    if material.repeats_per_metre <= 0:
        return np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    r = material.repeats_per_metre
    return np.array([[0, height], [width, height], [width, 0], [0, 0]]) * r + offset


def _box_faces(centre: np.ndarray, size: np.ndarray) -> list[tuple[np.ndarray, float, float]]:
    """Six faces (corners (4, 3) counter-clockwise seen from outside, width, height)."""
    hx, hy, hz = np.asarray(size) / 2
    c = np.asarray(centre)
    p = lambda sx, sy, sz: c + [sx * hx, sy * hy, sz * hz]  # noqa: E731
    return [
        (np.array([p(-1, -1, -1), p(1, -1, -1), p(1, -1, 1), p(-1, -1, 1)]), 2 * hx, 2 * hz),
        (np.array([p(1, 1, -1), p(-1, 1, -1), p(-1, 1, 1), p(1, 1, 1)]), 2 * hx, 2 * hz),
        (np.array([p(1, -1, -1), p(1, 1, -1), p(1, 1, 1), p(1, -1, 1)]), 2 * hy, 2 * hz),
        (np.array([p(-1, 1, -1), p(-1, -1, -1), p(-1, -1, 1), p(-1, 1, 1)]), 2 * hy, 2 * hz),
        (np.array([p(-1, -1, 1), p(1, -1, 1), p(1, 1, 1), p(-1, 1, 1)]), 2 * hx, 2 * hy),
        (np.array([p(-1, 1, -1), p(1, 1, -1), p(1, -1, -1), p(-1, -1, -1)]), 2 * hx, 2 * hy),
    ]


def _place(points: np.ndarray, obj: SceneObject) -> np.ndarray:
    c, s = math.cos(obj.yaw), math.sin(obj.yaw)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return points @ rotation.T + [obj.x, obj.y, obj.z_base]


def _rotate(vectors: np.ndarray, obj: SceneObject) -> np.ndarray:
    c, s = math.cos(obj.yaw), math.sin(obj.yaw)
    return vectors @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]).T


def _add_part(builder: MeshBuilder, part: Part, obj: SceneObject, surface: int) -> None:
    offset = np.array([(obj.x * 0.37 + part.centre[0]) % 1.0, (obj.y * 0.53) % 1.0])
    material = part.material
    if part.kind == "box":
        for corners, width, height in _box_faces(np.array(part.centre), np.array(part.size)):
            uv = uv_for_face(width, height, material, offset)
            builder.quad(_place(corners, obj), uv, material, surface)
    elif part.kind == "quad":
        w, d, h = part.size
        cx, cy, cz = part.centre
        if h > 0:  # vertical, facing +y; seen from +y, -x is to the right
            corners = np.array([[cx + w / 2, cy, cz - h / 2], [cx - w / 2, cy, cz - h / 2],
                                [cx - w / 2, cy, cz + h / 2], [cx + w / 2, cy, cz + h / 2]])
            uv = uv_for_face(w, h, material, offset)
        else:  # horizontal, facing +z
            corners = np.array([[cx - w / 2, cy - d / 2, cz], [cx + w / 2, cy - d / 2, cz],
                                [cx + w / 2, cy + d / 2, cz], [cx - w / 2, cy + d / 2, cz]])
            uv = uv_for_face(w, d, material, offset)
        builder.quad(_place(corners, obj), uv, material, surface)
    elif part.kind == "cylinder":
        radius, _, height = part.size
        base = np.array(part.centre)
        angles = np.linspace(0.0, 2 * np.pi, CYLINDER_SEGMENTS + 1)
        ring = np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], axis=1)
        r = material.repeats_per_metre if material.repeats_per_metre > 0 else 1.0 / height
        around = angles * radius * r
        positions, normals, uvs = [], [], []
        for i in range(CYLINDER_SEGMENTS):
            a0, a1 = ring[i], ring[i + 1]
            b0, b1 = base + a0 * radius, base + a1 * radius
            t0, t1 = b0 + [0, 0, height], b1 + [0, 0, height]
            positions += [b0, b1, t1, b0, t1, t0]
            normals += [a0, a1, a1, a0, a1, a0]
            uvs += [[around[i], 0], [around[i + 1], 0], [around[i + 1], height * r],
                    [around[i], 0], [around[i + 1], height * r], [around[i], height * r]]
            top_c = base + [0, 0, height]
            positions += [top_c, t0, t1, base, b1, b0]
            normals += [[0, 0, 1]] * 3 + [[0, 0, -1]] * 3
            cap = lambda p: (p[:2] - base[:2]) * r + 0.5  # noqa: E731
            uvs += [cap(top_c), cap(t0), cap(t1), cap(base), cap(b1), cap(b0)]
        builder.triangles(_place(np.array(positions), obj), _rotate(np.array(normals), obj),
                          np.array(uvs), material, surface)
    else:  # pragma: no cover - internal
        raise ValueError(f"unknown part kind {part.kind}")


def build_mesh(layout: Layout) -> Mesh:
    """Triangles of the room (walls, floor, ceiling) and every object, world coordinates."""
    builder = MeshBuilder()
    room = layout.room
    h = room.height
    distance_along = 0.0
    for index, ((ax, ay), (bx, by)) in enumerate(room.walls()):
        length = math.hypot(bx - ax, by - ay)
        surface = builder.surface(f"wall_{index}")
        corners = np.array([[ax, ay, 0.0], [bx, by, 0.0], [bx, by, h], [ax, ay, h]])
        material = layout.wall_materials[index]
        uv = uv_for_face(length, h, material, np.array([distance_along, 0.0]))
        # from b to a: the normal then points into the room (left of a counter-clockwise
        # edge) and the texture's u axis runs to the right of a viewer facing the wall
        builder.quad(corners[[1, 0, 3, 2]], uv, material, surface)
        distance_along += length
    add_floor_and_ceiling(builder, room.polygon, h, layout.floor_material,
                          layout.ceiling_material)
    for obj in layout.objects:
        add_object(builder, obj)
    return builder.build()


def add_floor_and_ceiling(builder: MeshBuilder, polygon: np.ndarray, height: float,
                          floor: Material, ceiling: Material, name_prefix: str = "") -> None:
    """Floor (z = 0, facing up) and ceiling (z = ``height``, facing down) of a star-shaped
    floor plan ``polygon`` (K, 2), counter-clockwise, world metres."""
    fan_start = _fan_vertex(polygon)
    order = np.roll(np.arange(len(polygon)), -fan_start)
    for name, z, material, up in (("floor", 0.0, floor, True), ("ceiling", height, ceiling, False)):
        surface = builder.surface(name_prefix + name)
        positions, uvs = [], []
        for i in range(1, len(order) - 1):
            tri = [polygon[order[0]], polygon[order[i]], polygon[order[i + 1]]]
            if not up:
                tri = tri[::-1]
            positions += [[p[0], p[1], z] for p in tri]
            uvs += [np.asarray(p) * material.repeats_per_metre for p in tri]
        normal = [0.0, 0.0, 1.0 if up else -1.0]
        builder.triangles(np.array(positions), np.tile(normal, (len(positions), 1)),
                          np.array(uvs), material, surface)


def add_object(builder: MeshBuilder, obj: SceneObject) -> None:
    """Every part of ``obj``, one surface named after it."""
    surface = builder.surface(obj.name)
    for part in obj.parts:
        _add_part(builder, part, obj, surface)


def _fan_vertex(polygon: np.ndarray) -> int:
    """A vertex from which the whole (star-shaped) polygon is visible: the reflex vertex of
    an L-shaped plan, any vertex of a convex one."""
    k = len(polygon)
    for i in range(k):
        a, b, c = polygon[i - 1], polygon[i], polygon[(i + 1) % k]
        if (b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0]) < 0:
            return i
    return 0
