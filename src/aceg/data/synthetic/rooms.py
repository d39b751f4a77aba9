"""A random furnished room (:func:`random_layout`), world frame of
:mod:`~aceg.data.synthetic.layout` (metres, z up, room centred on the origin).

Every step draws from one ``rng`` in a fixed order: the same seed gives the same room.
The furnishing steps (``add_*``) also furnish the rooms of a multi-room place
(:mod:`~aceg.data.synthetic.place`), which passes its own ``piece`` makers to reuse the
same pieces of furniture in several rooms.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from aceg.data.synthetic import furniture
from aceg.data.synthetic.furniture import random_material
from aceg.data.synthetic.layout import Layout, Material, Part, Room, SceneObject, fits
from aceg.data.synthetic.textures import TextureSet

#: A piece of furniture to stand against a wall: kind, parts, width, depth, height (metres).
WallPiece = tuple[str, list[Part], float, float, float]

#: A free-standing piece: parts, footprint half-sizes (hx, hy), height, movable.
FreePiece = tuple[list[Part], tuple[float, float], float, bool]

#: Per wall, the stretches taken by furniture, doors and posters: (t0, t1, top), with t
#: in metres along the wall from its start and top the height they reach.
WallSpans = list[list[tuple[float, float, float]]]


def random_layout(rng: np.random.Generator, textures: TextureSet) -> Layout:
    """A furnished room: walls, floor and ceiling materials, wall furniture (cabinets,
    shelves, tables, sofas), a door, posters, a rug, skirting boards, and free-standing
    tables, stools, columns, crates and clutter."""
    room = _random_room(rng)
    layout = Layout(
        room,
        _wall_materials(rng, textures, room),
        random_material(rng, textures, "floor", repeats=(0.4, 1.5), specular=(0.0, 0.3)),
        random_material(rng, textures, "ceiling", repeats=(0.3, 1.0), specular=(0.0, 0.02)),
    )
    wall_spans: WallSpans = [[] for _ in room.walls()]
    add_wall_furniture(rng, textures, layout, wall_spans)
    _add_door(rng, textures, layout, wall_spans)
    add_posters(rng, textures, layout, wall_spans)
    add_rug(rng, textures, layout)
    add_skirting(rng, textures, layout)
    add_free_standing(rng, textures, layout)
    return layout


def _random_room(rng: np.random.Generator) -> Room:
    """A rectangle or an L (a corner cut off), 3-8 m wide, 2.4-3.3 m high."""
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


def _wall_materials(rng: np.random.Generator, textures: TextureSet, room: Room) -> list[Material]:
    """One shared wall material, some walls with an accent; plain walls are allowed, but
    then at least half of the walls get a textured accent."""
    shared_wall = random_material(rng, textures, "wall", repeats=(0.4, 1.5))
    accent_probability = 0.5 if shared_wall.plain else 0.25
    wall_materials = [
        random_material(rng, textures, "accent_wall", repeats=(0.4, 1.5))
        if rng.random() < accent_probability else shared_wall
        for _ in room.walls()
    ]
    if shared_wall.plain:
        walls_count = len(wall_materials)
        while sum(m.plain for m in wall_materials) > walls_count // 2:
            index = int(rng.choice([i for i, m in enumerate(wall_materials) if m.plain]))
            wall_materials[index] = random_material(rng, textures, "accent_wall",
                                                    repeats=(0.4, 1.5))
    return wall_materials


def wall_frame(a: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, float]:
    """Length, unit direction a -> b, unit normal into the room, and the yaw that turns an
    object's +y (its front) into the room."""
    length = float(np.linalg.norm(b - a))
    direction = (b - a) / length
    inward = np.array([-direction[1], direction[0]])
    return length, direction, inward, math.atan2(inward[1], inward[0]) - math.pi / 2


def add_object(layout: Layout, kind: str, parts, x, y, yaw, half, top, movable: bool,
         z_base: float = 0.0) -> SceneObject | None:
    """Add an object named ``{kind}_{n}``, unless its footprint does not fit."""
    obj = SceneObject(f"{kind}_{len(layout.objects) + 1}", kind, tuple(parts), float(x),
                      float(y), float(z_base), float(yaw), (float(half[0]), float(half[1])),
                      float(top), movable)
    if obj.has_footprint and not fits(layout, obj):
        return None
    layout.objects.append(obj)
    return obj


def wall_piece(rng: np.random.Generator, textures: TextureSet) -> WallPiece:
    """A random piece of furniture to stand against a wall: kind, parts, width, depth,
    height."""
    kind = str(rng.choice(["cabinet", "shelf", "table", "sofa", "cabinet", "shelf"]))
    if kind == "shelf":
        w, d, h = rng.uniform(0.6, 1.6), rng.uniform(0.25, 0.4), rng.uniform(1.0, 2.1)
        parts = furniture.shelf(rng, textures, w, d, h)
    elif kind == "table":
        w, d, h = rng.uniform(0.8, 1.8), rng.uniform(0.5, 0.8), rng.uniform(0.7, 0.78)
        parts = furniture.table(rng, textures, w, d, h)
        parts += furniture.clutter_on_top(rng, textures, w, d, h, int(rng.integers(0, 5)))
    elif kind == "sofa":
        w, d, h = rng.uniform(1.4, 2.2), rng.uniform(0.7, 0.95), rng.uniform(0.7, 0.9)
        parts = furniture.sofa(rng, textures, w, d, h)
    else:
        w, d, h = rng.uniform(0.5, 1.8), rng.uniform(0.35, 0.7), rng.uniform(0.5, 1.3)
        parts = furniture.cabinet(rng, textures, w, d, h)
        parts += furniture.clutter_on_top(rng, textures, w, d, h, int(rng.integers(0, 4)))
    return kind, parts, w, d, h


def add_wall_furniture(rng, textures, layout: Layout, wall_spans: WallSpans,
                       piece: Callable[[], WallPiece] | None = None) -> None:
    """1-3 pieces against each wall (fewer where they do not fit); ``piece`` makes each
    (default: a new :func:`wall_piece`)."""
    for wall_index, (a, b) in enumerate(layout.room.walls()):
        length, direction, inward, yaw = wall_frame(a, b)
        for _ in range(int(rng.integers(1, 4))):
            kind, parts, w, d, h = piece() if piece is not None else wall_piece(rng, textures)
            if length < w + 0.2:
                continue
            t = rng.uniform(w / 2 + 0.05, length - w / 2 - 0.05)
            centre = a + direction * t + inward * (d / 2 + 0.02)
            if add_object(layout, kind, parts, centre[0], centre[1], yaw, (w / 2, d / 2), h,
                    False) is not None:
                wall_spans[wall_index].append((t - w / 2, t + w / 2, h))


def _add_door(rng, textures, layout: Layout, wall_spans: WallSpans) -> None:
    """A door on one wall, where no furniture stands."""
    walls = layout.room.walls()
    door_wall = int(rng.integers(len(walls)))
    a, b = walls[door_wall]
    length, direction, inward, yaw = wall_frame(a, b)
    if length <= 1.4:
        return
    t = rng.uniform(0.6, length - 0.6)
    if any(t0 - 0.5 < t < t1 + 0.5 for t0, t1, _ in wall_spans[door_wall]):
        return
    centre = a + direction * t + inward * 0.02
    door = random_material(rng, textures, "furniture")
    add_object(layout, "door", [Part("box", (0, 0, 1.03), (0.9, 0.04, 2.06), door)], centre[0],
         centre[1], yaw, (0, 0), 2.06, False)
    wall_spans[door_wall].append((t - 0.5, t + 0.5, layout.room.height))


def add_posters(rng, textures: TextureSet, layout: Layout, wall_spans: WallSpans,
                tries: int | None = None) -> None:
    """Posters and pictures on walls, above any furniture: ``tries`` (default 3-9) random
    spots, those that are free taken."""
    room = layout.room
    walls = room.walls()
    for _ in range(int(rng.integers(3, 10)) if tries is None else tries):
        wall_index = int(rng.integers(len(walls)))
        a, b = walls[wall_index]
        length, direction, inward, yaw = wall_frame(a, b)
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
        centre = a + direction * t + inward * 0.006
        layer = textures.poster(w / h)
        material = Material(layer, textures.is_plain(layer), (1.0, 1.0, 1.0),
                            float(rng.uniform(0.0, 0.3)), 32.0, 0.0)
        add_object(layout, "poster", [Part("quad", (0, 0, bottom + h / 2), (w, 0, h), material)],
             centre[0], centre[1], yaw, (0, 0), bottom + h, False)
        wall_spans[wall_index].append((t - w / 2, t + w / 2, room.height))


def add_rug(rng, textures, layout: Layout) -> None:
    """Often a rug, if it lies inside the room."""
    room = layout.room
    if rng.random() >= 0.6:
        return
    lo, hi = room.bounds
    w, d = rng.uniform(1.0, 2.5), rng.uniform(0.8, 2.0)
    x, y = rng.uniform(lo, hi)
    rug = random_material(rng, textures, "rug", repeats=(0.5, 1.5))
    if room.contains(np.array([[x - w / 2, y - d / 2], [x + w / 2, y + d / 2]]), 0.1).all():
        add_object(layout, "rug", [Part("quad", (0, 0, 0.004), (w, d, 0), rug)], x, y, 0.0, (0, 0),
             0.0, False)


def add_skirting(rng, textures, layout: Layout) -> None:
    """A skirting board along every wall."""
    skirting = random_material(rng, textures, "furniture", repeats=(1.0, 3.0))
    height = rng.uniform(0.05, 0.12)
    for a, b in layout.room.walls():
        length, _, inward, yaw = wall_frame(a, b)
        centre = (a + b) / 2 + inward * 0.008
        board = Part("box", (0, 0, height / 2), (length - 0.001, 0.015, height), skirting)
        add_object(layout, "skirting", [board], centre[0], centre[1], yaw, (0, 0), height, False)


def free_standing_piece(rng, textures, kind: str, room_height: float) -> FreePiece:
    """A new free-standing ``kind`` (table, stool, column, crate or clutter)."""
    if kind == "table":
        w, d, h = rng.uniform(0.7, 1.6), rng.uniform(0.6, 1.0), rng.uniform(0.45, 0.78)
        parts = furniture.table(rng, textures, w, d, h)
        parts += furniture.clutter_on_top(rng, textures, w, d, h, int(rng.integers(0, 5)))
        return parts, (w / 2, d / 2), h, True
    if kind in ("stool", "column"):
        r = rng.uniform(0.15, 0.3) if kind == "stool" else rng.uniform(0.15, 0.35)
        h = rng.uniform(0.4, 0.8) if kind == "stool" else room_height
        return furniture.cylinder_object(rng, textures, r, h), (r, r), h, kind == "stool"
    if kind == "crate":
        w, d, h = rng.uniform(0.3, 0.8), rng.uniform(0.3, 0.8), rng.uniform(0.3, 0.9)
    else:
        w, d, h = rng.uniform(0.1, 0.45), rng.uniform(0.1, 0.45), rng.uniform(0.08, 0.45)
    material = random_material(rng, textures, "clutter" if kind == "clutter" else "furniture",
                               repeats=(0.8, 3.0))
    return [Part("box", (0, 0, h / 2), (w, d, h), material)], (w / 2, d / 2), h, True


#: Kinds of free-standing objects, drawn with equal chances (clutter twice).
FREE_STANDING_KINDS = ["table", "stool", "crate", "column", "clutter", "clutter"]


def add_free_standing(rng, textures, layout: Layout,
                      piece: Callable[[str], FreePiece] | None = None) -> None:
    """3-8 tables, stools, columns, crates and floor clutter; all but columns movable.
    ``piece(kind)`` makes each (default: a new :func:`free_standing_piece`)."""
    room = layout.room
    lo, hi = room.bounds
    for _ in range(int(rng.integers(3, 9))):
        kind = str(rng.choice(FREE_STANDING_KINDS))
        x, y = rng.uniform(lo, hi)
        yaw = rng.uniform(0, np.pi)
        if kind in ("stool", "column"):
            yaw = 0.0
        made = piece(kind) if piece is not None else free_standing_piece(rng, textures, kind,
                                                                           room.height)
        parts, half, top, movable = made
        add_object(layout, kind, parts, x, y, yaw, half, top, movable)
