"""Procedural rooms and their furniture, from a seed, and the triangle mesh built from them.

World frame: metres, **z up**, floor at ``z = 0``; the room's floor plan is a polygon in
the ``(x, y)`` plane (counter-clockwise). Objects are lists of parts (boxes, cylinders,
flat quads) in the object's own frame (origin at the centre of its footprint on its base,
x along its width, y towards its front, z up), placed by ``(x, y, z_base, yaw)``. Moving an
object (the ``query_moved`` split) changes only its placement.

The mesh (:class:`Mesh`) is one float32 vertex array with, per vertex, the attributes of
:data:`VERTEX_FORMAT`, in world coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from aceg.data.synthetic.textures import TextureSet

#: Floats per vertex: position (3, metres), normal (3), texture coordinates (2, repeats),
#: texture layer (1), tint (3, linear RGB gain), specular strength and shininess (2),
#: surface code (1: ``2 * surface_id + plain``).
VERTEX_FORMAT = "3f 3f 2f 1f 3f 2f 1f"
VERTEX_ATTRIBUTES = ("in_position", "in_normal", "in_uv", "in_layer", "in_tint", "in_specular",
                     "in_surface")
FLOATS_PER_VERTEX = 15

#: Segments around a cylinder.
CYLINDER_SEGMENTS = 20


@dataclass(frozen=True)
class Material:
    """How a surface looks.

    Attributes:
        layer: texture layer index in the scene's :class:`TextureSet`.
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
    a = polygon[None, :, :]
    b = np.roll(polygon, -1, axis=0)[None, :, :]
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


# --------------------------------------------------------------------------------------
# Mesh


@dataclass
class Mesh:
    """Triangle soup: ``vertices`` (3 * T, FLOATS_PER_VERTEX) float32, world coordinates.

    ``surface_names[i]`` names surface id ``i`` (walls, floor, ceiling, objects).
    """

    vertices: np.ndarray
    surface_names: list[str]


class MeshBuilder:
    """Accumulates triangles (world coordinates) into a :class:`Mesh`; surfaces get ids
    in the order they are declared with :meth:`surface`."""

    def __init__(self):
        self.chunks: list[np.ndarray] = []
        self.surface_names: list[str] = []

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

    def quad(self, corners: np.ndarray, uv_corners: np.ndarray, material: Material,
             surface: int) -> None:
        """Planar quad with corners (4, 3) in order around it, uvs (4, 2)."""
        normal = np.cross(corners[1] - corners[0], corners[3] - corners[0])
        normal /= np.linalg.norm(normal)
        index = [0, 1, 2, 0, 2, 3]
        self.triangles(corners[index], np.tile(normal, (6, 1)), uv_corners[index], material, surface)

    def build(self) -> Mesh:
        return Mesh(np.concatenate(self.chunks), self.surface_names)


def _uv_for_face(width: float, height: float, material: Material, offset: np.ndarray) -> np.ndarray:
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
            uv = _uv_for_face(width, height, material, offset)
            builder.quad(_place(corners, obj), uv, material, surface)
    elif part.kind == "quad":
        w, d, h = part.size
        cx, cy, cz = part.centre
        if h > 0:  # vertical, facing +y; seen from +y, -x is to the right
            corners = np.array([[cx + w / 2, cy, cz - h / 2], [cx - w / 2, cy, cz - h / 2],
                                [cx - w / 2, cy, cz + h / 2], [cx + w / 2, cy, cz + h / 2]])
            uv = _uv_for_face(w, h, material, offset)
        else:  # horizontal, facing +z
            corners = np.array([[cx - w / 2, cy - d / 2, cz], [cx + w / 2, cy - d / 2, cz],
                                [cx + w / 2, cy + d / 2, cz], [cx - w / 2, cy + d / 2, cz]])
            uv = _uv_for_face(w, d, material, offset)
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
        uv = _uv_for_face(length, h, material, np.array([distance_along, 0.0]))
        # from b to a: the normal then points into the room (left of a counter-clockwise
        # edge) and the texture's u axis runs to the right of a viewer facing the wall
        builder.quad(corners[[1, 0, 3, 2]], uv, material, surface)
        distance_along += length
    polygon = room.polygon
    fan_start = _fan_vertex(polygon)
    order = np.roll(np.arange(len(polygon)), -fan_start)
    for name, z, material, up in (("floor", 0.0, layout.floor_material, True),
                                  ("ceiling", h, layout.ceiling_material, False)):
        surface = builder.surface(name)
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
    for obj in layout.objects:
        surface = builder.surface(obj.name)
        for part in obj.parts:
            _add_part(builder, part, obj, surface)
    return builder.build()


def _fan_vertex(polygon: np.ndarray) -> int:
    """A vertex from which the whole (star-shaped) polygon is visible: the reflex vertex of
    an L-shaped plan, any vertex of a convex one."""
    k = len(polygon)
    for i in range(k):
        a, b, c = polygon[i - 1], polygon[i], polygon[(i + 1) % k]
        if (b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0]) < 0:
            return i
    return 0


# --------------------------------------------------------------------------------------
# Random layouts


def _material(rng: np.random.Generator, textures: TextureSet, category: str,
              repeats=(0.4, 1.5), specular=(0.0, 0.15)) -> Material:
    layer = textures.new(category)
    tint = tuple(float(v) for v in rng.uniform(0.85, 1.1, 3))
    return Material(layer, textures.is_plain(layer), tint, float(rng.uniform(*specular)),
                    float(rng.choice([8.0, 16.0, 32.0, 64.0])), float(rng.uniform(*repeats)))


def _random_room(rng: np.random.Generator) -> Room:
    width = rng.uniform(3.5, 8.0)
    depth = rng.uniform(3.0, 7.0)
    height = rng.uniform(2.4, 3.3)
    shape = "l_shape" if rng.random() < 0.35 and min(width, depth) > 4.0 else "rectangle"
    if shape == "rectangle":
        polygon = np.array([[0, 0], [width, 0], [width, depth], [0, depth]], np.float64)
    else:
        cut_w = rng.uniform(0.3, 0.5) * width
        cut_d = rng.uniform(0.3, 0.5) * depth
        polygon = np.array([[0, 0], [width, 0], [width, depth - cut_d],
                            [width - cut_w, depth - cut_d], [width - cut_w, depth], [0, depth]],
                           np.float64)
    return Room(polygon - polygon.mean(axis=0), float(height), shape)


def _fits(layout: Layout, candidate: SceneObject, gap: float = 0.05) -> bool:
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


def _cabinet(rng, textures, width, depth, height):
    body = _material(rng, textures, "furniture")
    parts = [Part("box", (0, 0, height / 2), (width, depth, height), body)]
    if rng.random() < 0.6:  # doors / drawer fronts
        front = _material(rng, textures, "furniture")
        n = int(rng.integers(1, 4))
        for i in range(n):
            w = width / n
            parts.append(Part("quad", (-width / 2 + w * (i + 0.5), depth / 2 + 0.004, height / 2),
                              (w * 0.9, 0, height * 0.85), front))
    return parts


def _table(rng, textures, width, depth, height):
    top = _material(rng, textures, "furniture")
    legs = _material(rng, textures, "furniture")
    t = rng.uniform(0.03, 0.06)
    leg = rng.uniform(0.04, 0.07)
    parts = [Part("box", (0, 0, height - t / 2), (width, depth, t), top)]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(Part("box", (sx * (width / 2 - leg), sy * (depth / 2 - leg),
                                      (height - t) / 2), (leg, leg, height - t), legs))
    return parts


def _shelf(rng, textures, width, depth, height):
    frame = _material(rng, textures, "furniture")
    board = 0.025
    parts = [
        Part("box", (-width / 2 + board / 2, 0, height / 2), (board, depth, height), frame),
        Part("box", (width / 2 - board / 2, 0, height / 2), (board, depth, height), frame),
        Part("box", (0, -depth / 2 + 0.01, height / 2), (width - 2 * board, 0.02, height), frame),
    ]
    item_palette = [_material(rng, textures, "clutter", repeats=(1.0, 4.0)) for _ in range(4)]
    levels = int(rng.integers(3, 6))
    for i in range(levels + 1):
        z = i * (height - board) / levels + board / 2
        parts.append(Part("box", (0, 0, z), (width - 2 * board, depth, board), frame))
        if i == levels:
            break
        x = -width / 2 + board + 0.02
        gap_height = (height - board) / levels - board
        while True:  # books and boxes on the board
            w = rng.uniform(0.03, 0.25)
            if x + w > width / 2 - board - 0.02:
                break
            if rng.random() < 0.75:
                h = rng.uniform(0.4, 0.95) * gap_height
                d = rng.uniform(0.5, 0.95) * depth
                item = replace(item_palette[int(rng.integers(len(item_palette)))],
                               tint=tuple(float(v) for v in rng.uniform(0.6, 1.15, 3)))
                parts.append(Part("box", (x + w / 2, -depth / 2 + 0.02 + d / 2, z + board / 2 + h / 2),
                                  (w, d, h), item))
            x += w + rng.uniform(0.0, 0.05)
    return parts


def _cylinder_object(rng, textures, radius, height):
    return [Part("cylinder", (0, 0, 0), (radius, radius, height),
                 _material(rng, textures, "furniture", repeats=(0.8, 2.5)))]


def _clutter_on_top(rng, textures, width, depth, height, count):
    parts = []
    for _ in range(count):
        material = _material(rng, textures, "clutter", repeats=(1.0, 5.0), specular=(0.0, 0.4))
        if rng.random() < 0.5:
            size = (rng.uniform(0.08, 0.4), rng.uniform(0.08, 0.3), rng.uniform(0.04, 0.35))
            x = rng.uniform(-width / 2 + size[0] / 2, width / 2 - size[0] / 2)
            y = rng.uniform(-depth / 2 + size[1] / 2, depth / 2 - size[1] / 2)
            parts.append(Part("box", (x, y, height + size[2] / 2), size, material))
        else:
            r = rng.uniform(0.03, 0.12)
            h = rng.uniform(0.05, 0.35)
            x = rng.uniform(-width / 2 + r, width / 2 - r)
            y = rng.uniform(-depth / 2 + r, depth / 2 - r)
            parts.append(Part("cylinder", (x, y, height), (r, r, h), material))
    return parts


def random_layout(rng: np.random.Generator, textures: TextureSet) -> Layout:
    """A furnished room: walls, floor and ceiling materials, wall furniture (cabinets,
    shelves, tables, sofas), free-standing tables, stools and crates, clutter on tops and on
    the floor, a rug, a door and posters."""
    room = _random_room(rng)
    shared_wall = _material(rng, textures, "wall", repeats=(0.4, 1.5))
    # plain walls are allowed, but then at least half of the walls get a textured accent
    accent_probability = 0.5 if shared_wall.plain else 0.25
    wall_materials = [
        _material(rng, textures, "accent_wall", repeats=(0.4, 1.5))
        if rng.random() < accent_probability else shared_wall
        for _ in room.walls()
    ]
    if shared_wall.plain:
        walls_count = len(wall_materials)
        while sum(m.plain for m in wall_materials) > walls_count // 2:
            index = int(rng.choice([i for i, m in enumerate(wall_materials) if m.plain]))
            wall_materials[index] = _material(rng, textures, "accent_wall", repeats=(0.4, 1.5))
    layout = Layout(
        room,
        wall_materials,
        _material(rng, textures, "floor", repeats=(0.4, 1.5), specular=(0.0, 0.3)),
        _material(rng, textures, "ceiling", repeats=(0.3, 1.0), specular=(0.0, 0.02)),
    )
    counter = {"n": 0}

    def add(obj_kind, parts, x, y, yaw, half, top, movable, z_base=0.0):
        counter["n"] += 1
        obj = SceneObject(f"{obj_kind}_{counter['n']}", obj_kind, tuple(parts), float(x),
                          float(y), float(z_base), float(yaw), (float(half[0]), float(half[1])),
                          float(top), movable)
        if obj.has_footprint and not _fits(layout, obj):
            counter["n"] -= 1
            return None
        layout.objects.append(obj)
        return obj

    walls = room.walls()
    wall_spans: list[list[tuple[float, float, float]]] = [[] for _ in walls]  # (t0, t1, top)
    # furniture against walls
    for wall_index, (a, b) in enumerate(walls):
        length = float(np.linalg.norm(b - a))
        direction = (b - a) / length
        inward = np.array([-direction[1], direction[0]])
        yaw = math.atan2(inward[1], inward[0]) - math.pi / 2  # object +y -> inward
        for _ in range(int(rng.integers(1, 4))):
            kind = str(rng.choice(["cabinet", "shelf", "table", "sofa", "cabinet", "shelf"]))
            if kind == "shelf":
                w, d, h = rng.uniform(0.6, 1.6), rng.uniform(0.25, 0.4), rng.uniform(1.0, 2.1)
                parts = _shelf(rng, textures, w, d, h)
            elif kind == "table":
                w, d, h = rng.uniform(0.8, 1.8), rng.uniform(0.5, 0.8), rng.uniform(0.7, 0.78)
                parts = _table(rng, textures, w, d, h)
                parts += _clutter_on_top(rng, textures, w, d, h, int(rng.integers(0, 5)))
            elif kind == "sofa":
                w, d, h = rng.uniform(1.4, 2.2), rng.uniform(0.7, 0.95), rng.uniform(0.7, 0.9)
                fabric = _material(rng, textures, "furniture", repeats=(1.0, 3.0))
                parts = [Part("box", (0, 0, 0.22), (w, d, 0.44), fabric),
                         Part("box", (0, -d / 2 + 0.1, h / 2), (w, 0.2, h), fabric),
                         Part("box", (-w / 2 + 0.1, 0, 0.3), (0.2, d, 0.6), fabric),
                         Part("box", (w / 2 - 0.1, 0, 0.3), (0.2, d, 0.6), fabric)]
            else:
                w, d, h = rng.uniform(0.5, 1.8), rng.uniform(0.35, 0.7), rng.uniform(0.5, 1.3)
                parts = _cabinet(rng, textures, w, d, h)
                parts += _clutter_on_top(rng, textures, w, d, h, int(rng.integers(0, 4)))
            if length < w + 0.2:
                continue
            t = rng.uniform(w / 2 + 0.05, length - w / 2 - 0.05)
            centre = a + direction * t + inward * (d / 2 + 0.02)
            if add(kind, parts, centre[0], centre[1], yaw, (w / 2, d / 2), h, False) is not None:
                wall_spans[wall_index].append((t - w / 2, t + w / 2, h))
    # a door on one wall
    door_wall = int(rng.integers(len(walls)))
    a, b = walls[door_wall]
    length = float(np.linalg.norm(b - a))
    if length > 1.4:
        direction = (b - a) / length
        inward = np.array([-direction[1], direction[0]])
        t = rng.uniform(0.6, length - 0.6)
        if not any(t0 - 0.5 < t < t1 + 0.5 for t0, t1, _ in wall_spans[door_wall]):
            centre = a + direction * t + inward * 0.02
            door = _material(rng, textures, "furniture")
            add("door", [Part("box", (0, 0, 1.03), (0.9, 0.04, 2.06), door)], centre[0], centre[1],
                math.atan2(inward[1], inward[0]) - math.pi / 2, (0, 0), 2.06, False)
            wall_spans[door_wall].append((t - 0.5, t + 0.5, room.height))
    # posters and pictures
    for _ in range(int(rng.integers(3, 10))):
        wall_index = int(rng.integers(len(walls)))
        a, b = walls[wall_index]
        length = float(np.linalg.norm(b - a))
        w = rng.uniform(0.3, 1.3)
        h = w * rng.uniform(0.6, 1.5)
        if length < w + 0.3 or h > room.height - 0.6:
            continue
        t = rng.uniform(w / 2 + 0.1, length - w / 2 - 0.1)
        bottom = rng.uniform(0.8, max(0.81, min(2.0, room.height - h - 0.15)))
        blocked = any(t0 - w / 2 < t < t1 + w / 2 and bottom < top + 0.1
                      for t0, t1, top in wall_spans[wall_index])
        if blocked:
            continue
        direction = (b - a) / length
        inward = np.array([-direction[1], direction[0]])
        centre = a + direction * t + inward * 0.006
        layer = textures.poster(w / h)
        material = Material(layer, textures.is_plain(layer), (1.0, 1.0, 1.0),
                            float(rng.uniform(0.0, 0.3)), 32.0, 0.0)
        add("poster", [Part("quad", (0, 0, bottom + h / 2), (w, 0, h), material)],
            centre[0], centre[1], math.atan2(inward[1], inward[0]) - math.pi / 2, (0, 0),
            bottom + h, False)
        wall_spans[wall_index].append((t - w / 2, t + w / 2, room.height))
    lo, hi = room.bounds
    # a rug
    if rng.random() < 0.6:
        w, d = rng.uniform(1.0, 2.5), rng.uniform(0.8, 2.0)
        x, y = rng.uniform(lo, hi)
        rug = _material(rng, textures, "rug", repeats=(0.5, 1.5))
        if room.contains(np.array([[x - w / 2, y - d / 2], [x + w / 2, y + d / 2]]), 0.1).all():
            add("rug", [Part("quad", (0, 0, 0.004), (w, d, 0), rug)], x, y, 0.0, (0, 0), 0.0, False)
    # skirting boards along every wall
    skirting = _material(rng, textures, "furniture", repeats=(1.0, 3.0))
    skirting_height = rng.uniform(0.05, 0.12)
    for a, b in walls:
        length = float(np.linalg.norm(b - a))
        direction = (b - a) / length
        inward = np.array([-direction[1], direction[0]])
        centre = (a + b) / 2 + inward * 0.008
        add("skirting", [Part("box", (0, 0, skirting_height / 2), (length - 0.001, 0.015,
                                                                     skirting_height), skirting)],
            centre[0], centre[1], math.atan2(inward[1], inward[0]) - math.pi / 2, (0, 0),
            skirting_height, False)
    # free-standing furniture and floor clutter
    for _ in range(int(rng.integers(3, 9))):
        kind = str(rng.choice(["table", "stool", "crate", "column", "clutter", "clutter"]))
        x, y = rng.uniform(lo, hi)
        yaw = rng.uniform(0, np.pi)
        if kind == "table":
            w, d, h = rng.uniform(0.7, 1.6), rng.uniform(0.6, 1.0), rng.uniform(0.45, 0.78)
            parts = _table(rng, textures, w, d, h)
            parts += _clutter_on_top(rng, textures, w, d, h, int(rng.integers(0, 5)))
            add(kind, parts, x, y, yaw, (w / 2, d / 2), h, True)
        elif kind in ("stool", "column"):
            r = rng.uniform(0.15, 0.3) if kind == "stool" else rng.uniform(0.15, 0.35)
            h = rng.uniform(0.4, 0.8) if kind == "stool" else room.height
            add(kind, _cylinder_object(rng, textures, r, h), x, y, 0.0, (r, r), h, kind == "stool")
        else:
            if kind == "crate":
                w, d, h = rng.uniform(0.3, 0.8), rng.uniform(0.3, 0.8), rng.uniform(0.3, 0.9)
            else:
                w, d, h = rng.uniform(0.1, 0.45), rng.uniform(0.1, 0.45), rng.uniform(0.08, 0.45)
            material = _material(rng, textures, "clutter" if kind == "clutter" else "furniture",
                                 repeats=(0.8, 3.0))
            add(kind, [Part("box", (0, 0, h / 2), (w, d, h), material)], x, y, yaw,
                (w / 2, d / 2), h, True)
    return layout


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
            if _fits(moved, candidate):
                moved.objects.insert(index, candidate)
                names.append(original.name)
                break
        else:
            moved.objects.insert(index, original)
    return moved, names
