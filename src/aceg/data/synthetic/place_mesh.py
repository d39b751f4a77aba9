"""The triangle mesh of a :class:`~aceg.data.synthetic.place.Place`, world coordinates.

One lighting zone per space, in the order of ``place.spaces`` (:attr:`Mesh.zones`): its
walls (full height where solid, above :data:`~aceg.data.synthetic.place.DOOR_HEIGHT` over
its door openings), floor, ceiling and objects. The doors' passages through the walls
(two sides, the underside of the lintel, the floor) belong to the zone of the first space
each door joins.
"""

from __future__ import annotations

import numpy as np

from aceg.data.synthetic.layout import Material
from aceg.data.synthetic.mesh import Mesh, MeshBuilder, add_floor_and_ceiling, add_object
from aceg.data.synthetic.place import DOOR_HEIGHT, Door, Place, Space


def build_place_mesh(place: Place) -> Mesh:
    """Triangles of every space and door of ``place``, one zone per space."""
    builder = MeshBuilder()
    doors_of_zone: dict[int, list[Door]] = {}
    for door in place.doors:
        doors_of_zone.setdefault(door.spaces[0], []).append(door)
    for index, space in enumerate(place.spaces):
        builder.start_zone()
        _add_walls(builder, space, place.height)
        add_floor_and_ceiling(builder, space.layout.room.polygon, place.height,
                              space.layout.floor_material, space.layout.ceiling_material,
                              name_prefix=f"{space.name}/")
        for obj in space.layout.objects:
            add_object(builder, obj)
        for door in doors_of_zone.get(index, []):
            other = place.spaces[door.spaces[1]]
            _add_passage(builder, door, other.layout.wall_materials[0],
                         space.layout.floor_material, f"{space.name}-{other.name}")
    return builder.build()


def _wall_piece(builder: MeshBuilder, a: np.ndarray, b: np.ndarray, t0: float, t1: float,
                z0: float, z1: float, height: float, material: Material, surface: int) -> None:
    """The stretch ``t0 .. t1`` (metres from ``a``), heights ``z0 .. z1``, of the wall from
    ``a`` to ``b`` (2,), facing left of a -> b; texture coordinates continue across the
    pieces of one wall as on a whole wall of :func:`~aceg.data.synthetic.mesh.build_mesh`."""
    length = float(np.linalg.norm(b - a))
    direction = (b - a) / length
    start, end = a + direction * t0, a + direction * t1
    corners = np.array([[*end, z0], [*start, z0], [*start, z1], [*end, z1]])
    r = material.repeats_per_metre
    u_end, u_start = (length - t1) * r, (length - t0) * r
    uv = np.array([[u_end, (height - z0) * r], [u_start, (height - z0) * r],
                   [u_start, (height - z1) * r], [u_end, (height - z1) * r]])
    builder.quad(corners, uv, material, surface)


def _add_walls(builder: MeshBuilder, space: Space, height: float) -> None:
    for index, (a, b) in enumerate(space.layout.room.walls()):
        surface = builder.surface(f"{space.name}/wall_{index}")
        material = space.layout.wall_materials[index]
        length = float(np.linalg.norm(b - a))
        t = 0.0
        for opening in sorted((o for o in space.openings if o.wall == index),
                              key=lambda o: o.t0):
            if opening.t0 > t:
                _wall_piece(builder, a, b, t, opening.t0, 0.0, height, height, material, surface)
            _wall_piece(builder, a, b, opening.t0, opening.t1, DOOR_HEIGHT, height, height,
                        material, surface)
            t = max(t, opening.t1)
        if t < length:
            _wall_piece(builder, a, b, t, length, 0.0, height, height, material, surface)


def _add_passage(builder: MeshBuilder, door: Door, wall: Material, floor: Material,
                 name: str) -> None:
    """Sides, lintel underside and floor of a door's passage through the wall."""
    surface = builder.surface(f"door {name}")
    jamb_starts, jamb_ends = door.jambs()
    for start, end in zip(jamb_starts, jamb_ends, strict=True):
        corners = np.array([[*start, 0.0], [*end, 0.0], [*end, DOOR_HEIGHT],
                            [*start, DOOR_HEIGHT]])
        depth = float(np.linalg.norm(end - start))
        r = wall.repeats_per_metre
        uv = np.array([[0.0, DOOR_HEIGHT], [depth, DOOR_HEIGHT], [depth, 0.0], [0.0, 0.0]]) * r
        builder.quad(corners, uv, wall, surface)
    (x0, y0), (x1, y1) = door.lo, door.hi
    for z, material in ((DOOR_HEIGHT, wall), (0.0, floor)):
        corners = np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]])
        builder.quad(corners, corners[:, :2] * material.repeats_per_metre, material, surface)
